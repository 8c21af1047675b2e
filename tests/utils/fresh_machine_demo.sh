#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# README's first command on a bare machine: build a Debian 12 root (debootstrap minbase + python3), install git and
# make in it (what README.md asks for before cloning), clone this repository's HEAD into it and run `make demo` as
# root in a chroot inside a private mount namespace. Passes when `make demo` exits 0 and the root's own trust stores
# (system bundle and anchors, Java cacerts, root's NSS database) do not hold the demo's sandbox CA afterwards.
#
#   tests/utils/fresh_machine_demo.sh        (needs root, the Debian mirror and PyPI; about 1.5 minutes here;
#                                             root and logs in build/fresh-machine/; committed HEAD only)
#
# Two things come from this machine's network setup, not from the project: resolv.conf, and the CA bundle that
# pip's configuration names (a TLS-intercepting egress proxy), passed to pip in the root as PIP_CERT.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${FRESH_MACHINE_DIR:-$repo/build/fresh-machine}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$work/root
clone=/root/magrathea.secure

[ "$(id -u)" = 0 ] || { echo "fresh_machine_demo: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }

if [ "${MAGRATHEA_FRESH_NAMESPACE:-}" != 1 ]; then
    command -v debootstrap >/dev/null || "$repo/tests/utils/debian_packages.sh" fresh-machine debootstrap
    rm -rf "$work" && mkdir -p "$work"
    start=$(date +%s)
    debootstrap --variant=minbase --include=python3 bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log"; exit 1; }
    echo "fresh_machine_demo: Debian 12 root in $(($(date +%s) - start)) s: $(chroot "$root" python3 --version)"
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    pip_cert=${PIP_CERT:-$(python3 -m pip config list 2>/dev/null | sed -nE "s/^global\.cert='(.*)'$/\1/p" | head -n 1)}
    if [ -n "$pip_cert" ] && [ -f "$pip_cert" ]; then
        cp "$pip_cert" "$root/etc/egress-ca-bundle.pem"
    fi
    git -C "$repo" bundle create "$work/repo.bundle" HEAD >/dev/null 2>&1
    cp "$work/repo.bundle" "$root/root/repo.bundle"
    status=0
    MAGRATHEA_FRESH_NAMESPACE=1 unshare --mount --propagation private "$0" "$@" || status=$?
    # Nothing the demo started may outlive it inside the root.
    for proc in /proc/[0-9]*; do
        if [ "$(readlink "$proc/root" 2>/dev/null)" = "$root" ]; then
            echo "fresh_machine_demo: process ${proc#/proc/} still runs in the root: $(tr '\0' ' ' <"$proc/cmdline")" >&2
            status=1
        fi
    done
    exit "$status"
fi

# -- inside the private mount namespace -------------------------------------------------------------------------
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
in_root() {
    local env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
    [ -f "$root/etc/egress-ca-bundle.pem" ] && env+=(PIP_CERT=/etc/egress-ca-bundle.pem)
    env -i "${env[@]}" chroot "$root" /bin/bash -euo pipefail -c "$1"
}

start=$(date +%s)
in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git make >/dev/null' >"$work/prerequisites.log" 2>&1 \
    || { tail -n 20 "$work/prerequisites.log"; exit 1; }
in_root "git -c advice.detachedHead=false clone -q /root/repo.bundle $clone"
echo "fresh_machine_demo: git and make installed, repository cloned in $(($(date +%s) - start)) s"

start=$(date +%s)
status=0
in_root "cd $clone && make demo" >"$work/demo.log" 2>&1 || status=$?
elapsed=$(($(date +%s) - start))
if [ "$status" != 0 ]; then
    tail -n 40 "$work/demo.log"
    echo "FAIL fresh_machine_demo: make demo exited $status after $elapsed s (log: $work/demo.log)"
    exit 1
fi
grep -E '^localhost +: ok=' "$work/demo.log" | tail -n 1
echo "fresh_machine_demo: make demo exited 0 after $elapsed s (log: $work/demo.log)"
echo "fresh_machine_demo: installed by make demo: $(grep -hoE '(demo|venv): installing the Debian packages .*' "$work/demo.log" | tr '\n' ' ')"

# The demo's sandbox CA must be in none of the root's own stores.
in_root "cd $clone && .venv/bin/python - <<'EOF'
import glob, hashlib, os, re, subprocess, sys, warnings
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
warnings.simplefilter('ignore')  # a few public roots have serial numbers that cryptography warns about

def der_prints(path):
    with open(path, 'rb') as handle:
        data = handle.read()
    return {hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest() for cert in x509.load_pem_x509_certificates(data)} if b'BEGIN CERT' in data else set()

ca = der_prints('build/demo-sandbox/pki/ca.pem').pop()
found = [path for path in ['/etc/ssl/certs/ca-certificates.crt'] + glob.glob('/etc/ssl/certs/*.pem') + glob.glob('/usr/local/share/ca-certificates/**/*', recursive=True)
         if os.path.isfile(path) and ca in der_prints(path)]
java = subprocess.run(['keytool', '-list', '-keystore', '/etc/ssl/certs/java/cacerts', '-storepass', 'changeit'], capture_output=True, text=True, check=True).stdout
if ca in {value.replace(':', '').lower() for value in re.findall(r'\(SHA-256\): ([0-9A-F:]+)', java)}:
    found.append('/etc/ssl/certs/java/cacerts')
if os.path.exists('/root/.pki/nssdb'):
    found.append('/root/.pki/nssdb (created)')
print('fresh_machine_demo: the sandbox CA (SHA-256 %s...) is in %s' % (ca[:16], ', '.join(found) or 'none of the root\'s own stores'))
sys.exit(1 if found else 0)
EOF"
