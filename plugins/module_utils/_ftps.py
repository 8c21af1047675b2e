# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Explicit FTPS client of magrathea.secure (the CDR server).

Private to this collection: not for use by other collections.

Owns the FTP side of the CDR download: AUTH TLS before any credential
(a server without it is refused), the fingerprint pin checked before USER,
PBSZ 0 / PROT P so every data connection is TLS, TLS session reuse on the
data connections (read afresh from the control connection at every transfer,
because under TLS 1.3 the ticket arrives after the handshake), passive mode
only, MLSD when the server offers it and Unix ``LIST`` parsing otherwise,
SIZE and MDTM for exact facts, and FTP replies turned into errors that say
whether a retry can help. TLS itself comes from ``_tls.Endpoint``.
"""

from __future__ import annotations

import calendar
import ftplib
import re
import socket
import ssl
import time

from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    AuthenticationError,
    MagratheaConnectionError,
    MagratheaError,
    MagratheaTimeout,
    ProtocolError,
)

# Replies after which a new attempt can succeed: too many connections, data
# connection failed or closed, file busy, local error on the server.
TRANSIENT_REPLIES = frozenset((421, 425, 426, 450, 451))
BLOCK_SIZE = 256 * 1024
QUIT_TIMEOUT = 2.0

MONTHS = {name: number for number, name in enumerate(
    ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'), 1)}

# ls -l as Unix servers print it: type+mode, links, owner, [group], size, month, day, time or year, one space, name.
LIST_LINE = re.compile(
    r'^(?P<type>[-dlbcpsDn])[-rwxsStTlL]{9}[.+@]?\s+\d+\s+\S+\s+(?:\S+\s+)?(?P<size>\d+)\s+'
    r'(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<when>\d{1,2}:\d{2}|\d{4})\s(?P<name>.*)$')
MODIFY_FACT = re.compile(r'^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?$')


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


class RemoteFile:
    """One regular file of a remote listing.

    ``mtime`` is seconds since the epoch (UTC) and ``precision`` how many
    seconds it may be late by: 1 for MLSD/MDTM facts, 60 or 86400 for the
    minute or day a Unix LIST line shows. ``token`` is the listed time as the
    server wrote it, to recognise the same listing on the next run.
    """

    __slots__ = ('name', 'size', 'mtime', 'precision', 'token')

    def __init__(self, name, size, mtime, precision=1, token=None):
        self.name = name
        self.size = size
        self.mtime = mtime
        self.precision = precision
        self.token = token if token is not None else str(mtime)

    def __repr__(self):
        return 'RemoteFile(%r, size=%r, mtime=%r, precision=%r)' % (self.name, self.size, self.mtime, self.precision)


def parse_modify(value):
    """Epoch seconds of an MLSD ``modify`` fact or an MDTM answer (YYYYMMDDHHMMSS[.fff], UTC)."""
    match = MODIFY_FACT.match(value.strip())
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
    if not size_text.isdigit() or mtime is None:
        return None, None
    return 'file', RemoteFile(name, int(size_text), mtime, 1, facts.get('modify'))


def parse_list_line(line, now=None):
    """(kind, RemoteFile or None) for one Unix ``LIST`` line, None kind if unparsable.

    Times are taken as UTC (vsftpd's default). A line without a year is in the
    last six months: the year that does not put it more than a day ahead of ``now``.
    """
    if line.startswith('total '):
        return 'total', None
    match = LIST_LINE.match(line)
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
            precision = 60
        else:
            mtime = calendar.timegm((int(when), month, day, 0, 0, 0, 0, 0, 0))
            precision = 86400
    except (ValueError, OverflowError):
        return None, None
    token = '%s %s %s' % (match.group('month'), match.group('day'), when)
    return 'file', RemoteFile(match.group('name'), int(match.group('size')), mtime, precision, token)


def split_listing(data):
    """Lines of a listing: CRLF-terminated when the server uses CRLF, so a bare LF stays inside a name."""
    if b'\r\n' in data:
        lines = data.split(b'\r\n')
    else:
        lines = data.split(b'\n')
    if lines and not lines[-1]:
        lines.pop()
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
    servers (vsftpd ``require_ssl_reuse``) demand.
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
        sock = endpoint.open_tcp()
        self._ftp = ftp
        try:
            ftp.sock = sock
            ftp.af = sock.family
            ftp.file = sock.makefile('r', encoding='utf-8', errors='replace')
            self.welcome = self._call('greeting', ftp.getresp)
            try:
                self._call('AUTH TLS', ftp.voidcmd, 'AUTH TLS')
            except FtpReplyError as exc:
                if exc.transient:
                    raise
                raise ProtocolError('%s does not offer explicit TLS (AUTH TLS answered %s); nothing was sent, the password stays here. '
                                    'Check host and port: the Magrathea CDR server requires FTP over TLS' % (endpoint.describe(), exc.code)) from None
            # The handshake verifies the chain and host name, then checks the pin: USER has not been sent yet.
            ftp.sock = endpoint.wrap(sock)
            ftp.file = ftp.sock.makefile('r', encoding='utf-8', errors='replace')
            self._call('PBSZ', ftp.voidcmd, 'PBSZ 0')
            try:
                self._call('PROT P', ftp.voidcmd, 'PROT P')
            except FtpReplyError as exc:
                if exc.transient:
                    raise
                raise ProtocolError('%s refused PROT P (%s): data connections would not be encrypted, so nothing is transferred'
                                    % (endpoint.describe(), exc.code)) from None
            self._login()
            self._call('TYPE I', ftp.voidcmd, 'TYPE I')
            self.features = self._feat()
        except BaseException:
            self._abort()
            raise
        return self

    def _login(self):
        if not self.username:
            raise AuthenticationError('no user name for %s; set username or MAGRATHEA_CDR_USERNAME' % self.endpoint.describe())
        ftp = self._ftp
        try:
            reply = self._call('USER', ftp.sendcmd, 'USER ' + self.username)
            if reply.startswith('3'):
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
            ftp.sock.settimeout(QUIT_TIMEOUT)
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
        """Run an ftplib call, turning its exceptions into this collection's; ``what`` names the step in messages."""
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
        except socket.timeout:
            raise MagratheaTimeout('%s did not answer %s within %ss; check the network or raise timeout'
                                   % (self.endpoint.describe(), what, self.endpoint.timeout)) from None
        except (OSError, ssl.SSLError) as exc:
            raise MagratheaConnectionError('connection to %s failed during %s: %s' % (self.endpoint.describe(), what, exc)) from None

    def _reply_error(self, what, exc):
        text = _reply_text(exc)
        code = int(text[:3]) if text[:3].isdigit() else 0
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
        tls = self.endpoint.wrap(conn, session=session)
        self.data_connections += 1
        if tls.session_reused:
            self.sessions_reused += 1
        return tls

    # -- commands -------------------------------------------------------------------

    @property
    def has_mlsd(self):
        return 'MLST' in self.features

    @property
    def tls_version(self):
        return self._ftp.sock.version() if self._ftp is not None else None

    def cwd(self, path):
        self._call('CWD %s' % path, self._ftp.cwd, path)

    def list_dir(self, now=None):
        """(files, unparsed) of the current directory: RemoteFile list and lines that could not be read.

        MLSD when offered (exact size and time), else LIST in Unix format.
        Names are returned as sent; deciding whether one is safe is the caller's job.
        """
        data = self._read_all('MLSD' if self.has_mlsd else 'LIST')
        parse = parse_mlsd_line if self.has_mlsd else (lambda text: parse_list_line(text, now))
        files, unparsed = [], []
        for raw in split_listing(data):
            try:
                line = raw.decode('utf-8')
            except UnicodeDecodeError:
                unparsed.append(raw.decode('utf-8', 'backslashreplace'))
                continue
            kind, entry = parse(line)
            if entry is not None:
                files.append(entry)
            elif kind is None and line.strip():
                unparsed.append(line)
        return files, unparsed

    def size(self, name):
        reply = self._call('SIZE %s' % name, self._ftp.sendcmd, 'SIZE ' + name)
        text = reply[3:].strip()
        if not reply.startswith('213') or not text.isdigit():
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

    def retrieve(self, name, sink, offset=0):
        """RETR ``name`` from byte ``offset`` (REST), passing each chunk to ``sink``; returns the bytes received.

        The caller checks the total against the expected size: a TLS
        connection closed without close_notify looks like a normal end here.
        """
        what = 'RETR %s' % name
        conn, dummy = self._call(what, self._ftp.ntransfercmd, 'RETR ' + name, offset or None)
        received = 0
        buffer = bytearray(BLOCK_SIZE)
        view = memoryview(buffer)
        try:
            while True:
                count = conn.recv_into(buffer)
                if not count:
                    break
                sink(view[:count])
                received += count
        except socket.timeout:
            raise MagratheaTimeout('%s sent no data for %ss during %s (after %d bytes); a rerun resumes the file'
                                   % (self.endpoint.describe(), self.endpoint.timeout, what, received)) from None
        except (OSError, ssl.SSLError) as exc:
            raise TransferIncomplete('data connection from %s dropped during %s after %d bytes (%s); a rerun resumes the file'
                                     % (self.endpoint.describe(), what, received, exc)) from None
        finally:
            view.release()
            conn.close()
        self._call(what, self._ftp.voidresp)
        return received

    def _read_all(self, command):
        conn, dummy = self._call(command, self._ftp.ntransfercmd, command)
        chunks = []
        try:
            while True:
                chunk = conn.recv(BLOCK_SIZE)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            raise MagratheaTimeout('%s sent no data for %ss during %s' % (self.endpoint.describe(), self.endpoint.timeout, command)) from None
        except (OSError, ssl.SSLError) as exc:
            raise TransferIncomplete('data connection from %s dropped during %s: %s' % (self.endpoint.describe(), command, exc)) from None
        finally:
            conn.close()
        self._call(command, self._ftp.voidresp)
        return b''.join(chunks)


def _reply_text(exc):
    text = str(exc.args[0] if exc.args else exc)
    return text.strip().splitlines()[0] if text.strip() else text
