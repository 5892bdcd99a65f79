#!/usr/bin/env bash
# Builds the Proxy-Wasm test plugins (tests/proxy-plugins: testkit on the crates.io proxy-wasm SDK, and the raw
# hostile/legacy modules) and the example filter (examples/proxy-plugin: edge_filter) from source for
# wasm32-wasip1 and prints the directory holding the .wasm files.
# Used by the C, Python, Node and Swift suites and the examples (core/tests/support/plugins.rs does the same for
# the Rust tests). The plugins get a target dir of their own, and the host's RUSTFLAGS (sanitizers…) never reach
# the wasm build.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"
rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR="$CARGO_TARGET_DIR/proxy-plugins" \
    cargo build -q --release --target wasm32-wasip1 --manifest-path tests/proxy-plugins/Cargo.toml >&2
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR="$CARGO_TARGET_DIR/proxy-plugins" \
    cargo build -q --release --target wasm32-wasip1 --manifest-path examples/proxy-plugin/Cargo.toml >&2
echo "$CARGO_TARGET_DIR/proxy-plugins/wasm32-wasip1/release"
