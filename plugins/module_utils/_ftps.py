# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Explicit FTPS client of magrathea.secure (the CDR server).

Private to this collection: not for use by other collections.

Owns the FTP side of the CDR download: AUTH TLS before any credential
(a server without it is refused), the fingerprint pin checked before USER,
PBSZ 0 / PROT P so every data connection is TLS, TLS session reuse on the
data connections (read afresh from the control connection at every transfer,
because under TLS 1.3 the ticket arrives after the handshake), the pins
checked again on every data connection, passive mode only, a deadline for
every control reply, listings read and parsed line by line as they stream
(MLSD when the server offers it, Unix ``LIST`` otherwise) and complete only
when their data connection ends with a TLS close_notify and a 2xx reply,
downloads that never read more than the expected size, SIZE and MDTM for
exact facts, and FTP replies turned into errors that say whether a retry can
help. What a download is written to is the caller's: its errors pass through
untouched. TLS itself comes from ``_tls.Endpoint``.
"""

from __future__ import annotations

import calendar
import ftplib
import re
import socket
import ssl
import time

from ansible_collections.magrathea.secure.plugins.module_utils._text import is_decimal
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    AuthenticationError,
    Deadline,
    MagratheaConnectionError,
    MagratheaError,
    MagratheaTimeout,
    ProtocolError,
)

# Replies after which a new attempt can succeed: too many connections, data
# connection failed or closed, file busy, local error on the server.
TRANSIENT_REPLIES = frozenset((421, 425, 426, 450, 451))
BLOCK_SIZE = 256 * 1024
# A data connection must bring this many bytes (or the rest of the file) in every `timeout` seconds: a server that
# trickles one byte at a time never trips a wait, so it trips this, as curl's --speed-limit does.
MIN_BYTES_PER_WINDOW = 1024
QUIT_TIMEOUT = 2.0
# A listing uses CRLF line ends when the first LISTING_PROBE bytes hold one; a longer line is not a listing line.
LISTING_PROBE = 64 * 1024
MAX_LISTING_LINE = 64 * 1024

MONTHS = {name: number for number, name in enumerate(
    ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'), 1)}

# ls -l as Unix servers print it: type+mode, links, owner, [group], size, month, day, time or year, one space, name.
# Matched whole (fullmatch), ASCII digits only; the name keeps any line break, for the caller to refuse.
LIST_LINE = re.compile(
    r'(?P<type>[-dlbcpsDn])[-rwxsStTlL]{9}[.+@]?\s+\d+\s+\S+\s+(?:\S+\s+)?(?P<size>\d+)\s+'
    r'(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<when>\d{1,2}:\d{2}|\d{4})\s(?P<name>.*)', re.ASCII | re.DOTALL)
MODIFY_FACT = re.compile(r'(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?', re.ASCII)


class FtpReplyError(MagratheaError):
    """The server refused a command; ``code`` is the FTP reply code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code

    @property
    def transient(self):
        return self.code in TRANSIENT_REPLIES


class TransferIncomplete(MagratheaConnectionError):
    """The data connection ended before the expected number of bytes arrived."""


class ListingIncomplete(MagratheaConnectionError):
    """A listing's data connection did not end with a TLS close_notify and a 2xx reply: some lines may be missing."""


class LongerThanExpected(MagratheaError):
    """The server sent more bytes than the size the caller expected; reading stopped at that size."""


class RemoteFile:
    """One regular file of a remote listing.

    ``mtime`` is seconds since the epoch (UTC) and ``uncertainty`` how many
    seconds the true time may be later by: 1 for MLSD/MDTM facts, 60 or 86400
    for the minute or day a Unix LIST line shows. ``listed_time`` is the time
    as the server wrote it, to recognise the same listing on the next run.
    """

    __slots__ = ('name', 'size', 'mtime', 'uncertainty', 'listed_time')

    def __init__(self, name, size, mtime, uncertainty=1, listed_time=None):
        self.name = name
        self.size = size
        self.mtime = mtime
        self.uncertainty = uncertainty
        self.listed_time = listed_time if listed_time is not None else str(mtime)

    def __repr__(self):
        return 'RemoteFile(%r, size=%r, mtime=%r, uncertainty=%r)' % (self.name, self.size, self.mtime, self.uncertainty)


def parse_modify(value):
    """Epoch seconds of an MLSD ``modify`` fact or an MDTM answer (YYYYMMDDHHMMSS[.fff], UTC)."""
    match = MODIFY_FACT.fullmatch(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None


def parse_mlsd_line(line):
    """(kind, RemoteFile or None) for one MLSD line; kind is the ``type`` fact, None if unparsable."""
    facts_text, sep, name = line.partition(' ')
    if not sep or not facts_text.endswith(';'):
        return None, None
    facts = {}
    for fact in facts_text.split(';'):
        key, eq, value = fact.partition('=')
        if eq:
            facts[key.lower()] = value
    kind = facts.get('type', '').lower()
    if kind != 'file':
        return kind or None, None
    size_text = facts.get('size', facts.get('sizd', ''))
    mtime = parse_modify(facts.get('modify', ''))
    if not is_decimal(size_text) or mtime is None:
        return None, None
    return 'file', RemoteFile(name, int(size_text), mtime, 1, facts.get('modify'))


def parse_list_line(line, now=None):
    """(kind, RemoteFile or None) for one Unix ``LIST`` line, None kind if unparsable.

    Times are taken as UTC (vsftpd's default). A line without a year is in the
    last six months: the year that does not put it more than a day ahead of ``now``.
    """
    if line.startswith('total '):
        return 'total', None
    match = LIST_LINE.fullmatch(line)
    if not match:
        return None, None
    kind = {'-': 'file', 'd': 'dir', 'l': 'link'}.get(match.group('type'), 'other')
    if kind != 'file':
        return kind, None
    month = MONTHS.get(match.group('month').lower())
    day = int(match.group('day'))
    when = match.group('when')
    if month is None or not 1 <= day <= 31:
        return None, None
    try:
        if ':' in when:
            hour, minute = (int(part) for part in when.split(':'))
            now = time.time() if now is None else now
            year = time.gmtime(now).tm_year
            mtime = calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0))
            if mtime > now + 86400:
                mtime = calendar.timegm((year - 1, month, day, hour, minute, 0, 0, 0, 0))
            uncertainty = 60
        else:
            mtime = calendar.timegm((int(when), month, day, 0, 0, 0, 0, 0, 0))
            uncertainty = 86400
    except (ValueError, OverflowError):
        return None, None
    listed_time = '%s %s %s' % (match.group('month'), match.group('day'), when)
    return 'file', RemoteFile(match.group('name'), int(match.group('size')), mtime, uncertainty, listed_time)


class ListingLines:
    """Cuts a listing into lines as its bytes arrive, holding no more than one line at a time.

    Lines end with CRLF when the server uses CRLF (seen in the first LISTING_PROBE bytes), so a bare LF stays
    inside a name; else with LF. A line longer than MAX_LISTING_LINE is cut there and passed on as it is.
    """

    def __init__(self):
        self._pending = bytearray()
        self._end = None
        self._probed = 0

    def feed(self, data):
        """The whole lines that ``data`` completes."""
        self._pending += data
        if self._end is None:
            self._probed += len(data)
            if b'\r\n' in self._pending:
                self._end = b'\r\n'
            elif self._probed < LISTING_PROBE:
                return []
            else:
                self._end = b'\n'
        return self._cut()

    def _cut(self):
        lines, start, pending = [], 0, self._pending
        while True:
            end = pending.find(self._end, start)
            if end < 0:
                break
            lines.append(bytes(pending[start:end]))
            start = end + len(self._end)
        del pending[:start]
        if len(pending) > MAX_LISTING_LINE:
            lines.append(bytes(pending[:MAX_LISTING_LINE]))
            del pending[:MAX_LISTING_LINE]
        return lines

    def close(self):
        """The last lines, once the listing has ended; a last line without a line end is passed on too."""
        if self._end is None:
            self._end = b'\r\n' if b'\r\n' in self._pending else b'\n'
        lines = self._cut()
        if self._pending:
            lines.append(bytes(self._pending))
            self._pending = bytearray()
        return lines


class _FtpControl(ftplib.FTP):
    """ftplib's reply parsing and PASV/EPSV, with the data socket wrapped in TLS by the client."""

    # The PASV address is ignored: data goes to the control connection's peer.
    trust_server_pasv_ipv4_address = False

    def __init__(self, wrap_data):
        super().__init__()
        self._wrap_data = wrap_data

    def ntransfercmd(self, cmd, rest=None):
        conn, size = super().ntransfercmd(cmd, rest)
        return self._wrap_data(conn), size


class FtpsClient:
    """One explicit-FTPS control connection to the CDR server, logged in and in binary mode.

    Use as a context manager or call ``connect()`` and ``close()``. Every data
    connection resumes the control connection's TLS session, which strict
    servers (vsftpd ``require_ssl_reuse``) demand. Every control reply must be
    complete within the endpoint's timeout, however slowly it trickles in.
    """

    def __init__(self, endpoint, username, password):
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.features = {}
        self.welcome = None
        self.data_connections = 0
        self.sessions_reused = 0
        self._ftp = None
        self._sent = 'Nothing was sent'
        self._command = None

    # -- connection -----------------------------------------------------------------

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc_info):
        self.close()

    @property
    def connected(self):
        return self._ftp is not None

    def connect(self):
        """Connect, AUTH TLS, check the pin, PBSZ 0 / PROT P, log in, TYPE I, read FEAT."""
        endpoint = self.endpoint
        ftp = _FtpControl(self._wrap_data)
        ftp.host, ftp.port, ftp.timeout = endpoint.host, endpoint.port, endpoint.timeout
        sock = endpoint.open_tcp(Deadline(endpoint.timeout))
        self._ftp = ftp
        try:
            ftp.sock = sock
            ftp.af = sock.family
            ftp.file = sock.makefile('r', encoding='utf-8', errors='replace')
            self.welcome = self._call('greeting', ftp.getresp)
            self._require('AUTH TLS', '%s does not offer explicit TLS (AUTH TLS answered %s); nothing was sent, the password stays here. '
                                      'Check host and port: the Magrathea CDR server requires FTP over TLS')
            # The handshake verifies the chain and host name, then checks the pin: USER has not been sent yet.
            sock.deadline = Deadline(endpoint.timeout)
            ftp.sock = endpoint.wrap(sock)
            ftp.file = ftp.sock.makefile('r', encoding='utf-8', errors='replace')
            self._call('PBSZ', ftp.voidcmd, 'PBSZ 0')
            self._require('PROT P', '%s refused PROT P (%s): data connections would not be encrypted, so nothing is transferred')
            self._login()
            self._call('TYPE I', ftp.voidcmd, 'TYPE I')
            self.features = self._feat()
        except BaseException:
            self._abort()
            raise
        return self

    def _require(self, command, refusal):
        """Send a command the session cannot go without; a lasting refusal is a ProtocolError saying ``refusal``
        (formatted with the endpoint and the reply code)."""
        try:
            self._call(command, self._ftp.voidcmd, command)
        except FtpReplyError as exc:
            if exc.transient:
                raise
            raise ProtocolError(refusal % (self.endpoint.describe(), exc.code)) from None

    def _login(self):
        if not self.username:
            raise AuthenticationError('no user name for %s; set username or MAGRATHEA_CDR_USERNAME' % self.endpoint.describe())
        ftp = self._ftp
        try:
            self._sent = 'USER %s had been sent' % self.username
            reply = self._call('USER', ftp.sendcmd, 'USER ' + self.username)
            if reply.startswith('3'):
                self._sent = 'USER %s and its password had been sent' % self.username
                reply = self._call('PASS', ftp.sendcmd, 'PASS ' + (self.password or ''))
        except FtpReplyError as exc:
            if exc.code in (530, 331, 332) or not exc.transient:
                raise AuthenticationError('%s refused the login of %s (%s); check username and password. '
                                          'Not retried, so the account is not locked out' % (self.endpoint.describe(), self.username, exc.code)) from None
            raise
        if not reply.startswith('2'):
            raise AuthenticationError('%s did not accept the login of %s (%s); check username and password'
                                      % (self.endpoint.describe(), self.username, reply[:3]))

    def _feat(self):
        try:
            reply = self._call('FEAT', self._ftp.sendcmd, 'FEAT')
        except FtpReplyError as exc:
            if exc.transient:
                raise
            return {}
        features = {}
        for line in reply.splitlines()[1:-1]:
            name, dummy, params = line.strip().partition(' ')
            if name:
                features[name.upper()] = params
        return features

    def close(self):
        """Send QUIT (briefly) and close; never raises."""
        ftp, self._ftp = self._ftp, None
        if ftp is None:
            return
        try:
            ftp.sock.deadline = Deadline(QUIT_TIMEOUT)
            ftp.voidcmd('QUIT')
        except Exception:  # pylint: disable=broad-exception-caught
            pass  # leaving anyway
        self._close_sockets(ftp)

    def _abort(self):
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            self._close_sockets(ftp)

    @staticmethod
    def _close_sockets(ftp):
        for thing in (ftp.file, ftp.sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass
        ftp.file = ftp.sock = None

    # -- errors ---------------------------------------------------------------------

    def _call(self, what, func, *args):
        """Run an ftplib call within one reply's deadline, turning its exceptions into this collection's.

        ``what`` names the step in messages.
        """
        sock = self._ftp.sock
        sock.deadline = Deadline(self.endpoint.timeout)
        try:
            return func(*args)
        except ftplib.error_reply as exc:
            raise ProtocolError('%s answered %s with an unexpected reply: %s' % (self.endpoint.describe(), what, _reply_text(exc))) from None
        except (ftplib.error_temp, ftplib.error_perm) as exc:
            raise self._reply_error(what, exc) from None
        except ftplib.error_proto as exc:
            raise ProtocolError('%s answered %s with something that is not an FTP reply: %s' % (self.endpoint.describe(), what, _reply_text(exc))) from None
        except EOFError:
            raise MagratheaConnectionError('%s closed the control connection during %s; it may limit connections per account, '
                                           'or the network dropped it' % (self.endpoint.describe(), what)) from None
        except socket.timeout as exc:
            raise MagratheaTimeout('%s did not answer %s in time (%s); check the network or raise timeout'
                                   % (self.endpoint.describe(), what, exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise MagratheaConnectionError('connection to %s failed during %s: %s' % (self.endpoint.describe(), what, exc)) from None
        finally:
            sock.deadline = None

    def _reply_error(self, what, exc):
        text = _reply_text(exc)
        code = int(text[:3]) if is_decimal(text[:3]) else 0
        verb = 'refused'
        if code == 421:
            hint = 'the server limits connections; lower parallel or let the retries wait'
        elif code in (426, 451):
            verb, hint = 'aborted', 'a retry resumes it'
        elif code in TRANSIENT_REPLIES:
            hint = 'a retry may succeed'
        else:
            hint = 'check the path and the account permissions'
        return FtpReplyError('%s %s %s: %s; %s' % (self.endpoint.describe(), verb, what, text, hint), code)

    def _wrap_data(self, conn):
        # Read the session now, not at login: a TLS 1.3 ticket arrives after the handshake.
        session = self._ftp.sock.session
        tls = self.endpoint.wrap(conn, session=session, check_pin=False)
        self.endpoint.check_pin(tls, sent='%s on the control connection, which presented a pinned certificate, and then %s; '
                                          'nothing was sent on this data connection' % (self._sent, self._command))
        # A data connection ends complete only with the server's close_notify; a bare close must be seen as a cut.
        tls.suppress_ragged_eofs = False
        _progress(tls, self.endpoint.timeout)
        self.data_connections += 1
        if tls.session_reused:
            self.sessions_reused += 1
        return tls

    def _open_data(self, command, offset=None):
        self._command = command
        return self._call(command, self._ftp.ntransfercmd, command, offset)[0]

    # -- commands -------------------------------------------------------------------

    @property
    def has_mlsd(self):
        return 'MLST' in self.features

    @property
    def tls_version(self):
        return self._ftp.sock.version() if self._ftp is not None else None

    def cwd(self, path):
        self._call('CWD %s' % path, self._ftp.cwd, path)

    def listing(self, now=None):
        """Yield ``(kind, RemoteFile or None, line)`` for each line of the current directory, parsed as it streams.

        MLSD when offered (exact size and time), else LIST in Unix format. ``kind`` is the entry's type ('file',
        'dir', ...) or None for a line that could not be read. Names are yielded as sent; whether one is safe is the
        caller's decision. Raises ListingIncomplete at the end unless the data connection ended with a TLS
        close_notify and the server answered 2xx; lines already yielded were whole lines of the listing.
        """
        command = 'MLSD' if self.has_mlsd else 'LIST'
        parse = parse_mlsd_line if self.has_mlsd else (lambda text: parse_list_line(text, now))
        conn = self._open_data(command)
        lines = ListingLines()
        buffer = bytearray(BLOCK_SIZE)
        problem = None
        try:
            while True:
                try:
                    count = conn.recv_into(buffer)
                except ssl.SSLEOFError:
                    problem = 'the data connection was closed without a TLS close_notify'
                    break
                except socket.timeout:
                    problem = 'less than %d bytes arrived in %gs' % (MIN_BYTES_PER_WINDOW, self.endpoint.timeout)
                    break
                except (OSError, ssl.SSLError) as exc:
                    problem = 'the data connection failed: %s' % exc
                    break
                if not count:
                    break
                _progress(conn, self.endpoint.timeout, count)
                for raw in lines.feed(memoryview(buffer)[:count]):
                    yield _parsed(parse, raw)
            if problem is None:
                for raw in lines.close():
                    yield _parsed(parse, raw)
        finally:
            conn.close()
        try:
            self._call(command, self._ftp.voidresp)
        except FtpReplyError as exc:
            problem = problem or 'the server answered: %s' % exc
        except MagratheaError as exc:
            self._abort()  # the control connection is lost too
            problem = problem or 'the control connection failed: %s' % exc
        if problem is not None:
            raise ListingIncomplete('the %s listing from %s is incomplete: %s' % (command, self.endpoint.describe(), problem))

    def size(self, name):
        reply = self._call('SIZE %s' % name, self._ftp.sendcmd, 'SIZE ' + name)
        text = reply[3:].strip()
        if not reply.startswith('213') or not is_decimal(text):
            raise ProtocolError('%s answered SIZE %s with %r, not 213 and a number' % (self.endpoint.describe(), name, reply))
        return int(text)

    def mdtm(self, name):
        """Exact modification time (epoch, UTC) or None when the server has no MDTM."""
        try:
            reply = self._call('MDTM %s' % name, self._ftp.sendcmd, 'MDTM ' + name)
        except FtpReplyError as exc:
            if exc.code in (500, 501, 502, 504):
                return None
            raise
        return parse_modify(reply[3:]) if reply.startswith('213') else None

    def retrieve(self, name, sink, offset=0, size=None):
        """RETR ``name`` from byte ``offset`` (REST), passing each chunk to ``sink``; returns the bytes received.

        With ``size`` (the file's expected size), reading stops at that size: more bytes raise LongerThanExpected
        after the transfer is closed. Without it, the transfer must end with a TLS close_notify. Whatever ``sink``
        raises passes through untouched (the control connection is then closed, its reply unread): a local error is
        never mistaken for a network one.
        """
        what = 'RETR %s' % name
        conn = self._open_data('RETR ' + name, offset or None)
        wanted = None if size is None else max(0, size - offset)
        received = 0
        buffer = bytearray(BLOCK_SIZE)
        view = memoryview(buffer)
        try:
            while wanted is None or received < wanted:
                limit = BLOCK_SIZE if wanted is None else min(BLOCK_SIZE, wanted - received)
                count = self._receive(conn, view[:limit], what, received)
                if count is None:
                    break
                try:
                    sink(view[:count])
                except BaseException:
                    self._abort()
                    raise
                received += count
            if wanted is not None and received < wanted:
                raise TransferIncomplete('data connection from %s ended during %s after %d of %d bytes; a rerun resumes the file'
                                         % (self.endpoint.describe(), what, received, wanted))
            # All the expected bytes are here; a byte more means the file is not what was listed. The end gets a window of its own.
            _progress(conn, self.endpoint.timeout)
            more = wanted is not None and self._receive(conn, view[:1], what, received, ended_ok=True)
        finally:
            view.release()
            conn.close()
        if more:
            self._end_data_after_abort(what)
            raise LongerThanExpected('%s sent more than the %d bytes expected of %s; reading stopped there'
                                     % (self.endpoint.describe(), size, name))
        self._call(what, self._ftp.voidresp)
        return received

    def _receive(self, conn, view, what, received, ended_ok=False):
        """Bytes read into ``view``, or None at a clean end of the transfer."""
        try:
            count = conn.recv_into(view)
        except socket.timeout:
            raise MagratheaTimeout('%s sent less than %d bytes in %gs during %s (after %d bytes); a rerun resumes the file'
                                   % (self.endpoint.describe(), MIN_BYTES_PER_WINDOW, self.endpoint.timeout, what, received)) from None
        except ssl.SSLEOFError:
            if ended_ok:
                return None  # every expected byte arrived; the missing close_notify cannot hide any
            raise TransferIncomplete('data connection from %s was cut (no TLS close_notify) during %s after %d bytes; a rerun resumes the file'
                                     % (self.endpoint.describe(), what, received)) from None
        except (OSError, ssl.SSLError) as exc:
            raise TransferIncomplete('data connection from %s dropped during %s after %d bytes (%s); a rerun resumes the file'
                                     % (self.endpoint.describe(), what, received, exc)) from None
        if count:
            _progress(conn, self.endpoint.timeout, count)
        return count or None

    def _end_data_after_abort(self, what):
        """Read the reply to a transfer this client stopped reading (426, 451 or 226): the connection stays usable."""
        try:
            self._call(what, self._ftp.voidresp)
        except FtpReplyError:
            pass


def _parsed(parse, raw):
    """(kind, RemoteFile or None, line) for one raw listing line; kind None when it cannot be read."""
    try:
        line = raw.decode('utf-8')
    except UnicodeDecodeError:
        return None, None, raw.decode('utf-8', 'backslashreplace')
    kind, entry = parse(line)
    if entry is None and kind is None and not line.strip():
        return 'blank', None, line
    return kind, entry, line


def _progress(conn, timeout, count=None):
    """Count ``count`` bytes on data connection ``conn``; each MIN_BYTES_PER_WINDOW of them earn a new window."""
    if count is None or conn.window_bytes + count >= MIN_BYTES_PER_WINDOW:
        conn.window_bytes = 0
        conn.deadline = Deadline(timeout)
    else:
        conn.window_bytes += count


def _reply_text(exc):
    text = str(exc.args[0] if exc.args else exc)
    return text.strip().splitlines()[0] if text.strip() else text
