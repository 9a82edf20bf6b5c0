#!/usr/bin/env bash
# A few seconds of every fuzz target on its committed corpus: proof that the targets build and
# that no seed crashes, not a campaign (README, Fuzzing). Installs cargo-fuzz if missing.
#   scripts/fuzz-smoke.sh            FUZZ_SECONDS=5 by default, per target
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'fuzz-smoke: %s\n' "$*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q '0\.13\.2'; then
  log "installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi

# cargo-fuzz passes nightly flags (-Z); the stable toolchain takes them with this.
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-5}
# Unoptimized, no sanitizer, no broker clients: the build is most of the smoke's time (a
# third of an optimized build's), and a panic or an assertion is what a few
# seconds can find. The campaign runs optimized with AddressSanitizer.
build=(--sanitizer none --dev)
cargo fuzz build "${build[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
targets=$(cargo fuzz list)
for target in $targets; do
  log "$target for ${seconds}s"
  # New inputs go to the scratch folder: the committed corpus is only read.
  mkdir -p "$scratch/$target"
  cargo fuzz run "${build[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"$scratch/$target.log" || { cat "$scratch/$target.log" >&2; log "$target FAILED"; exit 1; }
  grep -h 'stat::number_of_executed_units' "$scratch/$target.log" | sed "s/^/fuzz-smoke: $target /" >&2
done
log "every target ran ${seconds}s without a finding"
