#!/usr/bin/env bash
# Builds spire-server and spire-agent (pinned version) from the Go module proxy into a
# cache directory keyed by version, and prints that directory on stdout (progress goes
# to stderr). A second run reuses the cache; concurrent runs wait for one build.
# Building takes several minutes per binary on 2 cores. On failure it exits non-zero
# with a message on stderr saying which step failed.
#
#   scripts/spire-install.sh            -> prints e.g. ~/.cache/safeconduct/spire/v1.13.3
#   scripts/spire-install.sh --cached   -> prints the directory if SPIRE is built there,
#                                          else exits 3 without building anything
#
# While go resolves and builds (minutes, silent by itself) a line on stderr says
# every 30 s that it is still at it and for how long. `make tools` runs this.
#
# Environment: SPIRE_VERSION (default v1.13.3), SAFECONDUCT_CACHE (default
# ~/.cache/safeconduct). internal/testspire runs this script when SAFECONDUCT_SPIRE_DIR
# is unset.
#
# SPIRE is not a library dependency of safeconduct: it is built in a scratch module
# so that the project's go.mod stays free of it. In that scratch module `go get -tool`
# can stop on a checksum-database 404 for one indirect dependency; seeding go.sum from
# SPIRE's own go.sum (inside its module zip, itself verified against the checksum
# database) lets it through with every checksum still verified.
#
# SPIRE's sqlite3 datastore, which internal/testspire uses, needs cgo: a spire-server
# built with CGO_ENABLED=0 starts but refuses that datastore, so this script insists
# on cgo and a C compiler.
set -euo pipefail
version=${SPIRE_VERSION:-v1.13.3}
cache=${SAFECONDUCT_CACHE:-${HOME:?HOME is not set}/.cache/safeconduct}/spire/$version

say() { echo "spire-install.sh: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
cached() { [ -x "$cache/spire-server" ] && [ -x "$cache/spire-agent" ]; }

case "${1:-}" in
  "") ;;
  --cached)
    if cached; then echo "$cache"; exit 0; fi
    say "SPIRE $version is not built in $cache (run scripts/spire-install.sh or make tools)"
    exit 3 ;;
  *) echo "usage: scripts/spire-install.sh [--cached]" >&2; exit 2 ;;
esac

if cached; then
  echo "$cache"
  exit 0
fi

# progress STEP CMD...: runs CMD, saying every 30 s on stderr that STEP goes on.
progress() {
  local step=$1 t0=$SECONDS rc=0
  shift
  ( while sleep 30; do say "$step: still running ($((SECONDS - t0))s)"; done ) &
  local ticker=$!
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$rc"
}

command -v go >/dev/null 2>&1 || die "go is not on PATH (SPIRE $version is built from source)"
export CGO_ENABLED=1 GOWORK=off
cc=$(go env CC)
command -v "${cc%% *}" >/dev/null 2>&1 ||
  die "no C compiler '$cc' for cgo, which SPIRE's sqlite3 datastore needs (Debian: apt-get install gcc)"

mkdir -p "$cache" || die "cannot create $cache"

# One build per cache directory at a time: go test runs packages in parallel, and
# each may run this script.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.lock"
  if ! flock -n 9; then
    say "another spire-install.sh is building into $cache; waiting (up to 25 minutes)"
    flock -w 1500 9 || die "timed out waiting for the other build into $cache"
  fi
  if cached; then
    echo "$cache"
    exit 0
  fi
fi

scratch=$(mktemp -d) || die "mktemp failed"
cleanup() {
  rm -rf "$scratch"
  rm -f "$cache/spire-server.tmp.$$" "$cache/spire-agent.tmp.$$"
}
trap cleanup EXIT
cd "$scratch"
start=$SECONDS

say "building SPIRE $version into $cache (several minutes on a fresh machine)"
out=$(go mod init spire-build 2>&1) || die "go mod init in $scratch: $out"

# Fetch SPIRE's module (verified) and seed go.sum with its own go.sum.
say "downloading github.com/spiffe/spire@$version"
progress "downloading github.com/spiffe/spire@$version" go mod download -json "github.com/spiffe/spire@$version" >dl.json ||
  die "go mod download github.com/spiffe/spire@$version (is the Go module proxy reachable? output: $(tr -d '\n' <dl.json | head -c 400))"
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' dl.json)
[ -n "$dir" ] && [ -f "$dir/go.sum" ] || die "go mod download gave no module directory with a go.sum"
cat "$dir/go.sum" >>go.sum

say "resolving dependencies"
progress "resolving dependencies" go get -tool "github.com/spiffe/spire/cmd/spire-server@$version" "github.com/spiffe/spire/cmd/spire-agent@$version" >&2 ||
  die "go get -tool github.com/spiffe/spire/cmd/...@$version"

for bin in spire-server spire-agent; do
  say "building $bin $version (several minutes; $((SECONDS - start))s so far)"
  tmp="$cache/$bin.tmp.$$"
  progress "building $bin" go build -trimpath -o "$tmp" "github.com/spiffe/spire/cmd/$bin" >&2 || die "go build $bin"
  "$tmp" --version >/dev/null 2>&1 || die "the built $bin does not run ($tmp --version failed)"
  mv -f "$tmp" "$cache/$bin" || die "mv $tmp $cache/$bin"
done
cached || die "binaries missing from $cache after the build"
say "done in $((SECONDS - start))s"
echo "$cache"
