# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The real vsftpd as the sandbox's strict FTPS server.

Owns starting and stopping Debian's /usr/sbin/vsftpd on 127.0.0.1 with a
generated configuration: explicit FTPS forced for logins and data, TLS session
reuse on data connections required (vsftpd's default, which stock Python
ftplib fails), no MLSD (vsftpd has none), read-only access chrooted to the
sandbox's FTP root. vsftpd logs in real local users only, so this file also
owns a throwaway system user (no home of its own, no login shell) and a PAM service that
checks nothing but that user's password. Both live in a private copy of /etc: vsftpd
runs in a mount namespace of its own with an overlay over /etc, so this machine's
accounts and /etc never change, and nothing is left behind when vsftpd stops.
All of that needs root.
"""

from __future__ import annotations

import os
import pwd
import random
import signal
import socket
import stat
import subprocess
import time

VSFTPD = "/usr/sbin/vsftpd"
PAM_SERVICE = "magrathea-sandbox-vsftpd"
# Debian's /etc/pam.d/vsftpd also demands a shell from /etc/shells (pam_shells); the sandbox user has none.
PAM_CONFIG = """\
# Written by the Magrathea sandbox (sandbox/vsftpd.py): checks the password of its
# throwaway vsftpd user and nothing else. Safe to delete when no sandbox runs.
auth     required pam_unix.so
account  required pam_unix.so
session  required pam_permit.so
"""
USER_COMMENT = "Magrathea sandbox FTPS user"
# vsftpd changes to the home directory before it chroots to local_root, so the home must exist; the chroot hides it.
USER_HOME = "/"
# Run by `unshare --mount` as vsftpd's own process: /etc becomes an overlay whose changes live in a tmpfs of this mount
# namespace only; the user and PAM service are made there, the password read from standard input; then vsftpd.
LAUNCHER = r"""
set -eu
state=$1 user=$2 service=$3
shift 3
mount -t tmpfs -o mode=0700 magrathea-sandbox-etc "$state"
mkdir "$state/upper" "$state/work"
mount -t overlay magrathea-sandbox-etc -o "lowerdir=/etc,upperdir=$state/upper,workdir=$state/work" /etc
useradd --system --no-create-home --home-dir "$USER_HOME" --shell /usr/sbin/nologin --comment "$USER_COMMENT" "$user"
chpasswd
printf '%s' "$PAM_CONFIG" > "/etc/pam.d/$service"
exec "$@" </dev/null
"""
PASSIVE_PORT_COUNT = 16
PORT_POOL = (20000, 32000)
_TCP_LISTEN = "0A"


class VsftpdError(RuntimeError):
    """vsftpd could not be set up or started; the message says why and what to do."""


def _ports_are_free(host, ports):
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def free_port_range(host, count, avoid=()):
    """``count`` consecutive ports on ``host`` that are free now (checked, not reserved), as a range.

    Drawn below Linux's default ephemeral range (32768-60999), where client
    sockets do not take ports between this check and vsftpd's bind.
    """
    for _attempt in range(100):
        first = random.randrange(PORT_POOL[0], PORT_POOL[1] - count)
        ports = range(first, first + count)
        if not set(ports) & set(avoid) and _ports_are_free(host, ports):
            return ports
    raise VsftpdError("no %d consecutive free TCP ports on %s between %d and %d" % (count, host, PORT_POOL[0], PORT_POOL[1]))


def _is_listening(host, port):
    """Whether a socket listens on host:port, read from /proc so that no connection slot is used up."""
    wanted = "%s:%04X" % ("".join("%02X" % int(part) for part in reversed(host.split("."))), port)
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == _TCP_LISTEN:
                return True
    return False


def _processes():
    """(pid, parent pid, state letter) of every process, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        yield int(entry), int(fields[1]), fields[0]


def _process_tree(pid):
    """``pid`` and all its descendants: vsftpd starts each session as a new session, so no process group holds them all."""
    children = {}
    for child, parent, _state in _processes():
        children.setdefault(parent, []).append(child)
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def _running(pids):
    """Those of ``pids`` that exist and are not zombies (orphans wait for init to reap them)."""
    wanted = set(pids)
    return [pid for pid, _parent, state in _processes() if pid in wanted and state != "Z"]


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_until_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while _running(pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _blocking_directory(path):
    """The first directory from / down to ``path`` that other users cannot search (or ``path`` they cannot read), else None."""
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    for depth in range(1, len(parts) + 1):
        directory = os.sep.join(parts[:depth]) or os.sep
        mode = os.stat(directory).st_mode
        if not mode & stat.S_IXOTH or (directory == path and not mode & stat.S_IROTH):
            return directory
    return None


class VsftpdServer:
    """Debian's vsftpd serving ``root`` read-only over explicit FTPS; ``start()`` sets ``port``, ``stop()`` kills it."""

    def __init__(self, host="127.0.0.1", port=0, *, certfile, keyfile, username, password, root, workdir, max_connections=0,
                 binary=VSFTPD, pam_service=PAM_SERVICE, start_timeout=10.0):
        self.host = host
        self.port = port
        self.certfile = os.path.abspath(certfile)
        self.keyfile = os.path.abspath(keyfile)
        self.username = username
        self.root = os.path.abspath(root)
        self.workdir = os.path.abspath(workdir)
        self.max_connections = max_connections
        self.binary = binary
        self.pam_service = pam_service
        self.start_timeout = start_timeout
        self.passive_ports = None
        self.config_file = os.path.join(self.workdir, "vsftpd.conf")
        self.output_file = os.path.join(self.workdir, "vsftpd.out")
        self.xferlog_file = os.path.join(self.workdir, "xferlog")
        self._password = password
        self._process = None

    def __repr__(self):
        return "VsftpdServer(%s:%s, root=%r)" % (self.host, self.port, self.root)

    def _preflight(self):
        if os.geteuid() != 0:
            raise VsftpdError("vsftpd needs root: it runs in a mount namespace of its own with a local user %r, and switches "
                              "to it after login; run the sandbox as root or use the embedded FTPS server" % self.username)
        try:
            pwd.getpwnam(self.username)
        except KeyError:
            pass
        else:
            raise VsftpdError("local user %r exists on this machine; choose another FTP username (vsftpd's user is made "
                              "in its private /etc, never taken over)" % self.username)
        if "\n" in self._password or "\r" in self._password or ":" in self.username:
            raise VsftpdError("the vsftpd user %r or its password holds a ':' or a line break, which chpasswd cannot take" % self.username)
        for path in (self.certfile, self.keyfile):
            if not os.path.isfile(path):
                raise VsftpdError("vsftpd's TLS certificate or key %s does not exist; write the sandbox PKI first" % path)
        if not os.access(self.binary, os.X_OK):
            raise VsftpdError("%s is missing; install the Debian package vsftpd (apt-get install vsftpd)" % self.binary)
        blocking = _blocking_directory(self.root)
        if blocking:
            raise VsftpdError("vsftpd's user %r cannot reach %s because of %s (mode %s); "
                              "put the FTP root under a directory other users can search, such as a 0755 one"
                              % (self.username, self.root, blocking, oct(os.stat(blocking).st_mode & 0o777)))

    def config(self):
        """The vsftpd.conf text for this server."""
        settings = {
            "background": "NO",
            "listen": "YES",
            "listen_ipv6": "NO",
            "listen_address": self.host,
            "listen_port": self.port,
            "ftpd_banner": "Magrathea sandbox CDR server (vsftpd) ready.",
            "anonymous_enable": "NO",
            "local_enable": "YES",
            "write_enable": "NO",
            "local_root": self.root,
            "chroot_local_user": "YES",
            "allow_writeable_chroot": "YES",
            "secure_chroot_dir": os.path.join(self.workdir, "empty"),
            "pam_service_name": self.pam_service,
            "seccomp_sandbox": "NO",
            "ssl_enable": "YES",
            "rsa_cert_file": self.certfile,
            "rsa_private_key_file": self.keyfile,
            "ssl_ciphers": "HIGH",
            "ssl_sslv2": "NO",
            "ssl_sslv3": "NO",
            "ssl_tlsv1": "NO",
            "ssl_request_cert": "NO",
            "allow_anon_ssl": "NO",
            "force_local_logins_ssl": "YES",
            "force_local_data_ssl": "YES",
            "require_ssl_reuse": "YES",
            "pasv_enable": "YES",
            "pasv_min_port": self.passive_ports[0],
            "pasv_max_port": self.passive_ports[-1],
            "port_enable": "NO",
            "xferlog_enable": "YES",
            "xferlog_file": self.xferlog_file,
            "vsftpd_log_file": os.path.join(self.workdir, "vsftpd.log"),
            "dual_log_enable": "YES",
        }
        if self.max_connections:
            settings["max_per_ip"] = self.max_connections
            settings["max_clients"] = self.max_connections
        return "".join("%s=%s\n" % item for item in settings.items())

    def start(self):
        """Set up the user, PAM service and configuration, start vsftpd, and return once it listens."""
        if self._process is not None:
            raise RuntimeError("%r is already running" % self)
        self._preflight()
        os.makedirs(os.path.join(self.workdir, "empty"), mode=0o755, exist_ok=True)
        state = os.path.join(self.workdir, "etc-overlay")
        os.makedirs(state, mode=0o700, exist_ok=True)
        if not self.port:
            self.port = free_port_range(self.host, 1)[0]
        self.passive_ports = free_port_range(self.host, PASSIVE_PORT_COUNT, avoid=(self.port,))
        # vsftpd refuses a configuration file that is not root's; 0600 because it names the key file.
        descriptor = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(self.config())
        environment = dict(os.environ, USER_HOME=USER_HOME, USER_COMMENT=USER_COMMENT, PAM_CONFIG=PAM_CONFIG)
        with open(self.output_file, "wb") as output:
            # Its own session: a signal meant for the sandbox (Ctrl-C) reaches vsftpd only through stop(). No fork: the
            # launcher's process becomes vsftpd, and the namespace with its private /etc ends with it.
            self._process = subprocess.Popen(  # pylint: disable=consider-using-with  # runs until stop()
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", LAUNCHER, "vsftpd-launcher", state,
                 self.username, self.pam_service, self.binary, self.config_file],
                stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
            )
        # The password reaches chpasswd on standard input, never a command line.
        self._process.stdin.write(("%s:%s\n" % (self.username, self._password)).encode())
        self._process.stdin.close()
        self._wait_until_listening()
        return self

    def _wait_until_listening(self):
        deadline = time.monotonic() + self.start_timeout
        while not _is_listening(self.host, self.port):
            if self._process.poll() is not None:
                self._process = None
                with open(self.output_file, encoding="utf-8", errors="replace") as output:
                    said = output.read().strip() or "nothing"
                raise VsftpdError("vsftpd exited at start, saying %s; see %s and %s" % (said, self.output_file, self.config_file))
            if time.monotonic() > deadline:
                self.stop()
                raise VsftpdError("vsftpd did not listen on %s:%d within %.0f s; see %s" % (self.host, self.port, self.start_timeout, self.output_file))
            time.sleep(0.02)

    def stop(self):
        """Kill vsftpd and the session processes it forked; its private /etc, user included, goes with them."""
        if self._process is not None:
            tree = _process_tree(self._process.pid)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                _signal_all(_running(tree), sig)
                if _wait_until_gone(tree, timeout=5):
                    break
            self._process.wait()
            self._process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
