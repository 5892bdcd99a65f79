#!/usr/bin/env bash
# Runs a cargo-fuzz target of fuzz/ for SECONDS (default 60) with ASan:
#   scripts/fuzz.sh manifest [SECONDS]         the manifest decoder (fuzz_targets/manifest.rs)
#   scripts/fuzz.sh proxy_hostcalls [SECONDS]  the Proxy-Wasm host functions with arbitrary arguments, through
#                                              the fuzz_guest test module (built from source first)
# Runs on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags cargo-fuzz passes.
# New interesting inputs land in fuzz/corpus/TARGET/ (git-ignored except the seeds); crashes in fuzz/artifacts/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"

target="${1:?usage: scripts/fuzz.sh manifest|proxy_hostcalls [SECONDS]}"
seconds="${2:-60}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ "$target" = proxy_hostcalls ]; then
    step "building the fuzz guest (tests/proxy-plugins/fuzz_guest)"
    BCV_FUZZ_GUEST="$(scripts/build-proxy-plugins.sh)/fuzz_guest.wasm"
    export BCV_FUZZ_GUEST
fi

step "fuzzing $target for ${seconds}s"
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds"
