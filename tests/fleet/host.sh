#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# One managed host of the fleet test bed, run by tests/fleet/fleet.py as
#   unshare --mount --uts --pid --fork --kill-child=SIGTERM --propagation private tests/fleet/host.sh HOST_DIR
# so that it is pid 1 of its own pid namespace with a mount namespace and a host name of its own.
#
# Its root file system is a copy-on-write overlay: the machine's own / (or a Debian 13 tree built with mmdebstrap)
# below, a tmpfs above. Everything the playbooks write (trust stores, /etc/lftp.conf, /var/lib/magrathea, users and
# their homes, dpkg's state) lands in that tmpfs and disappears with the host; the machine's files cannot change.
# The controller's checkout (and with it the sandbox's CA file, keys and passwords) is hidden under an empty tmpfs,
# as are /tmp, /run and root's ~/.ansible. Then sshd runs chrooted into the overlay, on HOST_DIR's loopback address.
set -euo pipefail
host_dir=$1
# shellcheck source=/dev/null
. "$host_dir/setup.env"   # FLEET_NAME FLEET_LOWER FLEET_HIDE FLEET_USER FLEET_USER_HASH FLEET_SUDO FLEET_ROOT_LOGIN FLEET_FAULT FLEET_BIND_*

hostname "$FLEET_NAME"
layer=$host_dir/layer
mount -t tmpfs -o mode=0700 "fleet-$FLEET_NAME" "$layer"
mkdir "$layer/upper" "$layer/work" "$layer/root"
mount -t overlay overlay -o "lowerdir=$FLEET_LOWER,upperdir=$layer/upper,workdir=$layer/work" "$layer/root"
new=$layer/root

mount -t proc proc "$new/proc"
mount --rbind /dev "$new/dev"
mount --rbind /sys "$new/sys"
mount -t tmpfs -o mode=1777 tmpfs "$new/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$new/run"
mkdir -p "$new/run/sshd" "$new/root/.ansible"
mount -t tmpfs -o mode=0700 tmpfs "$new/root/.ansible"

# What a host needs from the controller's disk, bound before the checkout is hidden (the Python 3.8 venv).
if [ -n "${FLEET_BIND_SOURCE:-}" ]; then
    mkdir -p "$new$FLEET_BIND_TARGET"
    mount --bind -o ro "$FLEET_BIND_SOURCE" "$new$FLEET_BIND_TARGET"
fi

install -d -m 0755 "$new/etc/ssh/fleet"
install -m 0600 "$host_dir/host_key" "$new/etc/ssh/fleet/host_key"
install -m 0644 "$host_dir/sshd_config" "$new/etc/ssh/fleet/sshd_config"
install -m 0644 "$host_dir/hosts" "$new/etc/hosts"
echo "$FLEET_NAME" > "$new/etc/hostname"

authorize() {  # authorize USER HOME
    install -d -m 0700 "$new$2/.ssh"
    install -m 0600 "$host_dir/authorized_keys" "$new$2/.ssh/authorized_keys"
    chroot "$new" chown -R "$1:" "$2/.ssh"
}
# sshd without PAM refuses accounts whose password field starts with "!": "*" allows keys and nothing else.
chroot "$new" usermod -p '*' root
if [ "$FLEET_ROOT_LOGIN" = yes ]; then
    authorize root /root
fi
if [ -n "$FLEET_USER" ]; then
    chroot "$new" useradd --create-home --shell /bin/bash "$FLEET_USER"
    chroot "$new" usermod -p "${FLEET_USER_HASH:-*}" "$FLEET_USER"
    authorize "$FLEET_USER" "/home/$FLEET_USER"
    if [ "$FLEET_SUDO" = password ]; then
        echo "$FLEET_USER ALL=(ALL:ALL) ALL" > "$new/etc/sudoers.d/fleet"
    else
        echo "$FLEET_USER ALL=(ALL:ALL) NOPASSWD: ALL" > "$new/etc/sudoers.d/fleet"
    fi
    chmod 0440 "$new/etc/sudoers.d/fleet"
fi

case ${FLEET_FAULT:-} in
    read-only-cdr)  # the disk that holds the CDR files went read-only: the host fails in the middle of a run
        mkdir -p "$new/var/lib/magrathea/cdr"
        mount -t tmpfs -o ro,mode=0755 tmpfs "$new/var/lib/magrathea/cdr" ;;
    '') ;;
    *) echo "host.sh: unknown fault $FLEET_FAULT" >&2; exit 2 ;;
esac

# Last: hide the controller's checkout (sandbox CA, keys, passwords, the collection itself).
for hidden in $FLEET_HIDE; do
    [ -d "$new$hidden" ] && mount -t tmpfs -o ro,mode=0755 tmpfs "$new$hidden"
done

exec chroot "$new" /usr/sbin/sshd -D -e -f /etc/ssh/fleet/sshd_config
