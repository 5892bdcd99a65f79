#!/usr/bin/env bash
# The Rust workspace: formatting, lints, and every Rust test (core scenarios, ffi header check).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"

step "Rust: rustfmt"
cargo fmt --all -- --check

step "Rust: clippy"
cargo clippy -q -p bcv-core -p bcv-ffi -p bcv-cli --all-targets -- -D warnings

step "Rust: the wasm32-wasip1 target (the Proxy-Wasm tests compile their plugins from source)"
rustup target add wasm32-wasip1

step "Rust: tests (with Azurite and moto started by scripts/servers.sh)"
source "$BCV_ROOT/scripts/servers.sh"
bcv_start_azurite
bcv_start_moto
export BCV_REQUIRE_SERVERS=1
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run -p bcv-core -p bcv-ffi -p bcv-cli --no-fail-fast
else
    cargo test -p bcv-core -p bcv-ffi -p bcv-cli --no-fail-fast
fi
bcv_stop_servers

step "Rust: T35 soak, a million cycles, in release"
cargo nextest run --release -p bcv-core --test soak --no-capture

step "Rust: quickstart (the README's main command) in release"
cargo run -q --release -p bcv-cli -- quickstart
cargo run -q --release -p bcv-cli -- quickstart-streams

step "Rust: bcv bench vfs on Azurite (checks every result against plain SQLite; prints the figures)"
bash "$BCV_ROOT/scripts/bench-vfs.sh"

step "Rust: Proxy-Wasm benchmark (bcv vs plain wasmtime, pooled instantiation, memory per instance)"
bash "$BCV_ROOT/scripts/bench-proxy.sh"
