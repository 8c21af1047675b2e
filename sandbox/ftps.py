"""Embedded explicit-FTPS server for the Magrathea sandbox (pyftpdlib).

Owns the pure-Python stand-in for cdr.magrathea-telecom.co.uk:21: explicit
FTPS (AUTH TLS before USER/PASS, PROT P before any data connection), one
read-only user whose home is the sandbox's FTP root (CDR files in ``cdr/``),
passive data connections on 127.0.0.1, and the fault modes the client tests
need: a data connection that drops after N bytes, a connection limit that
answers 421, hostile names in directory listings, and a TLS 1.2 ceiling.
With ``log_path`` it writes a JSON-lines connection log: every control
connection accepted (with how many were then open), ended, or refused with 421,
so tests can show that a fleet never needed more than the account's limit.

pyftpdlib keeps its settings in class attributes, so every server builds its
own handler classes; two servers in one process never share settings.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.log import logger
from pyftpdlib.servers import FTPServer

# Names a malicious server could list: each must be refused by a client that writes files locally.
HOSTILE_NAMES = ("../x", "a/b", "..", ".", "back\\slash", "new\nline")
READ_ONLY_PERMISSIONS = "elr"  # change directory, list, retrieve
TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_HOSTILE_SIZE = 42


class _HostileListingFS(AbstractedFS):
    """A file system view whose directory listings also carry HOSTILE_NAMES, listed as small regular files."""

    def listdir(self, path):
        return list(super().listdir(path)) + list(HOSTILE_NAMES)

    def format_list(self, basedir, listing, ignore_err=True):
        yield from super().format_list(basedir, [name for name in listing if name not in HOSTILE_NAMES], ignore_err)
        stamp = time.strftime("%b %d %H:%M", time.gmtime())
        for name in listing:
            if name in HOSTILE_NAMES:
                yield ("-rw-r--r--   1 owner    group    %8d %s %s\r\n" % (_HOSTILE_SIZE, stamp, name)).encode("utf8")

    def format_mlsx(self, basedir, listing, perms, facts, ignore_err=True):
        yield from super().format_mlsx(basedir, [name for name in listing if name not in HOSTILE_NAMES], perms, facts, ignore_err)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        for name in listing:
            if name in HOSTILE_NAMES:
                yield ("modify=%s;perm=r;size=%d;type=file; %s\r\n" % (stamp, _HOSTILE_SIZE, name)).encode("utf8")


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


class _DropAfterBytes:
    """Data-channel mixin: a RETR sends at most ``drop_after_bytes`` bytes, then the connection just closes.

    The close skips the TLS close_notify and the control channel answers 426,
    as when a network drops a transfer; the client has to resume with REST.
    """

    drop_after_bytes = 0
    _truncating = None

    def use_sendfile(self):
        return False  # every byte must pass through the producer to be counted

    def push_with_producer(self, producer):
        if self.drop_after_bytes and self.file_obj is not None:
            self._truncating = producer = _TruncatingProducer(producer, self.drop_after_bytes)
        super().push_with_producer(producer)

    def handle_close(self):
        if self._truncating is None or not self._truncating.truncated or self._closed:
            super().handle_close()
            return
        self._error = True  # makes the TLS layer close without close_notify
        self.transfer_finished = False
        self._resp = ("426 Connection closed; transfer aborted after %d bytes." % self.drop_after_bytes, logger.info)
        self.close()


class ConnectionLog:
    """The control connections of one server: how many are open, and a JSON-lines record of each change."""

    def __init__(self, path=None):
        self.open = 0
        self.peak = 0
        self._handle = open(path, "a", encoding="utf-8") if path else None  # pylint: disable=consider-using-with

    def record(self, event, peer):
        if event == "connect":
            self.open += 1
            self.peak = max(self.peak, self.open)
        elif event == "close":
            self.open -= 1
        if self._handle is not None:
            entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                     "event": event, "peer": peer, "open": self.open}
            self._handle.write(json.dumps(entry) + "\n")
            self._handle.flush()

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _CountedConnections:
    """Control-channel mixin: tells the server's ConnectionLog about each connection accepted, ended or refused (421).

    pyftpdlib serves every connection from one thread, so the count needs no lock.
    """

    connection_log = None
    _counted = False

    def on_connect(self):
        self._counted = True
        self.connection_log.record("connect", self.remote_ip)
        super().on_connect()

    def handle_max_cons_per_ip(self):
        self.connection_log.record("refused", self.remote_ip)
        super().handle_max_cons_per_ip()

    def close(self):
        # Counted when the server lets go of the connection, as its own limit does (not when on_disconnect runs later).
        if self._counted:
            self._counted = False
            self.connection_log.record("close", self.remote_ip)
        super().close()


class EmbeddedFtpsServer:
    """An explicit-FTPS server on its own thread; ``start()`` binds it and sets ``port``, ``stop()`` ends it.

    ``tls_required=False`` gives a plain FTP server that does not know AUTH at
    all (it answers 500), for the client's refusal test.
    """

    def __init__(self, host="127.0.0.1", port=0, *, certfile=None, keyfile=None, username, password, root,
                 tls_required=True, drop_after_bytes=0, max_connections=0, hostile_names=False, tls_max_version=None,
                 failed_login_delay=1.0, banner="Magrathea sandbox CDR server ready.", log_path=None):
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
        self.log_path = log_path
        self.connections = None
        self._password = password
        self._server = None
        self._thread = None
        self._stopping = threading.Event()

    def __repr__(self):
        return "EmbeddedFtpsServer(%s:%s, root=%r, tls_required=%r)" % (self.host, self.port, self.root, self.tls_required)

    def ssl_context(self):
        """The server's TLS context: TLS 1.2 at least, ``tls_max_version`` at most."""
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.tls_max_version:
            context.set_max_proto_version(TLS_VERSIONS[self.tls_max_version])
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.use_certificate_chain_file(self.certfile)
        context.use_privatekey_file(self.keyfile)
        context.check_privatekey()
        return context

    def handler_class(self):
        """A control-channel handler class that carries this server's settings."""
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.username, self._password, homedir=self.root, perm=READ_ONLY_PERMISSIONS)
        data_base = TLS_DTPHandler if self.tls_required else DTPHandler
        data_handler = type("SandboxDataHandler", (_DropAfterBytes, data_base), {"drop_after_bytes": self.drop_after_bytes})
        settings = {
            "authorizer": authorizer,
            "banner": self.banner,
            "dtp_handler": data_handler,
            "abstracted_fs": _HostileListingFS if self.hostile_names else AbstractedFS,
            "auth_failed_timeout": self.failed_login_delay,
            "permit_foreign_addresses": False,
            "use_sendfile": False,
            "connection_log": self.connections,
        }
        if not self.tls_required:
            return type("SandboxPlainFtpHandler", (_CountedConnections, FTPHandler), settings)
        settings.update({
            "certfile": self.certfile,
            "keyfile": self.keyfile,
            "ssl_context": self.ssl_context(),
            "tls_control_required": True,
            "tls_data_required": True,
        })
        return type("SandboxFtpsHandler", (_CountedConnections, TLS_FTPHandler), settings)

    def start(self):
        """Bind, start serving on a daemon thread, and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("%r is already running" % self)
        self._stopping.clear()
        if not logger.handlers:
            # Without a handler pyftpdlib configures logging itself and prints every command; leave that to the application.
            logger.addHandler(logging.NullHandler())
        self.connections = ConnectionLog(self.log_path)
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
        self.connections.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
