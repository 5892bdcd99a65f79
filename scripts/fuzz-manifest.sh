#!/usr/bin/env bash
# Fuzzes the manifest decoder (fuzz/fuzz_targets/manifest.rs) for ${1:-60} seconds with cargo-fuzz and ASan.
# Runs on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags cargo-fuzz passes.
# New interesting inputs land in fuzz/corpus/manifest/ (git-ignored except the seed); crashes in fuzz/artifacts/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"

seconds="${1:-60}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

step "fuzzing manifest decode for ${seconds}s"
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz manifest -- -max_total_time="$seconds"
