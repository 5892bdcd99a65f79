#!/usr/bin/env bash
# A Debian trixie chroot with Swift 6.0 (`swiftlang`) and `libc6-dev`, for building and testing the Swift
# package on a Debian 12 host (shared/design/BINDINGS.md §3.5, §8; pitfall P9).
#
# Run it:    scripts/swift-chroot.sh          provisions the chroot if needed and prints its path.
# Source it: source scripts/swift-chroot.sh   defines swift_chroot_root, swift_chroot_provision, in_chroot.
#
# The chroot lives in ${BCV_CACHE:-$HOME/.cache/bcv}/swift-trixie-<first 16 hex digits of sha256 of this
# file>: editing this script makes a new chroot, so an old one can never stand in for what the script says.
# Provisioning builds into a temporary directory and renames it only once everything is installed, so an
# interrupted run leaves nothing that looks ready; it is serialised with flock and is idempotent.
# The Debian mirror is read from the host's own apt configuration at run time. Needs root (debootstrap,
# chroot, mount); mounts are made in a private mount namespace (unshare) and vanish with the command.

_swift_chroot_script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
_swift_chroot_repo="$(cd "$(dirname "$_swift_chroot_script")/.." && pwd)"

# The chroot's path for this version of the script (it may not exist yet).
swift_chroot_root() {
    local cache="${BCV_CACHE:-$HOME/.cache/bcv}" hash
    hash=$(sha256sum "$_swift_chroot_script" | cut -c1-16)
    echo "$cache/swift-trixie-$hash"
}

# The host's main Debian mirror: the first URI of a source that carries a plain release suite (not
# -security, -updates or -backports), from deb822 *.sources or one-line *.list files.
_swift_chroot_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush() {
                if (!found && uris != "" && suites != "" && comps ~ /(^| )main( |$)/) {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++)
                        if (s[i] !~ /-(security|updates|backports|proposed-updates)$/) { split(uris, u, " "); print u[1]; found = 1; exit }
                }
                uris = suites = comps = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "uris:" { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
            tolower($1) == "suites:" { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
            tolower($1) == "components:" { $1 = ""; comps = $0; sub(/^ +/, "", comps) }
            END { flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '
            $1 != "deb" { next }
            {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                uri = $i; suite = $(i + 1)
                if (suite !~ /-(security|updates|backports|proposed-updates)$/ && uri ~ /debian/) { print uri; exit }
            }
        ' "$f"
    done
}

# Runs a shell command inside the chroot (as root, cwd /), with /proc mounted and /dev bound (P9), the repo
# bound at /ws and, when CARGO_TARGET_DIR is set, the cargo target dir bound at /target. Exit status is the
# command's. Usage: in_chroot 'cd /ws/bindings/swift && swift test'
in_chroot() {
    local root target="${CARGO_TARGET_DIR:-}"
    root="${SWIFT_CHROOT_ROOT:-$(swift_chroot_root)}"
    [ -n "$target" ] && mkdir -p "$target"
    unshare --mount --propagation private -- sh -c '
        set -e
        R=$1; W=$2; T=$3; shift 3
        mount -t proc proc "$R/proc"
        mount --rbind /dev "$R/dev"
        mkdir -p "$R/ws" "$R/target"
        mount --bind "$W" "$R/ws"
        [ -n "$T" ] && mount --bind "$T" "$R/target"
        exec chroot "$R" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI="${CI:-}" \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c "$*"
    ' sh "$root" "$_swift_chroot_repo" "$target" "$*"
}

# Creates the chroot unless a finished one exists; prints its path on stdout (progress goes to stderr).
swift_chroot_provision() {
    local root cache tmp mirror start
    root=$(swift_chroot_root)
    cache=$(dirname "$root")
    mkdir -p "$cache"
    exec 9>"$cache/swift-trixie.lock"
    flock 9
    if [ -f "$root/.bcv-provisioned" ]; then
        flock -u 9
        echo "$root"
        return 0
    fi
    start=$(date +%s)
    tmp="$root.partial"
    rm -rf --one-file-system "$tmp"
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "swift-chroot: installing debootstrap on the host" >&2
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
    fi
    mirror=$(_swift_chroot_mirror | head -1)
    if [ -z "$mirror" ]; then
        echo "swift-chroot: no Debian mirror found in /etc/apt/sources.list{,.d/*}" >&2
        return 1
    fi
    echo "swift-chroot: debootstrap trixie into $tmp from the host's mirror" >&2
    debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        trixie "$tmp" "$mirror" >&2
    cp -L /etc/resolv.conf "$tmp/etc/resolv.conf"
    echo "swift-chroot: installing swiftlang and libc6-dev" >&2
    SWIFT_CHROOT_ROOT="$tmp" CARGO_TARGET_DIR='' in_chroot '
        apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends swiftlang libc6-dev &&
        apt-get clean && swift --version' >&2
    dpkg-query --admindir="$tmp/var/lib/dpkg" -W swiftlang libc6 >"$tmp/.bcv-provisioned"
    mv "$tmp" "$root"
    echo "swift-chroot: provisioned in $(( $(date +%s) - start )) s" >&2
    flock -u 9
    echo "$root"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    swift_chroot_provision
fi
