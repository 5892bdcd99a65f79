#!/usr/bin/env bash
# Every test of the project, from a fresh clone: Rust, C (valgrind, ASan), Python, Node, Swift.
# Installs what it needs (Python venv, npm packages, the Swift chroot) and caches heavy parts in
# $BCV_CACHE (default ~/.cache/bcv), outside the clone. Ends with "suites: N passed, M failed".
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BCV_ROOT"

suites=(rust c)
[ -x scripts/test-python.sh ] && suites+=(python)
[ -x scripts/test-node.sh ] && suites+=(node)
[ -x scripts/test-swift.sh ] && suites+=(swift)

passed=0
failed=0
failed_names=()
for s in "${suites[@]}"; do
    start=$(date +%s)
    if "scripts/test-$s.sh"; then
        passed=$((passed + 1))
        echo "--- suite $s passed in $(( $(date +%s) - start )) s"
    else
        failed=$((failed + 1))
        failed_names+=("$s")
        echo "--- suite $s FAILED in $(( $(date +%s) - start )) s"
    fi
done
[ "$failed" -gt 0 ] && echo "failed suites: ${failed_names[*]}"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
