# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Embedded explicit-FTPS server for the Magrathea sandbox (pyftpdlib).

Owns the pure-Python stand-in for cdr.magrathea-telecom.co.uk:21: explicit
FTPS (AUTH TLS before USER/PASS, PROT P before any data connection), one
read-only user whose home is the sandbox's FTP root (CDR files in ``cdr/``),
passive data connections on 127.0.0.1, a JSON-lines log of connections
(accepted, with how many were then open; ended; refused with 421) and logins,
and the fault modes the client tests need: a data connection that drops after N
bytes, a listing cut short without TLS close_notify yet answered 226, a
download that streams more than the file holds, listed files that vanish
before they are fetched (550), a listing padded with many entries or with
lines in a format clients do not know, another
certificate on the data connections than on the control connection, data connections that trickle, no MLSD
(LIST only, as vsftpd), a connection limit that answers 421, hostile names in
directory listings, and a TLS 1.2 ceiling.

pyftpdlib keeps its settings in class attributes, so every server builds its
own handler classes; two servers in one process never share settings.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import threading
import time

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler, ThrottledDTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.log import logger
from pyftpdlib.servers import FTPServer

# Names a malicious server could list: each must be refused by a client that writes files locally.
HOSTILE_NAMES = ("../x", "a/b", "..", ".", "back\\slash", "new\nline")
READ_ONLY_PERMISSIONS = "elr"  # change directory, list, retrieve
TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_HOSTILE_SIZE = 42
_VANISHING_SIZE = 1000


class _ListingExtrasFS(AbstractedFS):
    """A file system view whose directory listings also carry entries that are not files on disk.

    ``extra_names``: (name, size) listed as regular files after the real ones: hostile names a client must refuse,
    or names of files that vanish before they are fetched (RETR, SIZE and MDTM answer 550). ``padding``: that many
    more listed files named ``padding-NNNNNNNN.txt``, produced line by line as the listing streams. ``raw_lines``:
    lines sent as they are, such as a line in a format a client does not know.
    """

    extra_names = ()
    padding = 0
    raw_lines = ()

    def _extras(self, line_of):
        for name, size in self.extra_names:
            yield line_of(name, size)
        for index in range(self.padding):
            yield line_of("padding-%08d.txt" % index, 1000 + index % 1000)
        for line in self.raw_lines:
            yield (line + "\r\n").encode("utf8")

    def format_list(self, basedir, listing, ignore_err=True):
        yield from super().format_list(basedir, listing, ignore_err)
        stamp = time.strftime("%b %d %H:%M", time.gmtime())
        yield from self._extras(lambda name, size: ("-rw-r--r--   1 owner    group    %8d %s %s\r\n" % (size, stamp, name)).encode("utf8"))

    def format_mlsx(self, basedir, listing, perms, facts, ignore_err=True):
        yield from super().format_mlsx(basedir, listing, perms, facts, ignore_err)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        yield from self._extras(lambda name, size: ("modify=%s;perm=r;size=%d;type=file; %s\r\n" % (stamp, size, name)).encode("utf8"))


class _TruncatingProducer:
    """Passes on at most ``limit`` bytes of a file producer and remembers whether it cut anything."""

    def __init__(self, producer, limit):
        self._producer = producer
        self._remaining = limit
        self.truncated = False

    def more(self):
        if self.truncated:
            return b""
        data = self._producer.more()
        if len(data) > self._remaining:
            self.truncated = True
            data = data[:self._remaining]
        self._remaining -= len(data)
        return data


class _OverlongProducer:
    """Passes on a file producer, then ``extra`` bytes more than the file holds, as a server whose file grows endlessly."""

    chunk = 64 * 1024

    def __init__(self, producer, extra):
        self._producer = producer
        self._extra = extra

    def more(self):
        data = self._producer.more()
        if data or self._extra <= 0:
            return data
        count = min(self.chunk, self._extra)
        self._extra -= count
        return b"\xa5" * count


class _ThrottledTlsData(TLS_DTPHandler, ThrottledDTPHandler):
    """A TLS data connection that sends at most ``write_limit`` bytes a second, in small chunks."""


class _FaultyData:
    """Data-channel mixin with the sandbox's data-connection faults.

    ``drop_after_bytes``: a RETR sends at most that many bytes, then the connection just closes: no TLS
    close_notify, and the control channel answers 426, as when a network drops a transfer (a client resumes with REST).
    ``cut_listing_after_bytes``: a listing (LIST, MLSD, NLST) is cut after that many bytes, again without close_notify,
    but the control channel answers ``226 Transfer complete``: only the missing TLS shutdown shows it is incomplete.
    ``overlong_bytes``: a RETR sends that many bytes more than the file holds.
    ``data_ssl_context``: the TLS context of data connections when it differs from the control connection's.
    """

    drop_after_bytes = 0
    cut_listing_after_bytes = 0
    overlong_bytes = 0
    data_ssl_context = None
    _truncating = None
    _listing_cut = False

    def secure_connection(self, ssl_context):
        super().secure_connection(self.data_ssl_context or ssl_context)

    def use_sendfile(self):
        return False  # every byte must pass through the producer to be counted

    def push_with_producer(self, producer):
        if self.file_obj is not None:
            if self.overlong_bytes:
                producer = _OverlongProducer(producer, self.overlong_bytes)
            if self.drop_after_bytes:
                self._truncating = producer = _TruncatingProducer(producer, self.drop_after_bytes)
        elif self.cut_listing_after_bytes:
            self._truncating = producer = _TruncatingProducer(producer, self.cut_listing_after_bytes)
            self._listing_cut = True
        super().push_with_producer(producer)

    def handle_close(self):
        if self._truncating is None or not self._truncating.truncated or self._closed:
            super().handle_close()
            return
        self._error = True  # makes the TLS layer close without close_notify
        if self._listing_cut:
            self.transfer_finished = True
            self._resp = ("226 Transfer complete.", logger.info)
        else:
            self.transfer_finished = False
            self._resp = ("426 Connection closed; transfer aborted after %d bytes." % self.drop_after_bytes, logger.info)
        self.close()


class ServerEvents:
    """What a server saw: control connections accepted (``open`` now, ``peak`` at most), ended, refused with 421, logins,
    and how often each command was received (``commands``, by name); with ``log_path``, one JSON line per event.

    pyftpdlib serves every connection from one thread; the lock is for readers in other threads.
    """

    def __init__(self, log_path=None):
        self.log_path = log_path
        self.connections = 0
        self.refused = 0
        self.logins = 0
        self.open = 0
        self.peak = 0
        self.commands = collections.Counter()
        self._lock = threading.Lock()
        if log_path:
            # The log exists from the start: a reader may look before the first connection.
            with open(log_path, "a", encoding="utf-8"):
                pass

    def record(self, event, peer, **detail):
        with self._lock:
            if event == "connect":
                self.connections += 1
                self.open += 1
                self.peak = max(self.peak, self.open)
            elif event == "close":
                self.open -= 1
            elif event == "refused":
                self.refused += 1
            elif event == "login":
                self.logins += 1
            if self.log_path:
                entry = dict({"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                              "event": event, "peer": peer, "open": self.open}, **detail)
                with open(self.log_path, "a", encoding="utf-8") as log:
                    log.write(json.dumps(entry) + "\n")


class _CountingControl:
    """Control-channel mixin that tells ``events`` (a ServerEvents) of every connection, end, refusal, login and command."""

    events = None
    _counted = False

    def on_connect(self):
        self._counted = True
        self.events.record("connect", "%s:%s" % (self.remote_ip, self.remote_port))
        super().on_connect()

    def handle_max_cons_per_ip(self):
        self.events.record("refused", "%s:%s" % (self.remote_ip, self.remote_port))
        super().handle_max_cons_per_ip()

    def on_login(self, username):
        self.events.record("login", "%s:%s" % (self.remote_ip, self.remote_port), user=username)
        super().on_login(username)

    def pre_process_command(self, line, cmd, arg):
        self.events.commands[cmd] += 1
        super().pre_process_command(line, cmd, arg)

    def close(self):
        # Counted when the server lets go of the connection, as its own limit does (not when on_disconnect runs later).
        if self._counted:
            self._counted = False
            self.events.record("close", "%s:%s" % (self.remote_ip, self.remote_port))
        super().close()


class EmbeddedFtpsServer:
    """An explicit-FTPS server on its own thread; ``start()`` binds it and sets ``port``, ``stop()`` ends it.

    ``tls_required=False`` gives a plain FTP server that does not know AUTH at
    all (it answers 500), for the client's refusal test.
    """

    def __init__(self, host="127.0.0.1", port=0, *, certfile=None, keyfile=None, username, password, root,
                 tls_required=True, drop_after_bytes=0, max_connections=0, hostile_names=False, tls_max_version=None,
                 failed_login_delay=1.0, banner="Magrathea sandbox CDR server ready.", mlsd=True, cut_listing_after_bytes=0,
                 overlong_bytes=0, vanishing_names=(), listing_padding=0, raw_listing_lines=(), data_certfile=None, data_keyfile=None,
                 log_path=None, data_bytes_per_second=0):
        if tls_required and not (certfile and keyfile):
            raise ValueError("an FTPS server needs certfile and keyfile")
        if tls_max_version is not None and tls_max_version not in TLS_VERSIONS:
            raise ValueError("tls_max_version must be one of %s, not %r" % (", ".join(TLS_VERSIONS), tls_max_version))
        self.host = host
        self.port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self.username = username
        self.root = root
        self.tls_required = tls_required
        self.drop_after_bytes = drop_after_bytes
        self.max_connections = max_connections
        self.hostile_names = hostile_names
        self.tls_max_version = tls_max_version
        self.failed_login_delay = failed_login_delay
        self.banner = banner
        self.mlsd = mlsd
        self.cut_listing_after_bytes = cut_listing_after_bytes
        self.overlong_bytes = overlong_bytes
        self.vanishing_names = tuple(vanishing_names)
        self.listing_padding = listing_padding
        self.raw_listing_lines = tuple(raw_listing_lines)
        self.data_certfile = data_certfile
        self.data_keyfile = data_keyfile or data_certfile
        self.data_bytes_per_second = data_bytes_per_second
        self.events = ServerEvents(log_path)
        self._password = password
        self._server = None
        self._thread = None
        self._stopping = threading.Event()

    def __repr__(self):
        return "EmbeddedFtpsServer(%s:%s, root=%r, tls_required=%r)" % (self.host, self.port, self.root, self.tls_required)

    def ssl_context(self, certfile=None, keyfile=None):
        """The server's TLS context (another certificate if given): TLS 1.2 at least, ``tls_max_version`` at most."""
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.tls_max_version:
            context.set_max_proto_version(TLS_VERSIONS[self.tls_max_version])
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.use_certificate_chain_file(certfile or self.certfile)
        context.use_privatekey_file(keyfile or self.keyfile)
        context.check_privatekey()
        return context

    def handler_class(self):
        """A control-channel handler class that carries this server's settings."""
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.username, self._password, homedir=self.root, perm=READ_ONLY_PERMISSIONS)
        data_base = TLS_DTPHandler if self.tls_required else DTPHandler
        if self.data_bytes_per_second:
            data_base = _ThrottledTlsData if self.tls_required else ThrottledDTPHandler
        data_handler = type("SandboxDataHandler", (_FaultyData, data_base), {
            "write_limit": self.data_bytes_per_second,
            "drop_after_bytes": self.drop_after_bytes,
            "cut_listing_after_bytes": self.cut_listing_after_bytes,
            "overlong_bytes": self.overlong_bytes,
            "data_ssl_context": self.ssl_context(self.data_certfile, self.data_keyfile) if self.data_certfile else None,
        })
        extras = tuple((name, _HOSTILE_SIZE) for name in HOSTILE_NAMES) if self.hostile_names else ()
        extras += tuple((name, _VANISHING_SIZE) for name in self.vanishing_names)
        view = type("SandboxFS", (_ListingExtrasFS,), {"extra_names": extras, "padding": self.listing_padding,
                                                       "raw_lines": self.raw_listing_lines})
        settings = {
            "authorizer": authorizer,
            "banner": self.banner,
            "dtp_handler": data_handler,
            "abstracted_fs": view,
            "auth_failed_timeout": self.failed_login_delay,
            "permit_foreign_addresses": False,
            "use_sendfile": False,
            "events": self.events,
        }
        control_base = TLS_FTPHandler if self.tls_required else FTPHandler
        if not self.mlsd:
            # As vsftpd: no MLSD or MLST (FEAT stops offering them), so clients list with LIST.
            settings["proto_cmds"] = {name: spec for name, spec in control_base.proto_cmds.items() if name not in ("MLSD", "MLST")}
        if not self.tls_required:
            return type("SandboxPlainFtpHandler", (_CountingControl, control_base), settings)
        settings.update({
            "certfile": self.certfile,
            "keyfile": self.keyfile,
            "ssl_context": self.ssl_context(),
            "tls_control_required": True,
            "tls_data_required": True,
        })
        return type("SandboxFtpsHandler", (_CountingControl, control_base), settings)

    def start(self):
        """Bind, start serving on a daemon thread, and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("%r is already running" % self)
        self._stopping.clear()
        if not logger.handlers:
            # Without a handler pyftpdlib configures logging itself and prints every command; leave that to the application.
            logger.addHandler(logging.NullHandler())
        self._server = FTPServer((self.host, self.port), self.handler_class(), ioloop=IOLoop())
        # Every sandbox client comes from 127.0.0.1, so the per-address limit counts control connections exactly.
        self._server.max_cons_per_ip = self.max_connections
        self.port = self._server.address[1]
        self._thread = threading.Thread(target=self._serve, name="ftps-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def _serve(self):
        try:
            while not self._stopping.is_set():
                self._server.ioloop.loop(timeout=0.2, blocking=False)
        finally:
            self._server.close_all()

    def stop(self):
        """Close the listener and every open connection; waits for the server thread."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(timeout=10)
        self._thread = None
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
