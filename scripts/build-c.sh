#!/usr/bin/env bash
# Builds libbcv (static and shared) in PROFILE (debug|release, default release) and writes a pkg-config
# file next to it: $CARGO_TARGET_DIR/$PROFILE/pkgconfig/bcv.pc. Prints that directory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
profile="${1:-release}"
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build -q -p bcv-ffi "${flag[@]}" >&2
libdir="$CARGO_TARGET_DIR/$profile"
mkdir -p "$libdir/pkgconfig"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$BCV_ROOT/Cargo.toml" | head -1)
sed -e "s|@PREFIX@|$BCV_ROOT|" -e "s|@LIBDIR@|$libdir|" -e "s|@INCLUDEDIR@|$BCV_ROOT/include|" -e "s|@VERSION@|$version|" \
    "$BCV_ROOT/ffi/bcv.pc.in" > "$libdir/pkgconfig/bcv.pc"
echo "$libdir/pkgconfig"
