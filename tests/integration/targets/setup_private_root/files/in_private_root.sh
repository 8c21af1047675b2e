#!/bin/sh
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Run a command against private copies of this host's trust stores, and prove that the host's own did not change.
#
#   in_private_root.sh COMMAND [ARGS...]      (as root)
#
# Fingerprints the stores, re-executes itself in a new mount namespace (unshare -m, private propagation), covers
# each directory with a tmpfs copy of itself and each file with a bind-mounted copy, runs COMMAND there, and after it
# fails if the host's own stores changed. What to cover:
#   MAGRATHEA_PRIVATE_DIRS   directories (default: the system store, /usr/local/share/ca-certificates and
#                            /etc/ssl/certs, and update-ca-certificates' hooks /etc/ca-certificates/update.d)
#   MAGRATHEA_PRIVATE_FILES  files (default: none)
#   MAGRATHEA_PRIVATE_HOOKS  "mask" (default): delete the hooks in the private copy, since Debian's Java hook queues a
#                            dpkg trigger; "run": keep them, as on a real host (then /var/lib/dpkg must be private too)
set -eu
dirs=${MAGRATHEA_PRIVATE_DIRS:-/usr/local/share/ca-certificates /etc/ssl/certs /etc/ca-certificates/update.d}
files=${MAGRATHEA_PRIVATE_FILES:-}
hooks=${MAGRATHEA_PRIVATE_HOOKS:-mask}

fingerprint() {
    for path in $dirs $files; do
        if [ -e "$path" ]; then
            find "$path" -xdev \( -type f -o -type l \) -printf '%p %s %m %l\n' 2>/dev/null | sort
            find "$path" -xdev -type f -exec sha256sum {} + 2>/dev/null | sort
        else
            echo "$path absent"
        fi
    done | sha256sum
}

if [ "${MAGRATHEA_PRIVATE_ROOT:-}" != 1 ]; then
    case " $dirs " in
    *" /var/lib/dpkg "*) ;;
    *) [ "$hooks" = mask ] || { echo "in_private_root: hooks run only with a private /var/lib/dpkg" >&2; exit 2; } ;;
    esac
    before=$(fingerprint)
    status=0
    MAGRATHEA_PRIVATE_ROOT=1 unshare --mount --propagation private "$0" "$@" || status=$?
    if [ "$(fingerprint)" != "$before" ]; then
        echo "in_private_root: the host's own trust stores changed; the private namespace leaked" >&2
        exit 1
    fi
    echo "in_private_root: the host's own trust stores did not change" >&2
    exit "$status"
fi

for dir in $dirs; do
    [ -d "$dir" ] || continue
    copy=$(mktemp -d)
    cp -a "$dir/." "$copy/"
    mount -t tmpfs -o mode=0755 magrathea-private-root "$dir"
    cp -a "$copy/." "$dir/"
    rm -rf "$copy"
    mountpoint -q "$dir" || { echo "in_private_root: $dir is not a private mount; refusing to go on" >&2; exit 1; }
done
for file in $files; do
    [ -f "$file" ] || continue
    copy=$(mktemp)
    cp -a "$file" "$copy"
    mount --bind "$copy" "$file"
done
if [ "$hooks" = mask ] && [ -d /etc/ca-certificates/update.d ]; then
    mountpoint -q /etc/ca-certificates/update.d || { echo "in_private_root: the hooks are not a private mount" >&2; exit 1; }
    find /etc/ca-certificates/update.d -mindepth 1 -delete
fi

exec "$@"
