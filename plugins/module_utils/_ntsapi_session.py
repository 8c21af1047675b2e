# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The NTSAPI wire: one authenticated session over TLS and how commands travel through it.

Private to this collection: not for use by other collections.

Owns the session (greeting, one AUTH that is never retried, QUIT), a deadline
for every reply and one for the whole session, single- and multi-line replies,
pipelining of read-only commands with its fall-back to lock-step, how the
server frames commands (per line, or one command per read: detected on the
first pipelined burst, without a second login), and the reconnect after a
broken pipelined stream under the collection's one retry policy. Formats come
from ``_ntsapi_grammar``; TLS from ``_tls``.
"""

from __future__ import annotations

import collections
import re
import socket
import ssl

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_grammar import (
    SESSION_VERBS,
    Reply,
    check_command,
    check_reply,
    command_verb,
    describe_command,
    is_multi_line,
    is_read_only,
    mask_text,
    parse_line,
)
from ansible_collections.magrathea.secure.plugins.module_utils._retry import ConnectionBudget, RetryPolicy
from ansible_collections.magrathea.secure.plugins.module_utils._text import redact
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    AuthenticationError,
    Deadline,
    MagratheaConnectionError,
    MagratheaError,
    MagratheaTimeout,
    ProtocolError,
)

LINE_ENDING = '\r\n'
MAX_LINE = 8192
DEFAULT_PIPELINE_DEPTH = 128
MAX_PIPELINE_DEPTH = 1024
# How long a pipelined burst waits for its next reply before the server counts as out of step (or, on the first burst,
# as a server that takes one command per read).
PIPELINE_STALL = 3.0
QUIT_TIMEOUT = 5.0
# The whole session, greeting to QUIT, reconnects included: a server that answers each reply just inside its timeout
# cannot hold a run for longer.
SESSION_SECONDS = 3600.0
RECONNECT_RETRIES = 3
# Logins one session may spend: the first, and one fall-back session with its retries. AUTH itself is never retried.
MAX_LOGINS = 2 + RECONNECT_RETRIES


def _next_step(label, timeout=False):
    """What the user should do after the connection failed around ``label``."""
    verb = command_verb(label)
    if verb in ('AUTH', '(GREETING)'):
        step = 'check that host and port belong to the NTSAPI service and try again later'
    elif verb == 'QUIT' or is_read_only(label):
        step = 'nothing was changed by it; run the task again'
    else:
        step = 'it may or may not have taken effect; run the task again (the modules read the state first)'
    return step + (', or raise timeout' if timeout else '')


class _Broken(Exception):
    """Internal: a pipelined reply does not fit its command, so the stream is no longer trustworthy."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _wire_error(cls, where, reason, hint):
    """``cls`` with the message '<where> <reason>; <hint>' and the bare reason kept for the fall-back warning."""
    error = cls('%s %s; %s' % (where, reason, hint))
    error.reason = reason
    return error


class NtsapiSession:
    """One NTSAPI session over TLS: greeting, one AUTH, commands, QUIT.

    ``run()`` sends one command and waits for its reply (every mutating command). ``query()`` pipelines read-only
    commands ``pipeline_depth`` at a time. Its first burst also shows how the server frames commands: a server that
    answers one command per read gets the rest one command per write, in the same session. When a pipelined stream
    breaks (out of step, outside the grammar, closed, stalled) the session reconnects once, says so in ``warnings``
    and carries on in lock-step. Every reply must be complete within the endpoint's timeout, and the session within
    ``session_seconds``.
    """

    def __init__(self, endpoint, username, password, pipeline_depth=DEFAULT_PIPELINE_DEPTH, session_seconds=SESSION_SECONDS):
        if not username or re.search(r'\s', username):
            raise ValueError('NTSAPI user name %r must be set and hold no white space; give username or MAGRATHEA_NTSAPI_USERNAME' % (username,))
        if not password or re.search(r'\s', password):
            raise ValueError('the NTSAPI password must be set and hold no white space or line breaks (the AUTH line cannot carry them); '
                             'give password or MAGRATHEA_NTSAPI_PASSWORD')
        self.endpoint = endpoint
        self.username = username
        self._password = password
        self.pipeline_depth = max(1, int(pipeline_depth))
        self.pipelining = self.pipeline_depth > 1
        self.session_seconds = max(float(session_seconds), endpoint.timeout)
        # 'line' (one command per line), 'read' (one command per read), or None until the first pipelined burst shows it.
        self.framing = None
        self.warnings = []
        self.greeting = None
        self.connections = 0  # connections opened (each logs in once, unless its greeting refuses)
        self.deadline = None
        self._logins = ConnectionBudget(MAX_LOGINS, 'NTSAPI logins')
        self._sock = None
        self._buffer = b''

    # -- context --

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _where(self):
        return 'NTSAPI %s' % self.endpoint.describe()

    # -- connection --

    def open(self):
        """Connect, check the certificate (and pin) through the TLS layer, read the greeting and log in once."""
        if self.deadline is None:
            self.deadline = Deadline(self.session_seconds)
        self._logins.spend(self._where())
        self._sock = self.endpoint.connect(deadline=self.deadline.within(self.endpoint.timeout))
        self._buffer = b''
        self.connections += 1
        try:
            self._greet_and_log_in()
        except MagratheaError:
            self._drop()
            raise

    def _greet_and_log_in(self):
        self._reply_deadline()
        greeting = self._read_reply('(greeting)', single=True)
        if not greeting.ok:
            raise MagratheaConnectionError('%s refused the session: %d %s; try again later or check the connection limit of the account'
                                           % (self._where(), greeting.code, self._redact(greeting.message)))
        self.greeting = greeting.message
        self._reply_deadline()
        self._send('AUTH %s %s' % (self.username, self._password), 'AUTH')
        reply = self._read_reply('AUTH', single=True)
        if not reply.ok:
            raise AuthenticationError('%s refused AUTH for user %s: %d %s. Not retried, because Magrathea blocks repeated failed '
                                      'logins; check username and password (MAGRATHEA_NTSAPI_USERNAME, MAGRATHEA_NTSAPI_PASSWORD)'
                                      % (self._where(), self.username, reply.code, self._redact(reply.message)))

    def close(self):
        """Send QUIT (best effort, within QUIT_TIMEOUT) and close the connection."""
        if self._sock is None:
            return
        try:
            self._sock.settimeout(min(self.endpoint.timeout, QUIT_TIMEOUT))
            self._sock.deadline = self.deadline.within(QUIT_TIMEOUT)
            self._send('QUIT', 'QUIT')
            self._read_reply('QUIT', single=True)
        except (MagratheaError, OSError):
            pass
        self._drop()

    def _drop(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._buffer = b''

    def _reconnect(self):
        """A fresh session after the pipelined one broke; a server at its connection limit gets a few moments.

        The collection's retry policy decides: only a transient error (a refused or dropped connection) is retried, within
        the session's deadline; a refused AUTH, a pin mismatch or a spent login budget ends it at once.
        """
        self._drop()
        policy = RetryPolicy(retries=RECONNECT_RETRIES, base_delay=0.2, min_delay=0.2, max_delay=2.0, deadline=self.deadline)
        policy.run(self.open)

    # -- wire --

    def _redact(self, text):
        return mask_text(redact(text, [self._password]))

    def _reply_deadline(self):
        """Start the deadline of one whole reply (never later than the session's)."""
        self._sock.deadline = self.deadline.within(self.endpoint.timeout)

    def _timeout_error(self, label, waited):
        shown = describe_command(label)
        deadline = getattr(self._sock, 'deadline', None)
        if self.deadline.expired:
            reason = 'did not let the session end within %gs (waiting for the reply to %s)' % (self.deadline.seconds, shown)
        elif deadline is not None and deadline.expired and self._buffer:
            reason = 'did not finish its reply to %s within %gs' % (shown, deadline.seconds)
        else:
            reason = 'sent no reply to %s within %gs' % (shown, waited)
        return _wire_error(MagratheaTimeout, self._where(), reason, _next_step(label, timeout=True))

    def _send(self, text, label):
        if self._sock is None:
            raise MagratheaConnectionError('%s: the session is closed; cannot send %s' % (self._where(), describe_command(label)))
        try:
            self._sock.sendall(text.encode('ascii') + LINE_ENDING.encode('ascii'))
        except socket.timeout:
            raise self._timeout_error(label, self._sock.gettimeout()) from None
        except (OSError, ssl.SSLError) as exc:
            raise _wire_error(MagratheaConnectionError, self._where(), 'lost the connection while we sent %s (%s)' % (describe_command(label), exc),
                              _next_step(label)) from None

    def _send_many(self, commands):
        try:
            self._sock.sendall(''.join(command + LINE_ENDING for command in commands).encode('ascii'))
        except (OSError, ssl.SSLError) as exc:
            raise _wire_error(MagratheaConnectionError, self._where(), 'lost the connection while we sent %d pipelined commands starting with %s (%s)'
                              % (len(commands), describe_command(commands[0]), exc), 'nothing was changed by them; run the task again') from None

    def _read_line(self, label):
        while True:
            end = self._buffer.find(b'\n')
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
                if line.endswith(b'\r'):
                    line = line[:-1]
                return line.decode('utf-8', 'replace')
            shown = describe_command(label)
            if len(self._buffer) > MAX_LINE:
                raise _wire_error(ProtocolError, self._where(), 'answered a line longer than %d bytes to %s' % (MAX_LINE, shown),
                                  'this is not an NTSAPI server, check host and port')
            waited = self._sock.gettimeout()
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise self._timeout_error(label, waited) from None
            except (OSError, ssl.SSLError) as exc:
                raise _wire_error(MagratheaConnectionError, self._where(), 'lost the connection while we waited for the reply to %s (%s)'
                                  % (shown, exc), _next_step(label)) from None
            if not data:
                raise _wire_error(MagratheaConnectionError, self._where(), 'closed the connection while we waited for the reply to %s' % shown,
                                  _next_step(label))
            self._buffer += data

    def _read_parsed(self, label):
        line = self._read_line(label)
        parsed = parse_line(line)
        if parsed is None:
            raise _wire_error(ProtocolError, self._where(), 'answered %s with a line outside the NTSAPI grammar "<digit> <message>": %r'
                              % (describe_command(label), self._redact(line)[:200]), 'nothing more was sent; ' + _next_step(label))
        return parsed

    def _read_reply(self, command, single=False):
        code, message = self._read_parsed(command)
        if single or not is_multi_line(command):
            return Reply(command, code, message)
        lines = []
        while code == 0:
            lines.append(message)
            code, message = self._read_parsed(command)
        return Reply(command, 0 if lines else code, message, lines)

    def _unasked_reply(self):
        """Whether a reply nobody asked for is waiting (a late answer to a command that was sent again one per read)."""
        if self._buffer:
            return True
        self._sock.settimeout(0.0)
        try:
            data = self._sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            return False
        except (OSError, ssl.SSLError):
            return False  # the next read reports it, naming its command
        finally:
            self._sock.settimeout(self.endpoint.timeout)
        self._buffer += data
        return bool(data)

    # -- commands --

    def run(self, command):
        """Send one command and return its reply (lock-step). The reply must fit the command."""
        check_command(command)
        if command_verb(command) in SESSION_VERBS:
            raise ValueError('AUTH and QUIT belong to the session and cannot be sent as commands')
        if self._sock is None:
            raise MagratheaConnectionError('%s: the session is closed; cannot send %s' % (self._where(), describe_command(command)))
        if self.framing == 'read' and self._unasked_reply():
            raise ProtocolError('%s sent a reply nobody asked for before %s; the stream is out of step, so %s was not sent. '
                                'Run the task again with pipeline_depth 1' % (self._where(), describe_command(command), describe_command(command)))
        self._sock.settimeout(self.endpoint.timeout)
        self._reply_deadline()
        self._send(command, command)
        reply = self._read_reply(command)
        try:
            check_reply(command, reply)
        except ValueError as exc:
            raise ProtocolError('%s answered %s with something that does not fit it: %s'
                                % (self._where(), describe_command(command), mask_text(str(exc)))) from None
        return reply

    def query(self, commands):
        """Replies to read-only ``commands`` in order, pipelined while the server keeps in step."""
        commands = list(commands)
        for command in commands:
            check_command(command)
            if not is_read_only(command):
                raise ValueError('%s changes something and is never pipelined; send it with run()' % describe_command(command))
        if self._sock is None and commands:
            raise MagratheaConnectionError('%s: the session is closed; cannot send %s' % (self._where(), describe_command(commands[0])))
        if not self.pipelining or len(commands) < 2 or self.framing == 'read':
            return [self.run(command) for command in commands]
        replies = []
        if self.framing is None:
            replies = self._probe_framing(commands[:2])
            if self.framing == 'read':
                stall = min(self.endpoint.timeout, PIPELINE_STALL)
                if self._unasked_reply():
                    # The second reply came after all: a slow server that frames per line. Start afresh, in lock-step.
                    self.framing = 'line'
                    self._fall_back(_Broken('answered the second of two commands after more than %gs' % stall), 1, len(commands))
                else:
                    self.warnings.append('%s answered only one of two commands sent in one write (none more within %gs): it takes '
                                         'one command per read, so the reads went one at a time in the same session '
                                         '(pipeline_depth 1 avoids the wait)' % (self._where(), stall))
                # The probe's first reply may answer the whole two-line read: both are asked again, one per write.
                return [self.run(command) for command in commands]
        return replies + self._pipeline(commands[len(replies):])

    def _read_checked(self, command):
        reply = self._read_reply(command)
        try:
            check_reply(command, reply)
        except ValueError as exc:
            raise _Broken('answered %s out of step: %s' % (describe_command(command), mask_text(str(exc)))) from None
        return reply

    def _probe_framing(self, pair):
        """Send two reads in one write: a server that frames per line answers both, one that takes a command per read only one."""
        try:
            self._sock.settimeout(self.endpoint.timeout)
            self._reply_deadline()
            self._send_many(pair)
            first = self._read_checked(pair[0])
            stall = min(self.endpoint.timeout, PIPELINE_STALL)
            self._sock.settimeout(stall)
            self._reply_deadline()
            try:
                second = self._read_checked(pair[1])
            except MagratheaTimeout:
                if self._buffer or self.deadline.expired:
                    raise
                self.framing = 'read'
                return [first]
            self.framing = 'line'
            return [first, second]
        except (_Broken, ProtocolError, MagratheaConnectionError) as exc:
            self._fall_back(exc, 0, len(pair))
            return [self.run(command) for command in pair]

    def _pipeline(self, commands):
        replies = []
        pending = collections.deque()
        position = 0
        try:
            self._sock.settimeout(min(self.endpoint.timeout, PIPELINE_STALL))
            while position < len(commands) or pending:
                # Top the window up once a quarter of it is free: few TLS records, and the server never idles.
                if position < len(commands) and len(pending) <= self.pipeline_depth - max(1, self.pipeline_depth // 4):
                    batch = commands[position:position + self.pipeline_depth - len(pending)]
                    position += len(batch)
                    self._send_many(batch)
                    pending.extend(batch)
                self._reply_deadline()
                replies.append(self._read_checked(pending[0]))
                pending.popleft()
        except (_Broken, ProtocolError, MagratheaConnectionError) as exc:
            self._fall_back(exc, len(replies), len(commands))
            for command in list(pending) + commands[position:]:
                replies.append(self.run(command))
        return replies

    def _fall_back(self, reason, answered, total):
        self.pipelining = False
        self.warnings.append('%s did not keep in step with pipelined commands after %d of %d replies (it %s); reconnected and continued '
                             'one command at a time' % (self._where(), answered, total, getattr(reason, 'reason', None) or reason))
        self._reconnect()
