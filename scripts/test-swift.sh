#!/usr/bin/env bash
# The Swift package (bindings/swift) and the Swift examples (examples/swift/*), in Swift 6 language mode.
#
# 1. Provisions (or reuses) the Debian trixie chroot with Swift 6.0 (scripts/swift-chroot.sh).
# 2. Builds libbcv_all.a (crate bcv-bundle: the C ABI and the UniFFI surface in one archive, BINDINGS P7)
#    in the dev profile, and the uniffi-bindgen binary (dev profile, P6).
# 3. Generates the Swift bindings from that library into bindings/swift/Sources/{BcvUniffi,bcv_uniffiFFI}
#    (not committed; only rewritten when their content changed, so SwiftPM's incremental build holds).
# 4. Builds the Proxy-Wasm test plugins from source (scripts/build-proxy-plugins.sh); the Proxy tests find
#    them through BCV_PROXY_PLUGINS (a path under CARGO_TARGET_DIR, which the chroot sees as /target).
# 5. Copies only libbcv_all.a into a dedicated link directory (P8) and runs, inside the chroot,
#    `swift test` for the package and `swift run` for the examples, with `-Xlinker -L<that dir>`.
# Exits non-zero when anything fails, when no test ran, or when a test was skipped.
# Needs root (chroot). Respects CARGO_TARGET_DIR (default: $BCV_CACHE/target); SwiftPM's build
# directories live there too, outside the repository.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$BCV_ROOT/scripts/swift-chroot.sh"
cd "$BCV_ROOT"
start=$(date +%s)

step "Swift: chroot with Swift 6 (debian trixie)"
SWIFT_CHROOT_ROOT=$(swift_chroot_provision)
export SWIFT_CHROOT_ROOT
echo "$SWIFT_CHROOT_ROOT"

step "Swift: build libbcv_all.a and uniffi-bindgen (dev profile)"
cargo build -q -p bcv-bundle
cargo build -q -p bcv-uniffi --features cli --bin uniffi-bindgen
lib="$CARGO_TARGET_DIR/debug/libbcv_all.a"

step "Swift: generate the bindings from libbcv_all.a"
gen="$CARGO_TARGET_DIR/uniffi-swift"
rm -rf "$gen"
"$CARGO_TARGET_DIR/debug/uniffi-bindgen" generate --library "$lib" --language swift --no-format --out-dir "$gen"
# Copies $1 to $2 unless $2 already has the same content.
install_if_changed() {
    if ! cmp -s "$1" "$2"; then
        cp "$1" "$2"
        echo "updated ${2#"$BCV_ROOT"/}"
    fi
}
pkg="$BCV_ROOT/bindings/swift"
install_if_changed "$gen/bcv_uniffi.swift" "$pkg/Sources/BcvUniffi/bcv_uniffi.swift"
install_if_changed "$gen/bcv_uniffiFFI.h" "$pkg/Sources/bcv_uniffiFFI/bcv_uniffiFFI.h"
# SwiftPM's systemLibrary target wants the module map under this name (P10).
install_if_changed "$gen/bcv_uniffiFFI.modulemap" "$pkg/Sources/bcv_uniffiFFI/module.modulemap"

step "Swift: Proxy-Wasm test plugins (scripts/build-proxy-plugins.sh)"
plugins=$(bash "$BCV_ROOT/scripts/build-proxy-plugins.sh")
if [ ! -f "$plugins/testkit.wasm" ]; then
    echo "no testkit.wasm in $plugins" >&2
    exit 1
fi
case "$plugins" in
    "$CARGO_TARGET_DIR"/*) ;;
    *)
        # Not under the target dir the chroot sees: copy the modules there.
        mkdir -p "$CARGO_TARGET_DIR/swift-proxy-plugins"
        cp "$plugins"/*.wasm "$CARGO_TARGET_DIR/swift-proxy-plugins/"
        plugins="$CARGO_TARGET_DIR/swift-proxy-plugins"
        ;;
esac
chroot_plugins="/target/${plugins#"$CARGO_TARGET_DIR"/}"
echo "$plugins (in the chroot: $chroot_plugins)"

step "Swift: link directory with only the static library (P8)"
linkdir="$CARGO_TARGET_DIR/swift-lib"
mkdir -p "$linkdir"
find "$linkdir" -mindepth 1 ! -name libbcv_all.a -delete
install_if_changed "$lib" "$linkdir/libbcv_all.a"

# SwiftPM does not track a library passed with -L: drop the linked products so they are relinked against
# this libbcv_all.a (compiled Swift objects stay cached; only the link is redone).
for scratch in "$CARGO_TARGET_DIR/swift-build" "$CARGO_TARGET_DIR/swift-example-build" \
    "$CARGO_TARGET_DIR/swift-example-vfs-build" "$CARGO_TARGET_DIR/swift-example-proxy-build"; do
    [ -d "$scratch" ] || continue
    find "$scratch" -path '*/debug/*' \( -name '*.xctest' -o -name 'streams' -o -name 'vfs' -o -name 'proxy' \) \
        -prune -exec rm -rf {} +
done

# Paths as the chroot sees them: the repository at /ws, CARGO_TARGET_DIR at /target.
link_flags="-Xlinker -L/target/swift-lib"

step "Swift: swift test (bindings/swift)"
log="$CARGO_TARGET_DIR/swift-test.log"
set +e
in_chroot "cd /ws/bindings/swift && BCV_PROXY_PLUGINS='$chroot_plugins' swift test --scratch-path /target/swift-build $link_flags" </dev/null 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "swift test failed (exit $status)" >&2
    exit "$status"
fi
expected=$(grep -ho 'func test[A-Za-z0-9_]*(' "$pkg"/Tests/BCVTests/*.swift | sort -u | wc -l)
summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with" "$log" | tail -1)
executed=$(echo "$summary" | sed -nE 's/^[[:space:]]*Executed ([0-9]+) tests?.*/\1/p')
if [ -z "$executed" ] || [ "$executed" -ne "$expected" ]; then
    echo "expected $expected XCTest tests to run, got: ${summary:-no summary}" >&2
    exit 1
fi
if grep -qiE "tests? skipped|skipped [0-9]+ tests?" "$log"; then
    echo "some tests were skipped; a skipped test does not count as passed" >&2
    exit 1
fi
echo "swift: $executed of $expected tests executed, 0 failures, 0 skipped"

step "Swift: examples/swift/streams (swift run)"
in_chroot "cd /ws/examples/swift/streams && swift run --scratch-path /target/swift-example-build $link_flags streams" </dev/null

step "Swift: examples/swift/vfs (swift run)"
in_chroot "cd /ws/examples/swift/vfs && swift run --scratch-path /target/swift-example-vfs-build $link_flags vfs" </dev/null

step "Swift: examples/swift/proxy (swift run)"
in_chroot "cd /ws/examples/swift/proxy && swift run --scratch-path /target/swift-example-proxy-build $link_flags proxy '$chroot_plugins'" </dev/null

echo "swift: done in $(( $(date +%s) - start )) s"
