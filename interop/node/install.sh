#!/usr/bin/env bash
# Installs the pinned interop packages (package-lock.json) for the Go test
# TestStatusListNodeInterop. .ci/run calls it before the tests.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts
