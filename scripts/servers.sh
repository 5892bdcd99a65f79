#!/usr/bin/env bash
# Object-store servers for tests: Azurite (Azure Blob emulator, from npm) and moto (S3, from PyPI), on loopback.
#
# Sourced:   source scripts/servers.sh; bcv_start_azurite; bcv_start_moto; ...; (stopped on exit)
# Run:       scripts/servers.sh cargo test -p bcv-core --test store_conformance
#            (starts both, runs the command with BCV_TEST_AZURE_URL / BCV_TEST_S3_URL set, stops them)
#
# Installs are cached in $BCV_CACHE (azurite/, moto-venv/), so a second run starts in seconds. Each server gets a
# free port, a fresh data directory and a fresh container or bucket. The servers are stopped by bcv_stop_servers,
# which is installed as the EXIT trap; a caller that sets its own EXIT trap must call bcv_stop_servers from it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BCV_AZURITE_VERSION=3.35.0
BCV_MOTO_VERSION=5.2.5
BCV_SERVER_PIDS=()
BCV_SERVER_DIRS=()

# A TCP port that was free a moment ago on 127.0.0.1.
bcv_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# bcv_wait_port NAME PID PORT LOG: wait (up to 60 s) until PORT accepts connections; fail if PID dies first.
bcv_wait_port() {
    local name=$1 pid=$2 port=$3 log=$4 i
    for ((i = 0; i < 600; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before listening on port $port; its log:" >&2
            cat "$log" >&2 || true
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not listen on port $port within 60 s; its log:" >&2
    cat "$log" >&2 || true
    return 1
}

# Stops every server started by this shell and removes their data directories.
bcv_stop_servers() {
    local pid dir
    for pid in "${BCV_SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BCV_SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    BCV_SERVER_PIDS=()
    for dir in "${BCV_SERVER_DIRS[@]}"; do
        rm -rf "$dir"
    done
    BCV_SERVER_DIRS=()
}

_bcv_track_server() {
    BCV_SERVER_PIDS+=("$1")
    BCV_SERVER_DIRS+=("$2")
    trap bcv_stop_servers EXIT
}

# Installs Azurite (once), starts its blob service, creates containers. Exports BCV_TEST_AZURE_URL (the az://
# URL of the first, with the emulator's well-known key), BCV_TEST_AZURE_VFS_URL and BCV_TEST_AZURE_LEASE_URL (two
# more, each owned by one test file) and AZURITE_BLOB_STORAGE_URL.
bcv_start_azurite() {
    local dir="$BCV_CACHE/azurite" installed=""
    if [ -f "$dir/node_modules/azurite/package.json" ]; then
        installed=$(node -p "require('$dir/node_modules/azurite/package.json').version" 2>/dev/null || true)
    fi
    if [ "$installed" != "$BCV_AZURITE_VERSION" ] || [ ! -x "$dir/node_modules/.bin/azurite-blob" ]; then
        step "Installing Azurite $BCV_AZURITE_VERSION into $dir"
        mkdir -p "$dir"
        [ -f "$dir/package.json" ] || echo '{"name": "bcv-test-azurite", "private": true}' >"$dir/package.json"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "azurite@$BCV_AZURITE_VERSION" >/dev/null)
    fi
    local port data pid
    port=$(bcv_free_port)
    data=$(mktemp -d "${TMPDIR:-/tmp}/bcv-azurite.XXXXXX")
    "$dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" --location "$data/blobs" \
        --skipApiVersionCheck --disableTelemetry --silent >"$data/azurite.log" 2>&1 &
    pid=$!
    _bcv_track_server "$pid" "$data"
    bcv_wait_port Azurite "$pid" "$port" "$data/azurite.log"
    local container="bcv-test-$$-$RANDOM"
    BCV_TEST_AZURE_URL=$(python3 "$BCV_ROOT/scripts/azurite-container.py" --print-url \
        --endpoint "http://127.0.0.1:$port/devstoreaccount1" --container "$container")
    export BCV_TEST_AZURE_URL
    # A second container for the VFS tests, which create and destroy whole containers.
    BCV_TEST_AZURE_VFS_URL=$(python3 "$BCV_ROOT/scripts/azurite-container.py" --print-url \
        --endpoint "http://127.0.0.1:$port/devstoreaccount1" --container "$container-vfs")
    export BCV_TEST_AZURE_VFS_URL
    # A third one for the lease tests (core/tests/vfs_lease.rs), whose processes race on a whole container.
    BCV_TEST_AZURE_LEASE_URL=$(python3 "$BCV_ROOT/scripts/azurite-container.py" --print-url \
        --endpoint "http://127.0.0.1:$port/devstoreaccount1" --container "$container-lease")
    export BCV_TEST_AZURE_LEASE_URL
    export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$port"
    echo "Azurite $BCV_AZURITE_VERSION on 127.0.0.1:$port (pid $pid), container $container"
}

# Installs moto (once, in a venv), starts its S3 server, creates a bucket. Exports BCV_TEST_S3_URL.
bcv_start_moto() {
    local venv="$BCV_CACHE/moto-venv"
    if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; \
sys.exit(m.version('moto') != '$BCV_MOTO_VERSION')" 2>/dev/null || [ ! -x "$venv/bin/moto_server" ]; then
        step "Installing moto $BCV_MOTO_VERSION into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$BCV_MOTO_VERSION"
    fi
    local port data pid
    port=$(bcv_free_port)
    data=$(mktemp -d "${TMPDIR:-/tmp}/bcv-moto.XXXXXX")
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$data/moto.log" 2>&1 &
    pid=$!
    _bcv_track_server "$pid" "$data"
    bcv_wait_port moto "$pid" "$port" "$data/moto.log"
    local bucket="bcv-test-$$-$RANDOM"
    "$venv/bin/python" - "$port" "$bucket" <<'EOF'
import sys
import boto3

port, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
s3.create_bucket(Bucket=bucket)
s3.create_bucket(Bucket=bucket + "-vfs")
EOF
    local query="endpoint=http://127.0.0.1:$port&region=us-east-1&access_key_id=testing&secret_access_key=testing&allow_http=true"
    export BCV_TEST_S3_URL="s3://$bucket?$query"
    export BCV_TEST_S3_VFS_URL="s3://$bucket-vfs?$query"
    echo "moto $BCV_MOTO_VERSION on 127.0.0.1:$port (pid $pid), bucket $bucket"
}

# Run directly: start both servers, run the given command (default: the store conformance tests), stop them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    cd "$BCV_ROOT"
    bcv_start_azurite
    bcv_start_moto
    if [ "$#" -eq 0 ]; then
        set -- cargo test -p bcv-core --test store_conformance
    fi
    BCV_REQUIRE_SERVERS=1 "$@"
fi
