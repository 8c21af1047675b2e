#!/bin/sh
# Run a command against a private copy of this host's operating system trust store.
#
#   in_private_root.sh COMMAND [ARGS...]      (as root)
#
# Re-executes itself in a new mount namespace (unshare -m, private propagation), covers the
# store's directories with tmpfs copies of themselves, and runs COMMAND there: what COMMAND
# writes to /usr/local/share/ca-certificates or /etc/ssl/certs vanishes with the namespace,
# the host's own store never changes. Debian's update hooks are masked too: they would queue a
# dpkg trigger on the real /var/lib/dpkg.
set -eu

if [ "${MAGRATHEA_PRIVATE_ROOT:-}" != 1 ]; then
    MAGRATHEA_PRIVATE_ROOT=1 exec unshare --mount --propagation private "$0" "$@"
fi

for dir in /usr/local/share/ca-certificates /etc/ssl/certs /etc/ca-certificates/update.d; do
    [ -d "$dir" ] || continue
    copy=$(mktemp -d)
    cp -a "$dir/." "$copy/"
    mount -t tmpfs -o mode=0755 magrathea-private-root "$dir"
    cp -a "$copy/." "$dir/"
    rm -rf "$copy"
    mountpoint -q "$dir" || { echo "in_private_root: $dir is not a private mount; refusing to go on" >&2; exit 1; }
done
if [ -d /etc/ca-certificates/update.d ]; then
    find /etc/ca-certificates/update.d -mindepth 1 -delete
fi

exec "$@"
