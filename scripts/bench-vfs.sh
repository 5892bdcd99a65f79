#!/usr/bin/env bash
# The VFS benchmark of issue 3 on Azurite: `bcv bench vfs` (release) against a fresh Azurite container started by
# scripts/servers.sh. Figures and ratios come from one run (plain SQLite on a local copy is the baseline).
# Extra arguments go to `bcv bench vfs` (e.g. --rows 50000, --json). Run from anywhere; needs no stdin.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"
cargo build -q --release -p bcv-cli
source "$BCV_ROOT/scripts/servers.sh"
bcv_start_azurite
"$CARGO_TARGET_DIR/release/bcv" bench vfs --url "$BCV_TEST_AZURE_VFS_URL" "$@"
bcv_stop_servers
