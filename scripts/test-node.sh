#!/usr/bin/env bash
# Builds the Node binding (bindings/node) and runs its tests. Idempotent; run from anywhere.
# Respects CARGO_TARGET_DIR. Builds in release (the timing scenarios, T15 among them, measure the real
# thing); BCV_NODE_RELEASE=0 gives a faster debug build. Starts Azurite (scripts/servers.sh) for the VFS test,
# builds the Proxy-Wasm test plugin (scripts/build-proxy-plugins.sh), then runs the tests and every example
# in examples/node. Exits non-zero on failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/bindings/node"

# --ignore-scripts: the package's own `install` hook would build the addon; it is built explicitly below.
if [ -f package-lock.json ]; then
  # npm 11 on Node 20 leaves the Node>=22-only optional platform packages of @napi-rs/lzma (pulled in by
  # @napi-rs/cli) out of the lockfile and then refuses it in `npm ci`; `npm install` honours the same
  # lockfile, so fall back to it in that case.
  if ! npm ci --no-audit --no-fund --ignore-scripts; then
    echo "test-node.sh: npm ci refused the lockfile; installing from it with npm install" >&2
    npm install --no-audit --no-fund --ignore-scripts
  fi
else
  npm install --no-audit --no-fund --ignore-scripts
fi

build_args=(napi build --platform)
if [ "${BCV_NODE_RELEASE:-1}" = "1" ]; then
  build_args+=(--release)
fi
npx --no-install "${build_args[@]}"

# Azurite, for the VFS test against a real object store (__test__/vfs.test.mjs reads BCV_TEST_AZURE_VFS_URL).
# Started here unless an outer script already did; stopped on exit by servers.sh's trap.
if [ -z "${BCV_TEST_AZURE_VFS_URL:-}" ]; then
  source "$root/scripts/servers.sh"
  bcv_start_azurite
  export BCV_REQUIRE_SERVERS=1
fi

# The Proxy-Wasm test plugin (tests/proxy-plugins/testkit, built from source for wasm32-wasip1):
# __test__/proxy.test.mjs reads its path from BCV_TEST_PROXY_PLUGIN, as the C suite does.
# examples/node/proxy-gateway.mjs runs the example filter (examples/proxy-plugin) from the same build.
plugins="$("$root/scripts/build-proxy-plugins.sh")"
export BCV_TEST_PROXY_PLUGIN="${BCV_TEST_PROXY_PLUGIN:-$plugins/testkit.wasm}"
export BCV_PROXY_EXAMPLE_PLUGIN="${BCV_PROXY_EXAMPLE_PLUGIN:-$plugins/edge_filter.wasm}"

npm test

# The examples, each runnable on its own.
for example in "$root"/examples/node/*.mjs; do
  echo "==> node ${example#"$root"/}"
  node "$example"
done
