#!/usr/bin/env bash
# The Proxy-Wasm host benchmark: builds the test plugins (wasm32-wasip1) and prints bcv's request lifecycle
# against plain wasmtime, pooled instantiation and memory per instance, measured in one run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"
rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/proxy-plugins" \
    cargo build -q --release --target wasm32-wasip1 --manifest-path tests/proxy-plugins/Cargo.toml
export BCV_BENCH_PLUGIN="$CARGO_TARGET_DIR/proxy-plugins/wasm32-wasip1/release/testkit.wasm"
cargo bench -q -p bcv-core --bench proxy
