# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet test bed: managed hosts reached over SSH on loopback addresses, each in namespaces of its own.

    .venv/bin/python tests/fleet/fleet.py up --dir build/fleet     build what is missing, start the hosts, write the inventory
    .venv/bin/python tests/fleet/fleet.py down --dir build/fleet   stop every host; fail if the machine's own stores changed

Each host is an sshd on its own address 127.77.0.x, pid 1 of its own pid, mount and UTS namespaces, chrooted into a
copy-on-write overlay of the machine (or of a Debian 13 tree built with mmdebstrap): trust stores, /etc/lftp.conf,
/var/lib/magrathea, users, home directories and dpkg's state are the host's own (tests/fleet/host.sh). SSH keys and
host keys are made per run; known_hosts pins them. `up` writes DIR/inventory.yml, DIR/fleet.json and fingerprints the
machine's own stores; `down` stops the hosts and compares. Needs root, unshare, sshd (openssh-server) and sudo;
mmdebstrap for the Debian 13 host; pyenv's Python 3.8 for the Python 3.8 host.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST_SH = os.path.join(ROOT, "tests", "fleet", "host.sh")
NET = os.environ.get("FLEET_NET", "127.77.0")
SSH_PORT = 22
FLEET_USER = "fleetops"
PY38 = os.environ.get("FLEET_PY38", "/root/.pyenv/versions/3.8.18/bin/python3.8")
PY38_TARGET = "/opt/magrathea-py38"
DEBIAN_SUITE = "trixie"
DEBIAN_MIRROR = os.environ.get("FLEET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a Debian 13 billing server has: its own Python (with cryptography for the trust modules and apt for the package
# module; no requests: balance_info needs only the standard library), JDK, NSS tools, lftp, and what the tests run there.
DEBIAN_PACKAGES = ("python3", "python3-cryptography", "python3-apt", "openssh-server", "sudo",
                   "ca-certificates", "ca-certificates-java", "openjdk-21-jdk-headless", "libnss3-tools", "lftp", "curl",
                   "openssl")
START_TIMEOUT = 30
# The machine's own trust stores, lftp settings and accounts, which no host may change (as in tests/utils/test_playbooks.sh).
# dpkg's state is left out: the fleet test installs its own Debian packages (openssh-server, mmdebstrap) when missing.
MACHINE_PATHS = ("/usr/local/share/ca-certificates", "/etc/ssl/certs", "/root/.pki", "/root/.mozilla", "/etc/firefox/policies",
                 "/var/lib/ca-certificates-java", "/etc/lftp.conf", "/var/lib/magrathea", "/etc/passwd", "/etc/group",
                 "/etc/shadow", "/etc/gshadow") + tuple(sorted(glob.glob("/usr/lib/jvm/*/lib/security")))


class Host:
    """One managed host: its name, address, image, how Ansible reaches it, and a fault it may carry."""

    def __init__(self, name, octet, user="root", sudo=None, python="/usr/bin/python3", image="machine", fault=None,
                 started=True):
        self.name = name
        self.address = "%s.%d" % (NET, octet)
        self.user = user
        self.sudo = sudo  # None (log in as root), "nopasswd" or "password"
        self.python = python
        self.image = image
        self.fault = fault
        self.started = started


HOSTS = (
    Host("fleet-root1", 11),
    Host("fleet-root2", 12),
    Host("fleet-become1", 13, user=FLEET_USER, sudo="nopasswd"),
    Host("fleet-become2", 14, user=FLEET_USER, sudo="password"),
    Host("fleet-py38", 15, python=PY38_TARGET + "/bin/python"),
    Host("fleet-trixie", 16, user=FLEET_USER, sudo="nopasswd", image="debian13"),
    # Fails in the middle of billing_server.yml: its CDR directory is on a read-only file system.
    Host("fleet-broken", 17, fault="read-only-cdr"),
    # In the inventory, but nothing listens on its address.
    Host("fleet-gone", 19, started=False),
)
HEALTHY = tuple(host.name for host in HOSTS if host.started and not host.fault)


def run(argv, **options):
    return subprocess.run(argv, check=True, **options)


def fingerprint(paths=MACHINE_PATHS):
    """{path: hash over the listing (names, sizes, modes, link targets) and contents below it}."""
    return {path: _fingerprint(path) for path in paths}


def _fingerprint(path):
    digest = hashlib.sha256()
    if not os.path.lexists(path):
        digest.update(("%s absent\n" % path).encode())
    else:
        entries = [path] if not os.path.isdir(path) or os.path.islink(path) else sorted(
            os.path.join(base, name) for base, dirs, files in os.walk(path) for name in dirs + files)
        for entry in entries:
            info = os.lstat(entry)
            link = os.readlink(entry) if os.path.islink(entry) else ""
            digest.update(("%s %d %o %s\n" % (entry, info.st_size, info.st_mode, link)).encode("utf-8", "surrogateescape"))
            if os.path.isfile(entry) and not os.path.islink(entry):
                with open(entry, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def write_private(path, text):
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def keygen(path, comment):
    for name in (path, path + ".pub"):
        if os.path.exists(name):
            os.unlink(name)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    with open(path + ".pub", encoding="ascii") as handle:
        return handle.read().strip()


def ensure_py38(directory):
    """A Python 3.8 venv with what the modules need on a managed host (tests/fleet/py38-requirements.txt)."""
    venv = os.path.join(directory, "py38")
    requirements = os.path.join(ROOT, "tests", "fleet", "py38-requirements.txt")
    with open(requirements, "rb") as handle:
        stamp = hashlib.sha256(handle.read()).hexdigest()
    marker = os.path.join(venv, ".installed")
    if os.path.exists(marker) and open(marker, encoding="ascii").read() == stamp:  # pylint: disable=consider-using-with
        return venv
    if not os.path.exists(PY38):
        raise SystemExit("fleet: no Python 3.8 at %s (pyenv install 3.8, or set FLEET_PY38)" % PY38)
    shutil.rmtree(venv, ignore_errors=True)
    run([PY38, "-m", "venv", venv])
    run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements])
    with open(marker, "w", encoding="ascii") as handle:
        handle.write(stamp)
    return venv


def ensure_debian13(directory):
    """A Debian 13 root file system from Debian's mirror (mmdebstrap), rebuilt when the package list changes."""
    tree = os.path.join(directory, "debian13")
    rootfs = os.path.join(tree, "rootfs")
    stamp = " ".join((DEBIAN_SUITE, DEBIAN_MIRROR) + DEBIAN_PACKAGES)
    marker = os.path.join(tree, ".built")
    if os.path.exists(marker) and open(marker, encoding="utf-8").read() == stamp:  # pylint: disable=consider-using-with
        return rootfs
    if not shutil.which("mmdebstrap"):
        raise SystemExit("fleet: mmdebstrap is missing (apt-get install mmdebstrap)")
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    started = time.monotonic()
    run(["mmdebstrap", "--quiet", "--variant=apt", "--include=" + ",".join(DEBIAN_PACKAGES), DEBIAN_SUITE, rootfs, DEBIAN_MIRROR])
    print("fleet: built the Debian 13 root file system in %.0f s" % (time.monotonic() - started), flush=True)
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(stamp)
    return rootfs


SSHD_CONFIG = """\
# sshd of fleet host {name}, written by tests/fleet/fleet.py
ListenAddress {address}:{port}
HostKey /etc/ssh/fleet/host_key
PidFile none
PermitRootLogin {root_login}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
MaxStartups 64:30:128
PrintMotd no
LogLevel ERROR
"""

HOSTS_FILE = """\
127.0.0.1 localhost
{address} {name}
# Magrathea's real services resolve to a loopback address where nothing listens: a test never reaches them.
127.0.0.254 secure.magrathea-telecom.co.uk api.magrathea-telecom.co.uk cdr.magrathea-telecom.co.uk restapi.magrathea.net
"""


def prepare_host(directory, host, client_key, images, become_password):
    """Write what host.sh reads: sshd config, host key, authorized keys, /etc/hosts and setup.env. Returns the host key."""
    host_dir = os.path.join(directory, "hosts", host.name)
    shutil.rmtree(host_dir, ignore_errors=True)
    os.makedirs(os.path.join(host_dir, "layer"), mode=0o700)
    host_key = keygen(os.path.join(host_dir, "host_key"), host.name)
    root_login = host.user == "root"
    with open(os.path.join(host_dir, "sshd_config"), "w", encoding="ascii") as handle:
        handle.write(SSHD_CONFIG.format(name=host.name, address=host.address, port=SSH_PORT,
                                        root_login="prohibit-password" if root_login else "no"))
    with open(os.path.join(host_dir, "hosts"), "w", encoding="ascii") as handle:
        handle.write(HOSTS_FILE.format(address=host.address, name=host.name))
    write_private(os.path.join(host_dir, "authorized_keys"), client_key + "\n")
    settings = {
        "FLEET_NAME": host.name,
        "FLEET_LOWER": images[host.image],
        # The checkout holds the sandbox's CA, passwords and keys: a managed host must not see it.
        "FLEET_HIDE": ROOT if host.image == "machine" else "",
        "FLEET_USER": "" if root_login else host.user,
        "FLEET_USER_HASH": password_hash(become_password) if host.sudo == "password" else "*",
        "FLEET_SUDO": host.sudo or "",
        "FLEET_ROOT_LOGIN": "yes" if root_login else "no",
        "FLEET_FAULT": host.fault or "",
        "FLEET_BIND_SOURCE": images["py38"] if host.python.startswith(PY38_TARGET) else "",
        "FLEET_BIND_TARGET": PY38_TARGET,
    }
    write_private(os.path.join(host_dir, "setup.env"), "".join("%s=%s\n" % (key, _shell_quote(value)) for key, value in settings.items()))
    return host_dir, host_key


def password_hash(password):
    """A SHA-512 crypt hash for /etc/shadow; the password goes to openssl on stdin, never on a command line."""
    return subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                          check=True).stdout.strip()


def _shell_quote(value):
    return "'%s'" % value.replace("'", "'\"'\"'")


def start_host(host_dir):
    log = open(os.path.join(host_dir, "sshd.log"), "ab")  # pylint: disable=consider-using-with
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child=SIGTERM", "--propagation", "private", HOST_SH, host_dir],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return process.pid


def namespace_init(unshare_pid):
    """The pid (in this namespace) of the host's pid 1, the chrooted sshd, or None."""
    try:
        with open("/proc/%d/task/%d/children" % (unshare_pid, unshare_pid), encoding="ascii") as handle:
            children = handle.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def wait_for_ssh(host, host_dir, deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.address, SSH_PORT), timeout=2) as conn:
                if conn.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.1)
    with open(os.path.join(host_dir, "sshd.log"), encoding="utf-8", errors="replace") as handle:
        raise SystemExit("fleet: %s did not answer SSH on %s:%d within %ds:\n%s"
                         % (host.name, host.address, SSH_PORT, START_TIMEOUT, handle.read()[-2000:]))


def inventory(directory, hosts, become_password):
    """The fleet's inventory: group billing with the group variables of the shipped playbooks/inventory/fleet.yml,
    reached over SSH with the run's key and pinned host keys, with become where needed."""
    with open(os.path.join(ROOT, "playbooks", "inventory", "fleet.yml"), encoding="utf-8") as handle:
        shipped = yaml.safe_load(handle)
    members = {}
    for host in hosts:
        variables = {"ansible_host": host.address, "ansible_user": host.user, "ansible_python_interpreter": host.python}
        if host.sudo:
            variables["ansible_become"] = True
        if host.sudo == "password":
            variables["ansible_become_password"] = become_password
        members[host.name] = variables
    document = {"all": {
        "children": {
            "billing": {"hosts": members, "vars": shipped["all"]["children"]["billing"]["vars"]},
            "healthy": {"hosts": {name: None for name in HEALTHY}},
        },
        "vars": {
            "ansible_port": SSH_PORT,
            "ansible_ssh_private_key_file": os.path.join(directory, "ssh", "id_ed25519"),
            "ansible_ssh_common_args": "-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s "
                                       "-o ConnectTimeout=5" % os.path.join(directory, "ssh", "known_hosts"),
        },
    }}
    return "---\n# Written by tests/fleet/fleet.py for this run of the fleet test bed.\n" + yaml.safe_dump(document, sort_keys=False)


def up(directory):
    if os.geteuid() != 0:
        raise SystemExit("fleet: needs root (namespaces, chroot, sshd)")
    for tool in ("unshare", "ssh-keygen", "ssh"):
        if not shutil.which(tool):
            raise SystemExit("fleet: %s is missing" % tool)
    if not os.path.exists("/usr/sbin/sshd"):
        raise SystemExit("fleet: /usr/sbin/sshd is missing (apt-get install openssh-server)")
    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, "fleet.json")):
        down(directory, compare=False)
    os.makedirs(os.path.join(directory, "ssh"), mode=0o700, exist_ok=True)
    if os.path.exists(os.path.join(directory, "figures.txt")):
        os.unlink(os.path.join(directory, "figures.txt"))
    write_private(os.path.join(directory, "machine.fingerprint"), json.dumps(fingerprint(), indent=1) + "\n")
    started = time.monotonic()
    images = {"machine": "/", "debian13": ensure_debian13(directory), "py38": ensure_py38(directory)}
    client_key = keygen(os.path.join(directory, "ssh", "id_ed25519"), "fleet-controller")
    become_password = secrets.token_urlsafe(12)
    known_hosts, state = [], {"hosts": {}, "healthy": list(HEALTHY)}
    for host in HOSTS:
        entry = {"address": host.address, "user": host.user, "python": host.python, "image": host.image,
                 "fault": host.fault, "started": host.started}
        if host.started:
            host_dir, host_key = prepare_host(directory, host, client_key, images, become_password)
            known_hosts.append("%s %s" % (host.address, " ".join(host_key.split()[:2])))
            entry.update(dir=host_dir, pid=start_host(host_dir))
        state["hosts"][host.name] = entry
    write_private(os.path.join(directory, "fleet.json"), json.dumps(state, indent=2) + "\n")
    deadline = time.monotonic() + START_TIMEOUT
    for host in HOSTS:
        if host.started:
            wait_for_ssh(host, state["hosts"][host.name]["dir"], deadline)
            state["hosts"][host.name]["init_pid"] = namespace_init(state["hosts"][host.name]["pid"])
    write_private(os.path.join(directory, "fleet.json"), json.dumps(state, indent=2) + "\n")
    write_private(os.path.join(directory, "ssh", "known_hosts"), "\n".join(known_hosts) + "\n")
    write_private(os.path.join(directory, "inventory.yml"), inventory(directory, HOSTS, become_password))
    print("fleet: %d hosts up on %s.x in %.1f s (%s); inventory %s"
          % (sum(host.started for host in HOSTS), NET, time.monotonic() - started, ", ".join(host.name for host in HOSTS if host.started),
             os.path.join(directory, "inventory.yml")), flush=True)


def down(directory, compare=True):
    directory = os.path.abspath(directory)
    path = os.path.join(directory, "fleet.json")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        state = {"hosts": {}}
    for name, entry in state["hosts"].items():
        for pid in (entry.get("init_pid"), entry.get("pid")):
            if pid and _is_fleet_process(pid, entry):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while entry.get("pid") and _is_fleet_process(entry["pid"], entry) and time.monotonic() < deadline:
            time.sleep(0.05)
        if entry.get("pid") and _is_fleet_process(entry["pid"], entry):
            print("fleet: %s (pid %d) did not stop" % (name, entry["pid"]), file=sys.stderr)
    if os.path.exists(path):
        os.unlink(path)
    print("fleet: down (%s)" % directory, flush=True)
    if not compare:
        return 0
    try:
        with open(os.path.join(directory, "machine.fingerprint"), encoding="ascii") as handle:
            before = json.load(handle)
    except FileNotFoundError:
        return 0
    changed = sorted(path for path, value in fingerprint(list(before)).items() if value != before[path])
    if changed:
        print("fleet: the machine's own %s changed while the fleet ran" % ", ".join(changed), file=sys.stderr)
        return 1
    print("fleet: the machine's own trust stores and lftp settings are unchanged", flush=True)
    return 0


def _is_fleet_process(pid, entry):
    """Whether ``pid`` is still one of this host's processes (pids are reused: check the command line)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            command = handle.read().replace(b"\0", b" ")
    except OSError:
        return False
    return entry.get("dir", "").encode() + b" " in command + b" " or b"/etc/ssh/fleet/sshd_config" in command


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tests/fleet/fleet.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--dir", required=True, help="state directory (keys, images, host layers, inventory)")
    args = parser.parse_args(argv)
    if args.action == "up":
        up(args.dir)
        return 0
    return down(args.dir)


if __name__ == "__main__":
    sys.exit(main())
