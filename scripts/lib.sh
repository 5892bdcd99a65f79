# Shared settings for the project's scripts: one cache directory outside the clone, one cargo target dir.
# Sourced, not run.
BCV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BCV_CACHE="${BCV_CACHE:-$HOME/.cache/bcv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BCV_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$BCV_CACHE"

step() { printf '\n==> %s\n' "$*"; }
