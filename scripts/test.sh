#!/usr/bin/env bash
# The test command: start the services the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo test --all-features "$@"
