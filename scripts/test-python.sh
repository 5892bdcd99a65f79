#!/usr/bin/env bash
# Builds and tests the Python package (bindings/python): the LIFETIMES.md §7 scenarios tagged Py and the
# block-cache VFS (tests/test_vfs.py), the Proxy-Wasm host (tests/test_proxy.py, with the test plugin built from
# source), then runs examples/python/vfs.py and examples/python/proxy_gateway.py.
#
# Idempotent. Uses a venv at ${BCV_CACHE:-$HOME/.cache/bcv}/venv-py (created on first use), installs the
# pinned pytest and the package with `pip install ./bindings/python` (maturin, release build; an exported
# CARGO_TARGET_DIR is respected), starts Azurite with scripts/servers.sh (BCV_TEST_AZURE_VFS_URL, and
# BCV_REQUIRE_SERVERS=1 so the Azure test cannot be skipped), then runs pytest under
# `-X dev -W error::ResourceWarning`. Extra arguments go to pytest. Exits non-zero on any failure. Run from
# anywhere; needs no stdin.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${BCV_CACHE:-$HOME/.cache/bcv}"
venv="$cache/venv-py"
python="${PYTHON:-python3}"
pytest_version="9.2.0"

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$cache"
    "$python" -m venv "$venv"
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
"${pip[@]}" install --quiet "pytest==$pytest_version"
# --force-reinstall: the version does not change between builds, but the code does.
"${pip[@]}" install --quiet --force-reinstall --no-deps "$repo/bindings/python"

# The Proxy-Wasm test plugin, built from source (tests/test_proxy.py).
plugins="$("$repo/scripts/build-proxy-plugins.sh")"
export BCV_TEST_PROXY_PLUGIN="$plugins/testkit.wasm"

# Object-store server for the VFS test against Azure (stopped on exit by servers.sh's EXIT trap).
source "$repo/scripts/servers.sh"
bcv_start_azurite
export BCV_REQUIRE_SERVERS=1

cd "$repo/bindings/python"
"$venv/bin/python" -X dev -W error::ResourceWarning -m pytest -p no:cacheprovider -q tests "$@"

step "Python: examples/python/vfs.py"
"$venv/bin/python" -X dev -W error::ResourceWarning "$repo/examples/python/vfs.py"

step "Python: examples/python/proxy_gateway.py (a Proxy-Wasm filter in front of an upstream on 127.0.0.1)"
"$venv/bin/python" -X dev -W error::ResourceWarning "$repo/examples/python/proxy_gateway.py" "$plugins/edge_filter.wasm"
