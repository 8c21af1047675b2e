# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Imitation of Magrathea's NTSAPI (the number-management line protocol) for the sandbox.

Owns the wire: the TLS listener, one thread per connection, the greeting, AUTH
and QUIT, the command dispatch table over a NumberRegistry, multi-line replies,
the JSON-lines command log (AUTH password and IAX2 secrets redacted), the
framing (one command per line, or one per read), and the fault modes the client
tests need (delay, connection limit, dropped connection, garbage reply).
Published reply texts are kept word for word; what no public source shows is
listed in INVENTED, with the reason for each, and some of it can be refused
(``refuse``) to test that clients keep working when the real server differs.
"""

from __future__ import annotations

import datetime
import hmac
import itertools
import json
import logging
import re
import socket
import ssl
import threading
import time

from sandbox.registry import EMERGENCY_FIELDS, EMERGENCY_STATUS_TEXT, NumberRegistry, NtsError

LOG = logging.getLogger("sandbox.ntsapi")

GREETING = "0 Magrathea NTS GW (ntsapi.c(V0.1))"
WELCOME = "0 Access granted. Welcome (cl=500)"
GOODBYE = "0 Many thanks. Goodbye"
ACCESS_DENIED = "1 Access denied"
NOT_AUTHENTICATED = "1 Not authenticated: send AUTH first"
TOO_MANY_CONNECTIONS = "1 Too many connections: try again later"
GARBAGE = "Magrathea gateway hiccup, reply lost"
END_OF_LIST = "1 End of list"
END_OF_DATA = "1 End of data"
REDACTED = "********"
MAX_LINE = 4096
HANDSHAKE_TIMEOUT = 10.0
ALIST_LIMIT = 1000
IAX2_SECRET = re.compile(r"(I:[^\s:@|]*:)[^\s@|]+(?=@)")

# What this imitation does that no public source (the guide, Net::Magrathea, Magrathea::API, magrathea-cli) shows,
# and why. The modules must keep working when the real server differs: they name the option they could not apply and
# carry on with the others. The names marked refusable can be switched off with ``refuse`` (--ntsapi-refuse NAME).
INVENTED = {
    "feat-list": ("FEAT <n> alone lists the enabled features: 0 Features DJ, or 0 Features none",
                  "published: FEAT <n> <letter> only; a declarative module must read features before it changes them"),
    "feat-off": ("FEAT <n> -<letter> switches a feature off",
                 "no published way to switch a feature off"),
    "orde-periods": ("ORDE periods are HHMM or HHMM-HHMM, comma separated (0800-1800,1900)",
                     "the period format of ORDE is not published (Magrathea::API shows ORDE <n> 1 0000 only)"),
    "p-form-required": ("STAT, SET, ORDE and INFO refuse the 0 form of a ported number and want P<digits>",
                        "a secondary source says those commands take the P form; whether the 0 form is refused is unknown"),
    "pattern-length": ("ALLO and ALTEN take a pattern exactly as long as a number (10 or 11 characters, _ for a digit)",
                       "clients pad a prefix to 11 with _; the server's rule for shorter patterns is not published"),
    "alten-reply": ("ALTEN answers 0 <all but the last digit>_ Range found, and reserves nothing",
                    "Magrathea::API 0.9 reads the first word as digits ending in _ and then sends ALLO and ACTI for each of "
                    "the ten; the text after it is not published"),
    "reply-texts": ("success texts of ORDE, SPIN, FEAT, INFO 999 CREATE and fields, BLKDEAC, BLKREAC (Order updated OK, "
                    "Feature D enabled, Record created, NAME updated, ...)",
                    "not published; clients read the digit, not the text"),
    "refusal-texts": ("refusal texts (Unknown command, Line too long, Not authenticated, Too many connections, Number ... is "
                      "not allocated to this account, Invalid ...)",
                      "not published; clients read the digit, not the text"),
    "line-framing": ("one command per line (CR LF or LF); framing='read' (--ntsapi-framing read) takes one command per read",
                     "the real framing is unknown: magrathea-cli and a public Python client send no line ending at all"),
    "stat-format": ("STAT lists the targets as t1|t2|t3; stat_format='per-target' (--ntsapi-stat-format per-target) repeats "
                    "<n> <Y|N> <expiry> before each",
                    "magrathea-cli reads the first form, Magrathea::API (Status.pm) the second"),
}
REFUSABLE = ("feat-list", "feat-off", "orde-periods")


def redact(line):
    """A command or reply line as it may be logged: the AUTH password and every IAX2 secret become ********."""
    words = line.split(None, 2)
    if words and words[0].upper() == "AUTH" and len(words) > 1:
        return "%s %s" % (words[0], REDACTED) if len(words) == 2 else "%s %s %s" % (words[0], words[1], REDACTED)
    return IAX2_SECRET.sub(lambda match: match.group(1) + REDACTED, line)


def _words(args, usage, least, most=None):
    """Split ``args`` into between ``least`` and ``most`` words, else NtsError naming the usage."""
    words = args.split()
    if not least <= len(words) <= (least if most is None else most):
        raise NtsError("Usage: " + usage)
    return words


def _positive(text, usage):
    if not text.isdigit() or int(text) < 1:
        raise NtsError("Usage: " + usage)
    return int(text)


class CommandLog:
    """JSON-lines log of every command and the first line of its reply, flushed per line."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._handle = open(path, "a", encoding="utf-8") if path else None  # pylint: disable=consider-using-with

    def record(self, conn, command, reply):
        if self._handle is None:
            return
        entry = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "conn": conn,
            "command": None if command is None else redact(command),
            "reply": None if reply is None else redact(reply),
        }
        with self._lock:
            self._handle.write(json.dumps(entry) + "\n")
            self._handle.flush()

    def close(self):
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


class NtsapiCommands:
    """The authenticated command set: each handler takes the text after the command word and returns reply lines."""

    def __init__(self, registry, stat_format="slots", refuse=()):
        unknown = set(refuse) - set(REFUSABLE)
        if unknown:
            raise ValueError("cannot refuse %s; refusable: %s" % (", ".join(sorted(unknown)), ", ".join(REFUSABLE)))
        if stat_format not in ("slots", "per-target"):
            raise ValueError("stat_format is slots or per-target, not %r" % (stat_format,))
        self.registry = registry
        self.stat_format = stat_format
        self.refuse = frozenset(refuse)
        self.table = {
            "ALLO": self.allo, "ALTEN": self.alten, "ACTI": self.acti, "DEAC": self.deac, "REAC": self.reac, "STAT": self.stat,
            "SET": self.set, "ORDE": self.orde, "SPIN": self.spin, "FEAT": self.feat, "INFO": self.info,
            "ALIST": self.alist, "BLKACTI": self.blkacti, "BLKINFO": self.blkinfo, "BLKDEAC": self.blkdeac,
            "BLKREAC": self.blkreac,
        }

    def run(self, word, args):
        handler = self.table.get(word)
        if handler is None:
            return ["1 Unknown command %s" % word]
        try:
            return handler(args)
        except NtsError as error:
            return ["%d %s" % (error.code, error)]

    def allo(self, args):
        (pattern,) = _words(args, "ALLO <number or pattern with _>", 1)
        return ["0 %s Allocated" % self.registry.allocate(pattern)]

    def alten(self, args):
        (pattern,) = _words(args, "ALTEN <number pattern with _>", 1)
        return ["0 %s Range found" % self.registry.find_range(pattern)]

    def acti(self, args):
        (number,) = _words(args, "ACTI <number>", 1)
        self.registry.activate(number)
        return ["0 Number activated OK"]

    def deac(self, args):
        (number,) = _words(args, "DEAC <number>", 1)
        self.registry.deactivate(number)
        return ["0 Number deactivated OK"]

    def reac(self, args):
        (number,) = _words(args, "REAC <number>", 1)
        self.registry.reactivate(number)
        return ["0 Number reactivated OK"]

    def stat(self, args):
        (number,) = _words(args, "STAT <number>", 1)
        view = self.registry.describe(number)
        head = "%s %s %s" % (view["number"], "Y" if view["active"] else "N", view["expiry"].isoformat())
        if self.stat_format == "slots":
            return ["0 %s %s" % (head, "|".join(view["targets"]))]
        # Magrathea::API's reading: each target piece carries the number, flag and expiry; an empty slot is an empty piece.
        pieces = [" ".join(part for part in (head, target) if part) if index == 0 or target else ""
                  for index, target in enumerate(view["targets"])]
        return ["0 " + "|".join(pieces)]

    def set(self, args):
        usage = "SET <number> <index 1-3> <target>"
        number, index, target = _words(args, usage, 3)
        self.registry.set_target(number, _positive(index, usage), target)
        return ["0 Number updated OK"]

    def orde(self, args):
        usage = "ORDE <number> <index 1-3> <periods>"
        number, index, periods = _words(args, usage, 3)
        if "orde-periods" in self.refuse:
            raise NtsError("Invalid periods %s" % periods)
        self.registry.set_order(number, _positive(index, usage), periods)
        return ["0 Order updated OK"]

    def spin(self, args):
        words = _words(args, "SPIN <number> [pin]", 1, 2)
        pin = words[1] if len(words) == 2 else ""
        self.registry.set_pin(words[0], pin)
        return ["0 PIN set" if pin else "0 PIN removed"]

    def feat(self, args):
        """FEAT <n> lists the features, FEAT <n> <L> enables L, FEAT <n> -<L> disables it."""
        words = _words(args, "FEAT <number> [[-]<letter>]", 1, 2)
        if ("feat-list" in self.refuse and len(words) == 1) or ("feat-off" in self.refuse and words[-1].startswith("-")):
            raise NtsError("Usage: FEAT <number> <letter>")
        if len(words) == 1:
            return ["0 Features %s" % (self.registry.features(words[0]) or "none")]
        letter = words[1].lstrip("-")
        enabled = not words[1].startswith("-")
        self.registry.set_feature(words[0], letter, enabled)
        return ["0 Feature %s %s" % (letter, "enabled" if enabled else "disabled")]

    def info(self, args):
        words = args.split(None, 2)
        if len(words) < 2 or words[1].upper() not in ("GEN", "999"):
            raise NtsError("Usage: INFO <number> GEN <text> | INFO <number> 999 <subcommand> [value]")
        number, kind = words[0], words[1].upper()
        rest = words[2] if len(words) == 3 else ""
        if kind == "GEN":
            self.registry.set_general_info(number, rest.strip())
            return ["0 Information updated"]
        return self.emergency(number, rest)

    def emergency(self, number, rest):
        words = rest.split(None, 1)
        sub = words[0].upper() if words else ""
        value = words[1] if len(words) == 2 else ""
        if sub == "CREATE":
            self.registry.emergency_create(number)
            return ["0 Record created"]
        if sub == "VALIDATE":
            if self.registry.emergency_validate(number) == 0:
                return ["0 Information Valid"]
            return ["1 Parsed OK. Check later for status."]
        if sub == "STATUS":
            status = self.registry.emergency_status(number)
            return ["%d %s" % (status, EMERGENCY_STATUS_TEXT[status])]
        if sub == "DATA":
            return ["0 %s %s" % pair for pair in self.registry.emergency_data(number)] + [END_OF_DATA]
        if sub in EMERGENCY_FIELDS:
            self.registry.emergency_set(number, sub, value)
            return ["0 %s updated" % sub]
        raise NtsError("Unknown 999 subcommand %s" % (sub or "(none)"), code=2)

    def alist(self, args):
        usage = "ALIST <prefix> [quantity]"
        words = _words(args, usage, 1, 2)
        quantity = _positive(words[1], usage) if len(words) == 2 else 10
        numbers = self.registry.available(words[0], min(quantity, ALIST_LIMIT))
        return ["0 %s" % number for number in numbers] + [END_OF_LIST]

    def blkacti(self, args):
        usage = "BLKACTI <prefix> <quantity>"
        prefix, quantity = _words(args, usage, 2)
        return ["0 %s %s" % self.registry.activate_block(prefix, _positive(quantity, usage))]

    def blkinfo(self, args):
        (number,) = _words(args, "BLKINFO <number>", 1)
        return ["0 %s %d" % self.registry.block_info(number)]

    def blkdeac(self, args):
        (first,) = _words(args, "BLKDEAC <first number>", 1)
        self.registry.deactivate_block(first)
        return ["0 Block deactivated OK"]

    def blkreac(self, args):
        (first,) = _words(args, "BLKREAC <first number>", 1)
        self.registry.reactivate_block(first)
        return ["0 Block reactivated OK"]


class ConnectionClosed(Exception):
    """The session ends without another reply (QUIT, fault mode, or the peer went away)."""


class NtsapiSession:
    """One client connection: greeting, AUTH state, then one reply per command line, in order."""

    def __init__(self, server, sock, conn_id):
        self.server = server
        self.sock = sock
        self.conn_id = conn_id
        self.authenticated = False
        self.auth_tried = False
        self.commands_seen = 0

    def serve(self):
        reader = self.sock.makefile("rb")
        try:
            self.send([GREETING])
            while True:
                raw = reader.readline(MAX_LINE + 1) if self.server.framing == "line" else self.sock.recv(MAX_LINE + 1)
                if not raw:
                    return
                if len(raw) > MAX_LINE:
                    self.send(["1 Line too long"])
                    return
                text = raw.decode("utf-8", "replace")
                # Framed per read: the read is the command, up to its first line break; more lines in the same read are never seen.
                self.handle(text.split("\n", 1)[0].rstrip("\r\n") if self.server.framing == "read" else text.rstrip("\r\n"))
        except ConnectionClosed:
            return
        finally:
            reader.close()

    def handle(self, line):
        self.commands_seen += 1
        fault = self.server.fault_for(self.commands_seen)
        if fault == "drop":
            self.server.command_log.record(self.conn_id, line, None)
            _close(self.sock, graceful=False)  # like a network failure: no reply, no close_notify
            raise ConnectionClosed()
        if fault == "garbage":
            reply, closing = [GARBAGE], False
        else:
            reply, closing = self.respond(line)
        self.server.command_log.record(self.conn_id, line, reply[0])
        self.send(reply)
        if closing:
            raise ConnectionClosed()

    def respond(self, line):
        """Reply lines for one command, and whether the session ends after them."""
        words = line.split(None, 1)
        word = words[0].upper() if words else ""
        args = words[1] if len(words) == 2 else ""
        if word == "QUIT":
            return [GOODBYE], True
        if word == "AUTH":
            return [self.auth(args)], False
        if not self.authenticated:
            return [NOT_AUTHENTICATED], False
        return self.server.commands.run(word, args), False

    def auth(self, args):
        if self.authenticated:
            return "1 Already authenticated"
        if self.auth_tried:
            return ACCESS_DENIED + ": one AUTH attempt per connection"
        self.auth_tried = True
        words = args.split(None, 1)
        if len(words) == 2 and self.server.credentials_match(words[0], words[1].strip()):
            self.authenticated = True
            return WELCOME
        LOG.info("connection %d: AUTH refused", self.conn_id)
        return ACCESS_DENIED

    def send(self, lines):
        if self.server.delay:
            time.sleep(self.server.delay)
        eol = self.server.line_ending
        try:
            self.sock.sendall("".join(line + eol for line in lines).encode("utf-8"))
        except (OSError, ValueError) as error:
            raise ConnectionClosed() from error


class NtsapiServer:
    """The NTSAPI listener: TLS on the whole session, one daemon thread per connection.

    Fault modes for client tests: ``delay`` seconds before every reply (greeting
    included); ``max_connections`` concurrent sessions, extra ones get a non-zero
    line and are closed; ``drop_after`` N commands on a connection, the next one
    closes the socket without a reply; ``garbage_after`` N commands, every later
    reply is a line outside the ``^(\\d)\\s+(.*)$`` grammar. 0 turns a mode off.

    Where the real server is unknown (see INVENTED): ``framing`` is ``line`` (a command per line) or ``read`` (a command
    per read, as clients that send no line ending suggest); ``stat_format`` is ``slots`` or ``per-target``; ``refuse``
    names invented behaviours (REFUSABLE) to answer with a refusal instead.
    """

    def __init__(self, host="127.0.0.1", port=0, ssl_context=None, registry=None, username="sandbox",
                 password="sandbox-password", log_path=None, delay=0.0, max_connections=0, drop_after=0,
                 garbage_after=0, line_ending="\r\n", idle_timeout=300.0, framing="line", stat_format="slots", refuse=()):
        if framing not in ("line", "read"):
            raise ValueError("framing is line or read, not %r" % (framing,))
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.framing = framing
        self.registry = registry if registry is not None else NumberRegistry()
        self.commands = NtsapiCommands(self.registry, stat_format=stat_format, refuse=refuse)
        self.command_log = CommandLog(log_path)
        self.delay = delay
        self.max_connections = max_connections
        self.drop_after = drop_after
        self.garbage_after = garbage_after
        self.line_ending = line_ending
        self.idle_timeout = idle_timeout
        self._username = username
        self._password = password
        self._listener = None
        self._accept_thread = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections = set()
        self._sessions = 0
        self._ids = itertools.count(1)
        self.accepted = 0  # TCP connections accepted so far: tests prove with it that nothing reached the server

    def credentials_match(self, username, password):
        user_ok = hmac.compare_digest(username.encode("utf-8"), self._username.encode("utf-8"))
        password_ok = hmac.compare_digest(password.encode("utf-8"), self._password.encode("utf-8"))
        return user_ok and password_ok

    def fault_for(self, count):
        """'drop', 'garbage' or None for the ``count``-th command of a connection."""
        if self.drop_after and count > self.drop_after:
            return "drop"
        if self.garbage_after and count > self.garbage_after:
            return "garbage"
        return None

    def start(self):
        self._listener = socket.create_server((self.host, self.port), backlog=64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="ntsapi-accept", daemon=True)
        self._accept_thread.start()
        LOG.info("NTSAPI listening on %s:%d (%s)", self.host, self.port, "TLS" if self.ssl_context else "plain")
        return self

    def stop(self):
        self._stopping.set()
        if self._listener is not None:
            _close(self._listener, graceful=False)  # shutdown() wakes the blocked accept() at once on Linux
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            _shut(sock)  # the connection's own thread then closes it
        self.command_log.close()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn_id = next(self._ids)
            self.accepted += 1
            thread = threading.Thread(target=self._serve_connection, args=(sock, peer, conn_id), name="ntsapi-%d" % conn_id, daemon=True)
            thread.start()

    def _serve_connection(self, sock, peer, conn_id):
        self._track(sock)
        counted = False
        try:
            sock = self._secure(sock, peer)
            self._track(sock)
            with self._lock:
                counted = not self.max_connections or self._sessions < self.max_connections
                if counted:
                    self._sessions += 1
            sock.settimeout(self.idle_timeout)
            session = NtsapiSession(self, sock, conn_id)
            if counted:
                session.serve()
            else:
                self.command_log.record(conn_id, None, TOO_MANY_CONNECTIONS)
                session.send([TOO_MANY_CONNECTIONS])
        except (OSError, ValueError, ConnectionClosed) as error:
            # ValueError: stop() closed the TLS socket under a blocked read.
            LOG.debug("connection %d from %s ended: %s", conn_id, peer, error)
        finally:
            with self._lock:
                if counted:
                    self._sessions -= 1
            self._untrack(sock)
            _close(sock)

    def _track(self, sock):
        with self._lock:
            self._connections = {known for known in self._connections if known.fileno() != -1}
            self._connections.add(sock)

    def _untrack(self, sock):
        with self._lock:
            self._connections.discard(sock)

    def _secure(self, sock, peer):
        """TLS handshake in the connection's own thread, so a silent client cannot stall accept()."""
        if self.ssl_context is None:
            return sock
        sock.settimeout(HANDSHAKE_TIMEOUT)
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except OSError:
            LOG.info("TLS handshake with %s failed", peer)
            _close(tls, graceful=False)
            raise
        return tls


def _shut(sock):
    """Shut both directions without TLS: wakes any thread blocked on ``sock``."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(sock, graceful=True):
    """Close a connection; ``graceful`` first sends TLS close_notify, without waiting for the peer's."""
    if graceful and isinstance(sock, ssl.SSLSocket):
        try:
            sock.settimeout(0)
            sock.unwrap()
        except (OSError, ValueError):
            pass
    _shut(sock)
    sock.close()
