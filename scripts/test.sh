#!/usr/bin/env bash
# The test command: start the services the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-features "$@" 2>&1 | tee "$log"
# One total over every test binary (unit, integration, doc), as the last line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
