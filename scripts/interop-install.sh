#!/usr/bin/env bash
# Installs the third-party clients the interop tests drive (pinned by their
# package-lock.json): npm ci in each interop/*/ directory that has a lockfile.
# Node.js and npm must be on the machine (Debian: apt-get install nodejs npm).
set -euo pipefail
cd "$(dirname "$0")/.."
for lock in interop/*/package-lock.json; do
  [ -e "$lock" ] || continue
  dir=$(dirname "$lock")
  echo "npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts)
done
