#!/usr/bin/env bash
# Builds kube-apiserver and etcd (pinned versions) from the Go module proxy into a
# cache directory keyed by version, and prints that directory on stdout (progress goes
# to stderr). A second run reuses the cache; concurrent runs wait for one build.
# Cold, this takes about 6 minutes on a quiet 2-core machine (kube-apiserver ~5 min,
# etcd ~1 min), much longer while other builds share the CPU. On failure it exits
# non-zero with a message on stderr saying which step failed.
#
#   scripts/kube-install.sh            -> prints e.g. ~/.cache/safeconduct/kube/v1.37.2
#
# Environment: KUBE_VERSION (default v1.37.2), ETCD_VERSION (default v3.7.4),
# SAFECONDUCT_CACHE (default ~/.cache/safeconduct). internal/testkube runs this script
# when SAFECONDUCT_KUBE_DIR is unset.
#
# Neither is a dependency of safeconduct: each is built in its own scratch module in
# the cache directory, so the project's go.mod stays free of them.
#
# k8s.io/kubernetes replaces its ~30 staging modules (k8s.io/api, k8s.io/client-go...)
# with local paths and requires them at v0.0.0, which only works inside its own tree.
# A consuming module therefore requires each of them at the matching v0.N.M and adds
# `replace k8s.io/X => k8s.io/X v0.N.M` for each (else the build asks the proxy for
# v0.0.0 and is refused). sample-cli-plugin and sample-controller appear only in the
# replace block, are refused by the proxy, and are not needed. go.sum is seeded from
# the module's own go.sum (the module zip is itself verified against the checksum
# database). Versions are stamped with the same ldflags as the upstream build.
set -euo pipefail
kube_version=${KUBE_VERSION:-v1.37.2}
etcd_version=${ETCD_VERSION:-v3.7.4}
cache=${SAFECONDUCT_CACHE:-${HOME:?HOME is not set}/.cache/safeconduct}/kube/$kube_version

say() { echo "kube-install.sh: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
cached() { [ -x "$cache/kube-apiserver" ] && [ -x "$cache/etcd" ]; }

if cached; then
  echo "$cache"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH (kube-apiserver $kube_version is built from source)"
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$cache" || die "cannot create $cache"

if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.lock"
  if ! flock -n 9; then
    say "another kube-install.sh is building into $cache; waiting (up to 40 minutes)"
    flock -w 2400 9 || die "timed out waiting for the other build into $cache"
  fi
  if cached; then
    echo "$cache"
    exit 0
  fi
fi

start=$SECONDS
# staging version: v1.37.2 -> v0.37.2
staging=v0.${kube_version#v1.}
major=1
minor=${kube_version#v1.}
minor=${minor%%.*}

build_apiserver() {
  local scratch="$cache/build-apiserver"
  rm -rf "$scratch" && mkdir -p "$scratch" && cd "$scratch" || die "cannot prepare $scratch"
  say "downloading k8s.io/kubernetes@$kube_version"
  go mod download -json "k8s.io/kubernetes@$kube_version" >dl.json ||
    die "go mod download k8s.io/kubernetes@$kube_version (is the Go module proxy reachable? $(tr -d '\n' <dl.json | head -c 400))"
  local dir
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' dl.json)
  [ -n "$dir" ] && [ -f "$dir/go.mod" ] || die "go mod download gave no module directory with a go.mod"
  local gover
  gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$dir/go.mod" | head -1)
  # The staging modules: required at v0.0.0 in k8s.io/kubernetes's go.mod.
  local mods
  mods=$(sed -n 's/^[[:space:]]*\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$dir/go.mod" | sort -u)
  [ -n "$mods" ] || die "found no k8s.io/* v0.0.0 requirements in $dir/go.mod"
  {
    echo "module kube-apiserver-build"
    echo
    echo "go $gover"
    echo
    echo "require k8s.io/kubernetes $kube_version"
    for m in $mods; do echo "require $m $staging"; done
    for m in $mods; do echo "replace $m => $m $staging"; done
  } >go.mod
  cp "$dir/go.sum" go.sum
  cat >main.go <<'EOF'
package main

import _ "k8s.io/kubernetes/cmd/kube-apiserver/app"

func main() {}
EOF
  say "resolving kube-apiserver dependencies ($(echo "$mods" | wc -l) staging modules at $staging)"
  go mod tidy >&2 || die "go mod tidy in $scratch"
  rm -f main.go
  local ld=""
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld="$ld -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  say "building kube-apiserver $kube_version (about 5 minutes on a quiet 2-core machine; $((SECONDS - start))s so far)"
  local tmp="$cache/kube-apiserver.tmp.$$"
  go build -trimpath -ldflags "-s -w $ld" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2 || die "go build kube-apiserver"
  "$tmp" --version >/dev/null 2>&1 || die "the built kube-apiserver does not run ($tmp --version failed)"
  mv -f "$tmp" "$cache/kube-apiserver" || die "mv $tmp"
  cd "$cache" && rm -rf "$scratch"
}

build_etcd() {
  local scratch="$cache/build-etcd"
  rm -rf "$scratch" && mkdir -p "$scratch" && cd "$scratch" || die "cannot prepare $scratch"
  say "building etcd $etcd_version (about 1 minute; $((SECONDS - start))s so far)"
  go mod init etcd-build >/dev/null 2>&1 || die "go mod init in $scratch"
  go mod download -json "go.etcd.io/etcd/server/v3@$etcd_version" >dl.json ||
    die "go mod download go.etcd.io/etcd/server/v3@$etcd_version: $(tr -d '\n' <dl.json | head -c 400)"
  local dir
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' dl.json)
  [ -n "$dir" ] && [ -f "$dir/go.sum" ] && cp "$dir/go.sum" go.sum
  go get "go.etcd.io/etcd/server/v3@$etcd_version" >&2 || die "go get go.etcd.io/etcd/server/v3@$etcd_version"
  local tmp="$cache/etcd.tmp.$$"
  go build -trimpath -ldflags "-s -w" -o "$tmp" go.etcd.io/etcd/server/v3 >&2 || die "go build etcd"
  "$tmp" --version >/dev/null 2>&1 || die "the built etcd does not run ($tmp --version failed)"
  mv -f "$tmp" "$cache/etcd" || die "mv $tmp"
  cd "$cache" && rm -rf "$scratch"
}

[ -x "$cache/etcd" ] || build_etcd
[ -x "$cache/kube-apiserver" ] || build_apiserver
cached || die "binaries missing from $cache after the build"
say "done in $((SECONDS - start))s"
echo "$cache"
