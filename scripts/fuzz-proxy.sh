#!/usr/bin/env bash
# Fuzzes the Proxy-Wasm host functions (fuzz/fuzz_targets/proxy_hostcalls.rs) for ${1:-60} seconds with
# cargo-fuzz and ASan, through the fuzz_guest test module (built from source by scripts/build-proxy-plugins.sh).
# Runs on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags cargo-fuzz passes.
# New interesting inputs land in fuzz/corpus/proxy_hostcalls/ (git-ignored except the seeds); crashes in
# fuzz/artifacts/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"

seconds="${1:-60}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

step "building the fuzz guest"
BCV_FUZZ_GUEST="$(scripts/build-proxy-plugins.sh)/fuzz_guest.wasm"
export BCV_FUZZ_GUEST

step "fuzzing the Proxy-Wasm host functions for ${seconds}s"
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz proxy_hostcalls -- -max_total_time="$seconds"
