#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Run a command with a private, copy-on-write /etc: the accounts, PAM services and settings it creates or changes (the
# lftp role's service user, say) live in a tmpfs of its own mount namespace and vanish with it. This machine's accounts
# are fingerprinted before and after and must not change. Needs root.
#
#   tests/utils/private_etc.sh COMMAND [ARG...]
set -euo pipefail

accounts() {
    cat /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null | sha256sum
    find /etc/pam.d -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | sha256sum
}

if [ "${MAGRATHEA_PRIVATE_ETC:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "private_etc: needs root (a private mount namespace over /etc)" >&2; exit 1; }
    before=$(accounts)
    status=0
    MAGRATHEA_PRIVATE_ETC=1 unshare --mount --propagation private "$0" "$@" || status=$?
    if [ "$before" != "$(accounts)" ]; then
        echo "private_etc: this machine's accounts or PAM services changed; the private /etc leaked" >&2
        exit 1
    fi
    exit "$status"
fi

state=$(mktemp -d /tmp/magrathea-private-etc.XXXXXX)
mount -t tmpfs -o mode=0700 magrathea-private-etc "$state"
mkdir "$state/upper" "$state/work"
mount -t overlay magrathea-private-etc -o "lowerdir=/etc,upperdir=$state/upper,workdir=$state/work" /etc
status=0
"$@" || status=$?
umount /etc && umount "$state" && rmdir "$state"
exit "$status"
