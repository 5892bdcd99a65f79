#!/usr/bin/env bash
# The C ABI: header drift, the LIFETIMES scenarios in C, the Proxy-Wasm host in C with a plugin built from
# source, the block-cache VFS and container tools in C against the system SQLite and Azurite (each plain,
# under valgrind and with AddressSanitizer), and the C examples built with -Wall -Wextra -Werror through
# pkg-config against the static library.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"
out="$CARGO_TARGET_DIR/c-tests"

# Tools this suite needs; a fresh machine may lack them.
missing=()
for tool in pkg-config valgrind gcc; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
# libbcv.a carries no SQLite of its own: programs link theirs; the tests link the system's.
[ -e /usr/include/sqlite3.h ] || missing+=(libsqlite3-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    step "C: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$out"

step "C: include/bcv.h matches what cbindgen generates"
cargo test -q -p bcv-ffi --test header

step "C: build libbcv (debug for the tests, release for the example)"
pc_debug=$(scripts/build-c.sh debug)
pc_release=$(scripts/build-c.sh release)

cflags="-std=c11 -Wall -Wextra -Werror -g"
libs_debug=$(PKG_CONFIG_PATH="$pc_debug" pkg-config --libs --static bcv | sed 's/-lbcv/-l:libbcv.a/')
inc=$(PKG_CONFIG_PATH="$pc_debug" pkg-config --cflags bcv)

step "C: scenarios (T35 soak: a million cycles)"
gcc $cflags $inc tests/c/test_lifetimes.c $libs_debug -o "$out/test_lifetimes"
BCV_SOAK_CYCLES=1000000 "$out/test_lifetimes"

step "C: scenarios under valgrind (soak shortened to 20,000 cycles)"
BCV_SOAK_CYCLES=20000 valgrind -q --leak-check=full --error-exitcode=1 --suppressions=tests/c/valgrind.supp "$out/test_lifetimes"

step "C: scenarios with AddressSanitizer"
gcc $cflags -fsanitize=address -fno-omit-frame-pointer $inc tests/c/test_lifetimes.c $libs_debug -o "$out/test_lifetimes_asan"
BCV_SOAK_CYCLES=100000 ASAN_OPTIONS=detect_leaks=1 "$out/test_lifetimes_asan"

step "C: Proxy-Wasm test plugins (wasm32-wasip1, from source)"
export BCV_TEST_PROXY_PLUGIN="$(scripts/build-proxy-plugins.sh)/testkit.wasm"

step "C: Proxy-Wasm host"
gcc $cflags $inc tests/c/test_proxy.c $libs_debug -o "$out/test_proxy"
"$out/test_proxy"

step "C: Proxy-Wasm host under valgrind"
# The pooling allocator reserves more address space than valgrind's memory layout allows ("failed to create
# memory pool mapping"), so this run allocates instances on demand; wasm code runs many times slower under
# valgrind, so each callback gets a minute of CPU instead of a second. Compiling the plugin under valgrind
# takes about 2.5 minutes: its module cache is kept between runs (valgrind's CPU reports other features than
# the real one, so it has cache entries of its own).
BCV_TEST_PROXY_CACHE_DIR="$out/proxy-module-cache-valgrind" BCV_TEST_PROXY_POOLING=0 \
    BCV_TEST_PROXY_DEADLINE_MS=60000 \
    valgrind -q --leak-check=full --error-exitcode=1 --num-callers=40 --suppressions=tests/c/valgrind.supp "$out/test_proxy"

step "C: Proxy-Wasm host with AddressSanitizer"
gcc $cflags -fsanitize=address -fno-omit-frame-pointer $inc tests/c/test_proxy.c $libs_debug -o "$out/test_proxy_asan"
ASAN_OPTIONS=detect_leaks=1 "$out/test_proxy_asan"

# The VFS test tries the credentials callback against Azurite (scripts/servers.sh installs and starts it,
# and stops it on exit) unless a caller already provides BCV_TEST_AZURE_URL.
if [ -z "${BCV_TEST_AZURE_URL:-}" ]; then
    source "$BCV_ROOT/scripts/servers.sh"
    bcv_start_azurite
fi
export BCV_REQUIRE_SERVERS=1

step "C: block-cache VFS and container tools with the system SQLite"
gcc $cflags $inc tests/c/test_vfs.c $libs_debug -o "$out/test_vfs"
"$out/test_vfs"

step "C: VFS under valgrind"
# --num-callers: the suppressions for bcv's process-wide runtime threads match a frame deep in the stack.
valgrind -q --leak-check=full --error-exitcode=1 --num-callers=40 --suppressions=tests/c/valgrind.supp "$out/test_vfs"

step "C: VFS with AddressSanitizer"
gcc $cflags -fsanitize=address -fno-omit-frame-pointer $inc tests/c/test_vfs.c $libs_debug -o "$out/test_vfs_asan"
ASAN_OPTIONS=detect_leaks=1 "$out/test_vfs_asan"

step "C: examples/c/streams.c against libbcv.a via pkg-config"
libs_release=$(PKG_CONFIG_PATH="$pc_release" pkg-config --libs --static bcv | sed 's/-lbcv/-l:libbcv.a/')
gcc $cflags $(PKG_CONFIG_PATH="$pc_release" pkg-config --cflags bcv) examples/c/streams.c $libs_release -o "$out/streams"
"$out/streams"

step "C: examples/c/vfs.c against libbcv.a and the system SQLite via pkg-config"
gcc $cflags $(PKG_CONFIG_PATH="$pc_release" pkg-config --cflags bcv) examples/c/vfs.c $libs_release -o "$out/vfs"
"$out/vfs"
