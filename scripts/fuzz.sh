#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time each: scripts/fuzz.sh [DURATION]
#
# A target fails the run when the fuzzer finds something: a failing input (written
# to testdata/fuzz), a panic, a failed check. Go 1.26's fuzzing coordinator can
# also end a duration-bounded run with a bare "context deadline exceeded" and no
# input (a race at the -fuzztime deadline, go.dev/issue/75804, fixed in Go 1.27);
# such a run found nothing, so the target is run again, and only a real finding
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    for attempt in 1 2 3; do
      echo "fuzz $pkg $target ($dur)"
      if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$dur" -fuzzminimizetime 2s "$pkg" 2>&1); then
        break
      fi
      if [ "$attempt" -lt 3 ] && grep -q '^    context deadline exceeded$' <<<"$out" \
        && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' <<<"$out"; then
        echo "  the fuzzing coordinator's deadline race (go.dev/issue/75804), no input found: running it again"
        continue
      fi
      printf '%s\n' "$out"
      exit 1
    done
  done
done
