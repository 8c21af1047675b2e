# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Magrathea sandbox: NTSAPI, FTPS and REST on loopback, for offline playbook development.

    python -m sandbox up --dir DIR [options]    start in the background, return once all three listen
    python -m sandbox down --dir DIR            stop everything that `up` started
    python -m sandbox serve --dir DIR [options] run in the foreground (what `up` starts)

`up` writes DIR/sandbox.env (shell-sourceable) and DIR/sandbox.json with the
hosts, ports, throwaway credentials, CA file and fingerprints to use.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Standard library only, like everything imported at the top: `down` and `--help` work without the server packages.
from sandbox.ntsapi import REFUSABLE

HOST = "127.0.0.1"
NAME = "localhost"
ACCOUNT = "MAG000001"
CDR_REMOTE_DIR = "/cdr"
START_TIMEOUT = 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_REQUIREMENTS_FILE = os.path.join(ROOT, "requirements.txt")
REQUIREMENTS_FILE = os.path.join(ROOT, "requirements-sandbox.txt")
# What the servers import beyond the standard library: (module, package on PyPI). Of these the collection itself
# needs only cryptography; the sandbox is for developing and testing playbooks.
SERVER_PACKAGES = (("cryptography", "cryptography"), ("pyftpdlib", "pyftpdlib"), ("OpenSSL", "pyOpenSSL"))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down", "serve"))
    parser.add_argument("--dir", required=True, help="state directory (CA, logs, CDR files, sandbox.env)")
    parser.add_argument("--ftps", choices=("embedded", "vsftpd"), default=os.environ.get("SANDBOX_FTPS", "embedded"),
                        help="FTPS server: the embedded Python one, or a real strict vsftpd (default: $SANDBOX_FTPS or embedded)")
    group = parser.add_argument_group("NTSAPI fault modes")
    group.add_argument("--ntsapi-delay", type=float, default=0.0, help="seconds before each reply")
    group.add_argument("--ntsapi-max-connections", type=int, default=0, help="refuse connections beyond N")
    group.add_argument("--ntsapi-drop-after", type=int, default=0,
                       help="on each connection, answer N commands (AUTH included), then drop the connection without a reply")
    group.add_argument("--ntsapi-garbage-after", type=int, default=0,
                       help="on each connection, answer N commands (AUTH included), then reply with lines that break the grammar")
    group = parser.add_argument_group("NTSAPI behaviours no public source shows (sandbox/ntsapi.py INVENTED)")
    group.add_argument("--ntsapi-framing", choices=("line", "read"), default="line",
                       help="take one command per line (default) or one command per read, as the real server may")
    group.add_argument("--ntsapi-stat-format", choices=("slots", "per-target"), default="slots",
                       help="STAT targets as t1|t2|t3 (default), or with <n> <Y|N> <expiry> before each, as Magrathea::API reads them")
    group.add_argument("--ntsapi-refuse", action="append", default=[], choices=REFUSABLE,
                       help="refuse this invented behaviour, as the real server may (repeatable)")
    group = parser.add_argument_group("FTPS options and fault modes")
    group.add_argument("--ftps-tls-max", choices=("1.2", "1.3"), default=None, help="cap the embedded server's TLS version")
    group.add_argument("--ftps-no-tls", action="store_true", help="embedded server without AUTH TLS (clients must refuse it)")
    group.add_argument("--ftps-drop-after-bytes", type=int, default=0, help="close every download's data connection after N bytes")
    group.add_argument("--ftps-max-connections", type=int, default=0, help="answer 421 beyond N concurrent connections")
    group.add_argument("--ftps-hostile-names", action="store_true", help="list names such as ../x and a/b (embedded server)")
    group.add_argument("--ftps-cut-listing-after-bytes", type=int, default=0,
                       help="cut every listing after N bytes without TLS close_notify, yet answer 226 (embedded server)")
    group.add_argument("--ftps-overlong-bytes", type=int, default=0, help="every download streams N bytes more than the file holds")
    group.add_argument("--ftps-vanishing-file", action="append", default=[], metavar="NAME",
                       help="list NAME as a file that is gone when fetched (550); repeatable (embedded server)")
    group.add_argument("--cdr-files", type=int, default=7, help="number of daily CDR ZIP files")
    group.add_argument("--cdr-size", type=int, default=None, help="approximate size of each CDR file in bytes")
    group = parser.add_argument_group("REST options")
    group.add_argument("--rest-fail-times", type=int, default=0, help="answer the first N requests with 503")
    group.add_argument("--rest-malformed", action="store_true", help="answer the balance with a body that is not JSON")
    group.add_argument("--funds", default="125.50", help="account funds")
    return parser.parse_args(argv)


class Sandbox:
    """The three services of one sandbox, sharing one CA and one number registry."""

    def __init__(self, args):
        # Imported here so that `down` works without the server dependencies, and `up` can name the missing ones.
        from sandbox import pki
        from sandbox.ftps import EmbeddedFtpsServer
        from sandbox.ntsapi import NtsapiServer
        from sandbox.registry import NumberRegistry
        from sandbox.rest import RestServer
        from sandbox.cdr import generate_cdr_files

        self.args = args
        self.dir = os.path.abspath(args.dir)
        self.paths = pki.write_server_pki(os.path.join(self.dir, "pki"))
        self.credentials = {service: ("sandbox-" + service.lower(), secrets.token_urlsafe(18)) for service in ("NTSAPI", "CDR", "REST")}
        registry = NumberRegistry(account=ACCOUNT)
        self.ntsapi = NtsapiServer(
            host=HOST, ssl_context=pki.server_context(self.paths["cert_file"], self.paths["key_file"]), registry=registry,
            username=self.credentials["NTSAPI"][0], password=self.credentials["NTSAPI"][1],
            log_path=os.path.join(self.dir, "ntsapi.log"), delay=args.ntsapi_delay,
            max_connections=args.ntsapi_max_connections, drop_after=args.ntsapi_drop_after, garbage_after=args.ntsapi_garbage_after,
            framing=args.ntsapi_framing, stat_format=args.ntsapi_stat_format, refuse=args.ntsapi_refuse,
        )
        self.rest = RestServer(
            host=HOST, ssl_context=pki.server_context(self.paths["cert_file"], self.paths["key_file"]), registry=registry,
            username=self.credentials["REST"][0], password=self.credentials["REST"][1], account=ACCOUNT,
            funds=args.funds, fail_times=args.rest_fail_times, malformed=args.rest_malformed,
        )
        ftp_root = os.path.join(self.dir, "ftp")
        self.scratch = None
        if args.ftps == "vsftpd":
            # vsftpd serves as a local user, who cannot search a private (0700) sandbox directory or its parents.
            self.scratch = ftp_root = tempfile.mkdtemp(prefix="magrathea-sandbox-ftp-")
            os.chmod(ftp_root, 0o755)
        self.cdr_local_dir = os.path.join(ftp_root, CDR_REMOTE_DIR.strip("/"))
        os.makedirs(self.cdr_local_dir, exist_ok=True)
        generate_cdr_files(self.cdr_local_dir, count=args.cdr_files, account=ACCOUNT, size=args.cdr_size)
        cdr_user, cdr_password = self.credentials["CDR"]
        if args.ftps == "vsftpd":
            from sandbox.vsftpd import VsftpdServer
            # vsftpd authenticates a real local user, made in vsftpd's private /etc: one per sandbox.
            cdr_user = "magsbx-" + secrets.token_hex(4)
            self.credentials["CDR"] = (cdr_user, cdr_password)
            self.ftps = VsftpdServer(host=HOST, certfile=self.paths["cert_file"], keyfile=self.paths["key_file"],
                                     username=cdr_user, password=cdr_password, root=ftp_root,
                                     workdir=os.path.join(self.dir, "vsftpd"), max_connections=args.ftps_max_connections)
        else:
            self.ftps = EmbeddedFtpsServer(host=HOST, certfile=self.paths["cert_file"], keyfile=self.paths["key_file"],
                                           username=cdr_user, password=cdr_password, root=ftp_root,
                                           tls_required=not args.ftps_no_tls, drop_after_bytes=args.ftps_drop_after_bytes,
                                           max_connections=args.ftps_max_connections, hostile_names=args.ftps_hostile_names,
                                           tls_max_version=args.ftps_tls_max, cut_listing_after_bytes=args.ftps_cut_listing_after_bytes,
                                           overlong_bytes=args.ftps_overlong_bytes, vanishing_names=args.ftps_vanishing_file,
                                           log_path=os.path.join(self.dir, "ftps.log"))

    def start(self):
        for server in (self.ntsapi, self.rest, self.ftps):
            server.start()

    def stop(self):
        for server in (self.ftps, self.rest, self.ntsapi):
            try:
                server.stop()
            except Exception as exc:  # pylint: disable=broad-exception-caught
                print("sandbox: stopping %s failed: %s" % (type(server).__name__, exc), file=sys.stderr)
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def settings(self):
        from cryptography import x509
        from sandbox import pki

        with open(self.paths["cert_file"], "rb") as handle:
            prints = pki.fingerprints(x509.load_pem_x509_certificate(handle.read()))
        ntsapi_user, ntsapi_password = self.credentials["NTSAPI"]
        cdr_user, cdr_password = self.credentials["CDR"]
        rest_user, rest_password = self.credentials["REST"]
        settings = {
            "MAGRATHEA_CA_FILE": self.paths["ca_file"],
            "MAGRATHEA_NTSAPI_HOST": NAME,
            "MAGRATHEA_NTSAPI_PORT": str(self.ntsapi.port),
            "MAGRATHEA_NTSAPI_USERNAME": ntsapi_user,
            "MAGRATHEA_NTSAPI_PASSWORD": ntsapi_password,
            "MAGRATHEA_NTSAPI_LOG": os.path.join(self.dir, "ntsapi.log"),
            "MAGRATHEA_CDR_HOST": NAME,
            "MAGRATHEA_CDR_PORT": str(self.ftps.port),
            "MAGRATHEA_CDR_USERNAME": cdr_user,
            "MAGRATHEA_CDR_PASSWORD": cdr_password,
            "MAGRATHEA_CDR_DIR": CDR_REMOTE_DIR,
            "MAGRATHEA_CDR_LOCAL_DIR": self.cdr_local_dir,
            "MAGRATHEA_CDR_SHA1": prints["sha1"],
            "MAGRATHEA_CDR_SHA256": prints["sha256"],
            "MAGRATHEA_CDR_SERVER": self.args.ftps,
            "MAGRATHEA_CDR_LOG": os.path.join(self.dir, "ftps.log" if self.args.ftps == "embedded" else "vsftpd/vsftpd.log"),
            "MAGRATHEA_REST_URL": "https://%s:%d/v1/" % (NAME, self.rest.port),
            "MAGRATHEA_REST_LOG": os.path.join(self.dir, "rest.log"),
            "MAGRATHEA_REST_USERNAME": rest_user,
            "MAGRATHEA_REST_PASSWORD": rest_password,
            "MAGRATHEA_ACCOUNT": ACCOUNT,
        }
        if self.args.ftps == "embedded":
            # The embedded server's connection log (JSON lines: connect, close, refused with 421, and how many were open).
            settings["MAGRATHEA_CDR_LOG"] = os.path.join(self.dir, "ftps.log")
        return settings


def write_private(path, text):
    from sandbox import pki

    pki.write_private(path, text.encode())


def serve(args):
    sandbox = Sandbox(args)
    # One line per REST request (method, path, status, user; never a password), for counting what a run asked for.
    rest_log = logging.FileHandler(os.path.join(sandbox.dir, "rest.log"), encoding="utf-8")
    rest_log.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("sandbox.rest").addHandler(rest_log)
    logging.getLogger("sandbox.rest").setLevel(logging.INFO)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    sandbox.start()
    try:
        settings = sandbox.settings()
        # The files hold throwaway passwords: 0600, like any credential file.
        write_private(os.path.join(sandbox.dir, "sandbox.json"), json.dumps(settings, indent=2, sort_keys=True) + "\n")
        write_private(os.path.join(sandbox.dir, "sandbox.env"),
                      "".join("export %s=%s\n" % (key, shlex.quote(value)) for key, value in sorted(settings.items())))
        print("sandbox: listening (NTSAPI %s, FTPS %s [%s], REST %s)"
              % (settings["MAGRATHEA_NTSAPI_PORT"], settings["MAGRATHEA_CDR_PORT"], args.ftps, settings["MAGRATHEA_REST_URL"]), flush=True)
        stopped.wait()
    finally:
        sandbox.stop()


def up(args, argv):
    directory = os.path.abspath(args.dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if read_pid(directory):
        down(args)
    for name in ("sandbox.json", "sandbox.env"):
        if os.path.exists(os.path.join(directory, name)):
            os.unlink(os.path.join(directory, name))
    log_path = os.path.join(directory, "sandbox.log")
    serve_argv = [sys.executable, "-m", "sandbox", "serve"] + argv[1:]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(serve_argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), start_new_session=True)
    with open(os.path.join(directory, "sandbox.pid"), "w", encoding="ascii") as handle:
        handle.write("%d\n" % process.pid)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(directory, "sandbox.env")):
            print("sandbox: up in %s; `set -a; . %s/sandbox.env; set +a` to use it" % (directory, directory))
            return 0
        if process.poll() is not None:
            break
        time.sleep(0.05)
    else:
        process.terminate()
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        tail = handle.read()[-3000:]
    print("sandbox: failed to start (see %s):\n%s" % (log_path, tail), file=sys.stderr)
    return 1


def read_pid(directory):
    try:
        with open(os.path.join(directory, "sandbox.pid"), encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def down(args):
    directory = os.path.abspath(args.dir)
    pid = read_pid(directory)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and read_pid(directory):
            time.sleep(0.05)
        if read_pid(directory):
            os.killpg(pid, signal.SIGKILL)
    for name in ("sandbox.pid", "sandbox.env", "sandbox.json"):
        if os.path.exists(os.path.join(directory, name)):
            os.unlink(os.path.join(directory, name))
    print("sandbox: down (%s)" % directory)
    return 0


def missing_packages():
    """The PyPI names of the server packages this Python cannot import."""
    return [package for module, package in SERVER_PACKAGES if importlib.util.find_spec(module) is None]


def install_hint(missing):
    if os.path.exists(REQUIREMENTS_FILE):
        # requirements.txt pins cryptography (the collection's own requirement); requirements-sandbox.txt the rest.
        files = [RUNTIME_REQUIREMENTS_FILE] if "cryptography" in missing else []
        command = "%s -m pip install %s" % (sys.executable, " ".join("-r " + name for name in files + [REQUIREMENTS_FILE]))
    else:
        command = "%s -m pip install %s" % (sys.executable, " ".join(missing))
    return ("sandbox: this Python (%s) cannot import %s, which the sandbox needs to serve NTSAPI, FTPS and REST\n"
            "(the magrathea.secure collection itself needs neither pyftpdlib nor pyOpenSSL). Install them with:\n    %s"
            % (sys.executable, ", ".join(missing), command))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    missing = missing_packages() if args.action in ("up", "serve") else []
    if missing:
        print(install_hint(missing), file=sys.stderr)
        return 1
    if args.action == "serve":
        serve(args)
        return 0
    if args.action == "up":
        return up(args, argv)
    return down(args)


if __name__ == "__main__":
    sys.exit(main())
