#!/usr/bin/env bash
# Builds the prerequisites of the tests and lint steps before they run, with
# progress on stderr, so that no test builds them inside its time limit:
#   - SPIRE (spire-server, spire-agent) through scripts/spire-install.sh, cached
#     per version (several minutes on a cold machine, instant after);
#   - kube-apiserver and etcd through scripts/kube-install.sh, cached per version
#     (about 6 minutes on a quiet cold 2-core machine, instant after);
#   - the go tool staticcheck, into the Go build cache.
# It names the system packages the tests use that are missing (redis-server, zsh).
# On stdout it prints the environment to export, for eval:
#
#   eval "$(bash scripts/tools.sh)"      # or: make tools
#
# .ci/run does the same. With CI=true a test that needs SPIRE fails (instead of
# building it) when SAFECONDUCT_SPIRE_DIR is unset and no build is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "tools.sh: $*" >&2; }
start=$SECONDS

say "[1/4] SPIRE (scripts/spire-install.sh: a build takes minutes the first time, then is cached)"
spire=$(bash scripts/spire-install.sh)
say "      SPIRE binaries in $spire"

say "[2/4] kube-apiserver and etcd (scripts/kube-install.sh: a build takes minutes the first time, then is cached)"
kube=$(bash scripts/kube-install.sh)
say "      kube binaries in $kube"

say "[3/4] staticcheck (go tool, built into the Go build cache)"
go tool staticcheck -version >&2

say "[4/4] system packages the tests use"
for pkg in redis-server zsh; do
  if command -v "$pkg" >/dev/null 2>&1; then
    say "      $pkg: $(command -v "$pkg")"
  else
    say "      $pkg: MISSING (Debian: apt-get install $pkg; .ci/run installs it)"
  fi
done

say "done in $((SECONDS - start))s; export the line below (eval \"\$(bash scripts/tools.sh)\" does)"
printf 'export SAFECONDUCT_SPIRE_DIR=%q SAFECONDUCT_KUBE_DIR=%q\n' "$spire" "$kube"
