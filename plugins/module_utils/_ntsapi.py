# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The NTSAPI line protocol over TLS: one authenticated session and what is read through it.

Private to this collection: not for use by other collections.

Owns the wire side of NTSAPI: the reply grammar ``^(\\d)\\s+(.*)$``, single- and
multi-line replies, which commands only read (and may be pipelined) and which
change something (always lock-step), the session (greeting, one AUTH, QUIT),
pipelining with its fall-back to lock-step, typed STAT replies, the target
forms and the number formats. TLS itself comes from ``_tls``.
"""

from __future__ import annotations

import collections
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
    connection_argument_spec,
    endpoint_from_module,
)

REPLY_RE = re.compile(r'^(\d)\s+(.*)$')
LINE_ENDING = '\r\n'
MAX_LINE = 8192
DEFAULT_PIPELINE_DEPTH = 128
MAX_PIPELINE_DEPTH = 1024
# A server that silently ignores pipelined commands costs at most this long before the fall-back.
PIPELINE_STALL = 5.0
QUIT_TIMEOUT = 5.0
RECONNECT_DELAYS = (0.2, 0.5, 1.0)

READ_ONLY_VERBS = frozenset(('STAT', 'ALIST', 'BLKINFO'))
INFO_READ_SUBCOMMANDS = frozenset(('STATUS', 'DATA'))
SESSION_VERBS = frozenset(('AUTH', 'QUIT'))

NATIONAL_RE = re.compile(r'^0\d{9,10}$')
PORTED_RE = re.compile(r'^P\d{9,10}$')
INTERNATIONAL_RE = re.compile(r'^\+\d{6,15}$')
EXPIRY_RE = re.compile(r'^\d{4}-\d{2}-\d{2}$')

_HOST = r'[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?'
_EMAIL = r"[A-Za-z0-9._%+'=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
# (kind, how it is written, regex) in the order the accepted forms are listed to the user.
TARGET_FORMS = (
    ('divert', '441234567890 (divert to a phone number, international digits without +)', re.compile(r'^[1-9]\d{6,14}$')),
    ('sip', 'S:user@host (SIP, RFC2833 DTMF)', re.compile(r'^S:[A-Za-z0-9._~+*#-]+@' + _HOST + '$')),
    ('sip-inband', 's:user@host (SIP, inband DTMF)', re.compile(r'^s:[A-Za-z0-9._~+*#-]+@' + _HOST + '$')),
    ('tls', 'E:user@host (SIP over TLS/SRTP)', re.compile(r'^E:[A-Za-z0-9._~+*#-]+@' + _HOST + '$')),
    ('iax2', 'I:user:secret@host (IAX2)', re.compile(r'^I:[A-Za-z0-9._~+-]+:[^\s@:|]+@' + _HOST + '$')),
    ('fax2email', 'F:fax@example.com (fax to email)', re.compile(r'^F:' + _EMAIL + '$')),
    ('voice2email', 'V:voicemail@example.com (voicemail to email)', re.compile(r'^V:' + _EMAIL + '$')),
)
TARGET_PREFIX_KINDS = {'S:': 'sip', 's:': 'sip-inband', 'E:': 'tls', 'I:': 'iax2', 'F:': 'fax2email', 'V:': 'voice2email'}
ACCEPTED_TARGET_FORMS = '; '.join(form for dummy, form, dummy in TARGET_FORMS)
MASK = '********'


# -- commands -------------------------------------------------------------------------------


def command_verb(command):
    words = command.split(None, 1)
    return words[0].upper() if words else ''


def is_read_only(command):
    """True for commands that only read: STAT, ALIST, BLKINFO, INFO <n> 999 STATUS|DATA and FEAT <n> (list features)."""
    words = command.split()
    verb = command_verb(command)
    if verb in READ_ONLY_VERBS:
        return True
    if verb == 'INFO':
        return len(words) == 4 and words[2] == '999' and words[3].upper() in INFO_READ_SUBCOMMANDS
    if verb == 'FEAT':
        return len(words) == 2
    return False


def is_multi_line(command):
    """ALIST and INFO <n> 999 DATA answer with ``0 ...`` lines ended by the first non-zero line."""
    words = command.split()
    verb = command_verb(command)
    return verb == 'ALIST' or (verb == 'INFO' and len(words) == 4 and words[2] == '999' and words[3].upper() == 'DATA')


def describe_command(command):
    """The command as it may appear in a message: AUTH never shows its arguments."""
    return 'AUTH' if command_verb(command) == 'AUTH' else command


def check_command(command):
    """Raise ValueError when ``command`` cannot travel as one NTSAPI line."""
    if not command or not command.strip():
        raise ValueError('an empty command cannot be sent')
    if '\r' in command or '\n' in command:
        raise ValueError('a command must be one line, without CR or LF')
    if any(ord(char) < 32 for char in command):
        raise ValueError('a command must not hold control characters')


def parse_line(line):
    """(code, message) of one reply line, or None when it breaks the grammar."""
    match = REPLY_RE.match(line)
    if not match:
        return None
    return int(match.group(1)), match.group(2)


class Reply:
    """The answer to one command: code and message of the final line, plus the data lines of a multi-line reply.

    A multi-line reply with at least one data line has code 0 (its non-zero final line only ends the list).
    """

    __slots__ = ('command', 'code', 'message', 'lines')

    def __init__(self, command, code, message, lines=None):
        self.command = command
        self.code = code
        self.message = message
        self.lines = lines if lines is not None else []

    @property
    def ok(self):
        return self.code == 0

    def to_dict(self):
        return {'command': describe_command(self.command), 'code': self.code, 'message': self.message, 'lines': list(self.lines)}

    def __repr__(self):
        return 'Reply(%r, %d, %r, %r)' % (describe_command(self.command), self.code, self.message, self.lines)


# -- numbers and targets --------------------------------------------------------------------


def normalize_number(value):
    """The number as NTSAPI wants it: UK national (``01792100001``), ported (``P1792100001``) or ``+`` international.

    Spaces, dots, dashes and brackets are dropped and ``+44``/``0044`` becomes ``0``. Raises ValueError.
    """
    text = re.sub(r'[\s.()-]', '', str(value))
    if text.startswith('0044'):
        text = '+44' + text[4:]
    if text.startswith('+44'):
        text = '0' + text[3:]
    if NATIONAL_RE.match(text) or PORTED_RE.match(text) or INTERNATIONAL_RE.match(text):
        return text
    raise ValueError('%r is not a telephone number NTSAPI accepts: use UK national format (01792100001), '
                     'P instead of the leading 0 for a number ported in (P1792100001), or +<country code><number>' % (value,))


def national_form(number):
    """ALLO, ACTI, DEAC, REAC and FEAT address a ported number with its leading 0."""
    return '0' + number[1:] if number.startswith('P') else number


def international_digits(number):
    """Digits in international form without + (what a SIP user part or a divert carries)."""
    if number.startswith('+'):
        return number[1:]
    return '44' + number[1:]


def same_number(left, right):
    return national_form(left) == national_form(right)


def target_kind(target):
    """sip, sip-inband, tls, iax2, fax2email, voice2email, divert, unknown, or None for an empty slot."""
    if not target:
        return None
    if target.isdigit():
        return 'divert'
    return TARGET_PREFIX_KINDS.get(target[:2], 'unknown')


def target_error(target):
    """None when ``target`` is one of the NTSAPI target forms, else a message naming the accepted forms."""
    if any(regex.match(target) for dummy, dummy, regex in TARGET_FORMS):
        return None
    return 'target %r is not one of the NTSAPI target forms. Accepted forms: %s' % (mask_target(target), ACCEPTED_TARGET_FORMS)


def mask_target(target):
    """The IAX2 secret in ``I:user:secret@host`` is shown as ********."""
    match = re.match(r'^(I:[^:@]*:)([^@]*)(@.*)$', target or '')
    if match:
        return match.group(1) + MASK + match.group(3)
    return target


class NumberStatus:
    """A typed STAT reply: ``0 <number> <Y|N> <YYYY-MM-DD> <t1>|<t2>|<t3>``, empty target slots tolerated."""

    __slots__ = ('number', 'active', 'expiry', 'targets')

    def __init__(self, number, active, expiry, targets):
        self.number = number
        self.active = active
        self.expiry = expiry
        self.targets = list(targets)

    @classmethod
    def from_message(cls, message):
        """Parse the message of a successful STAT reply; ValueError when it does not have that shape."""
        words = message.split(None, 3)
        if len(words) < 3:
            raise ValueError('STAT reply %r has fewer than three fields (number, Y/N, expiry)' % message)
        number, flag, expiry = words[0], words[1].upper(), words[2]
        if flag not in ('Y', 'N'):
            raise ValueError('STAT reply %r: active flag %r is neither Y nor N' % (message, words[1]))
        if not EXPIRY_RE.match(expiry):
            raise ValueError('STAT reply %r: expiry %r is not YYYY-MM-DD' % (message, expiry))
        slots = [slot.strip() for slot in words[3].split('|')] if len(words) == 4 else []
        if len(slots) > 3 and any(slots[3:]):
            raise ValueError('STAT reply %r has more than three targets' % message)
        slots = (slots + ['', '', ''])[:3]
        return cls(number, flag == 'Y', expiry, slots)

    def to_dict(self):
        return {
            'number': self.number,
            'active': self.active,
            'expiry': self.expiry,
            'targets': [{'index': index, 'value': mask_target(value), 'kind': target_kind(value)}
                        for index, value in enumerate(self.targets, 1) if value],
        }


def check_reply(command, reply):
    """Raise ValueError when ``reply`` cannot be the answer to ``command`` (how a pipelined mix-up shows)."""
    if not reply.ok:
        return
    verb = command_verb(command)
    words = command.split()
    if verb == 'STAT':
        status = NumberStatus.from_message(reply.message)
        if len(words) > 1 and not same_number(status.number, words[1]):
            raise ValueError('the reply is about %s, not %s' % (status.number, words[1]))
    elif verb == 'BLKINFO':
        fields = reply.message.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise ValueError('BLKINFO reply %r is not "<first> <quantity>"' % reply.message)
    elif verb == 'ALIST':
        for line in reply.lines:
            if not line.split() or not line.split()[0].lstrip('+').isdigit():
                raise ValueError('ALIST line %r is not a number' % line)
    elif verb == 'ALLO':
        pattern = words[1] if len(words) > 1 else ''
        got = reply.message.split()[0] if reply.message.split() else ''
        if not re.match('^' + ''.join(r'\d' if char == '_' else re.escape(char) for char in pattern) + '$', got):
            raise ValueError('ALLO reply %r does not name a number matching %s' % (reply.message, pattern))


# -- the session ----------------------------------------------------------------------------


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

    ``query()`` pipelines read-only commands ``pipeline_depth`` at a time; when the
    server answers out of step, breaks the grammar, closes or stalls, the session
    reconnects once, says so in ``warnings`` and carries on in lock-step.
    ``run()`` sends one command and waits for its reply (every mutating command).
    """

    def __init__(self, endpoint, username, password, pipeline_depth=DEFAULT_PIPELINE_DEPTH):
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
        self.warnings = []
        self.greeting = None
        self.sessions = 0
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
        self._sock = self.endpoint.connect()
        self._buffer = b''
        self.sessions += 1
        try:
            self._greet_and_log_in()
        except MagratheaError:
            self._drop()
            raise

    def _greet_and_log_in(self):
        greeting = self._read_reply('(greeting)', single=True)
        if not greeting.ok:
            raise MagratheaConnectionError('%s refused the session: %d %s; try again later or check the connection limit of the account'
                                           % (self._where(), greeting.code, greeting.message))
        self.greeting = greeting.message
        self._send('AUTH %s %s' % (self.username, self._password), 'AUTH')
        reply = self._read_reply('AUTH', single=True)
        if not reply.ok:
            raise AuthenticationError('%s refused AUTH for user %s: %d %s. Not retried, because Magrathea blocks repeated failed '
                                      'logins; check username and password (MAGRATHEA_NTSAPI_USERNAME, MAGRATHEA_NTSAPI_PASSWORD)'
                                      % (self._where(), self.username, reply.code, self._redact(reply.message)))

    def close(self):
        """Send QUIT (best effort) and close the connection."""
        if self._sock is None:
            return
        try:
            self._sock.settimeout(min(self.endpoint.timeout or QUIT_TIMEOUT, QUIT_TIMEOUT))
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
        """A fresh session after the pipelined one broke; a server at its connection limit gets a few moments."""
        self._drop()
        for delay in RECONNECT_DELAYS + (None,):
            try:
                self.open()
                return
            except AuthenticationError:
                raise
            except MagratheaConnectionError:
                if delay is None:
                    raise
                time.sleep(delay)

    # -- wire --

    def _redact(self, text):
        return text.replace(self._password, MASK) if self._password else text

    def _send(self, text, label):
        if self._sock is None:
            raise MagratheaConnectionError('%s: the session is closed; cannot send %s' % (self._where(), describe_command(label)))
        try:
            self._sock.sendall(text.encode('utf-8') + LINE_ENDING.encode('ascii'))
        except socket.timeout:
            raise _wire_error(MagratheaTimeout, self._where(), 'did not accept %s within %ss' % (describe_command(label), self.endpoint.timeout),
                              _next_step(label, timeout=True)) from None
        except (OSError, ssl.SSLError) as exc:
            raise _wire_error(MagratheaConnectionError, self._where(), 'lost the connection while we sent %s (%s)' % (describe_command(label), exc),
                              _next_step(label)) from None

    def _send_many(self, commands):
        try:
            self._sock.sendall(''.join(command + LINE_ENDING for command in commands).encode('utf-8'))
        except (OSError, ssl.SSLError) as exc:
            raise _wire_error(MagratheaConnectionError, self._where(), 'lost the connection while we sent %d pipelined commands starting with %s (%s)'
                              % (len(commands), commands[0], exc), 'nothing was changed by them; run the task again') from None

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
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise _wire_error(MagratheaTimeout, self._where(), 'sent no reply to %s within %ss' % (shown, self._sock.gettimeout()),
                                  _next_step(label, timeout=True)) from None
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

    # -- commands --

    def run(self, command):
        """Send one command and return its reply (lock-step). The reply must fit the command."""
        check_command(command)
        if command_verb(command) in SESSION_VERBS:
            raise ValueError('AUTH and QUIT belong to the session and cannot be sent as commands')
        if self._sock is None:
            raise MagratheaConnectionError('%s: the session is closed; cannot send %s' % (self._where(), command))
        self._sock.settimeout(self.endpoint.timeout)
        self._send(command, command)
        reply = self._read_reply(command)
        try:
            check_reply(command, reply)
        except ValueError as exc:
            raise ProtocolError('%s answered %s with something that does not fit it: %s' % (self._where(), command, exc)) from None
        return reply

    def query(self, commands):
        """Replies to read-only ``commands`` in order, pipelined while the server keeps in step."""
        commands = list(commands)
        for command in commands:
            check_command(command)
            if not is_read_only(command):
                raise ValueError('%s changes something and is never pipelined; send it with run()' % describe_command(command))
        if self._sock is None and commands:
            raise MagratheaConnectionError('%s: the session is closed; cannot send %s' % (self._where(), commands[0]))
        if not self.pipelining or len(commands) < 2:
            return [self.run(command) for command in commands]
        replies = []
        pending = collections.deque()
        position = 0
        try:
            self._sock.settimeout(min(self.endpoint.timeout or PIPELINE_STALL, PIPELINE_STALL))
            while position < len(commands) or pending:
                # Top the window up once a quarter of it is free: few TLS records, and the server never idles.
                if position < len(commands) and len(pending) <= self.pipeline_depth - max(1, self.pipeline_depth // 4):
                    batch = commands[position:position + self.pipeline_depth - len(pending)]
                    position += len(batch)
                    self._send_many(batch)
                    pending.extend(batch)
                command = pending[0]
                reply = self._read_reply(command)
                try:
                    check_reply(command, reply)
                except ValueError as exc:
                    raise _Broken('answered %s out of step: %s' % (command, exc)) from None
                pending.popleft()
                replies.append(reply)
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


# -- what the modules read and run through a session ----------------------------------------

EMERGENCY_STATUS_TEXT = {
    0: 'Accepted', 1: 'Info received', 2: 'Info awaiting further validation', 3: 'Info submitted',
    6: 'Submitted - Awaiting manual processing', 8: 'Rejected', 9: 'No record found',
}
FEATURES_RE = re.compile(r'^Features\s+(none|[A-Za-z]+)\s*$', re.IGNORECASE)
PATTERN_RE = re.compile(r'^[0-9_]{1,11}$')


def parse_features(reply):
    """Enabled feature letters from ``FEAT <n>`` (``0 Features DJ`` / ``0 Features none``); None when unreadable."""
    if not reply.ok:
        return None
    match = FEATURES_RE.match(reply.message)
    if not match:
        return None
    letters = match.group(1)
    return [] if letters.lower() == 'none' else sorted(set(letters.upper()))


def parse_emergency_data(reply):
    """999 fields from ``INFO <n> 999 DATA`` as {field: value}; None when there is no record (or it cannot be read)."""
    if not reply.ok:
        return None
    fields = {}
    for line in reply.lines:
        words = line.split(None, 1)
        if words:
            fields[words[0].lower()] = words[1].strip() if len(words) == 2 else ''
    return fields


def emergency_status(reply):
    """{code, text} of ``INFO <n> 999 STATUS``: the digit is the status (0 Accepted ... 9 No record found)."""
    return {'code': reply.code, 'text': EMERGENCY_STATUS_TEXT.get(reply.code, reply.message)}


def block_facts(reply):
    if not reply.ok:
        return None
    first, quantity = reply.message.split()[:2]
    return {'first': first, 'quantity': int(quantity)}


def number_facts(number, stat, block=None, data=None, status=None, features=None):
    """Structured facts about one number from its STAT reply and, when read, BLKINFO, 999 DATA/STATUS and FEAT."""
    facts = {'number': number}
    if stat.ok:
        parsed = NumberStatus.from_message(stat.message)
        facts.update(parsed.to_dict())
        facts['number'] = number
        facts['state'] = 'active' if parsed.active else 'inactive'
    else:
        facts.update({'state': 'unallocated', 'active': False, 'expiry': None, 'targets': [], 'message': stat.message})
    # BLKINFO, FEAT and INFO 999 only answer for a number held now; a refusal digit is no 999 status.
    held = facts['state'] == 'active'
    if block is not None:
        facts['block'] = block_facts(block) if held else None
    if data is not None:
        facts['emergency'] = parse_emergency_data(data) if held else None
    if status is not None:
        facts['emergency_status'] = emergency_status(status) if held else None
    if features is not None:
        facts['features'] = parse_features(features) if held else None
    return facts


def read_numbers(session, numbers, block=False, emergency=False, features=False):
    """Facts for many numbers with one pipelined burst of read-only commands."""
    kinds = [('stat', 'STAT %s')]
    if block:
        kinds.append(('block', 'BLKINFO %s'))
    if emergency:
        kinds.extend([('status', 'INFO %s 999 STATUS'), ('data', 'INFO %s 999 DATA')])
    if features:
        kinds.append(('features', 'FEAT %s'))
    commands = []
    for number in numbers:
        for kind, template in kinds:
            commands.append(template % (number if kind in ('stat', 'status', 'data') else national_form(number)))
    replies = iter(session.query(commands))
    facts = []
    for number in numbers:
        read = {kind: next(replies) for kind, dummy in kinds}
        facts.append(number_facts(number, read.pop('stat'), **read))
    return facts


def available_numbers(session, prefix, quantity):
    """ALIST: (numbers, final message); an empty list when none is available. Allocates nothing."""
    if not PATTERN_RE.match(prefix):
        raise ValueError('prefix %r must be 1 to 11 digits (or _ for any one digit), e.g. 01792' % (prefix,))
    reply = session.query(['ALIST %s %d' % (prefix, quantity)])[0]
    return [line.split()[0] for line in reply.lines], reply.message


class CommandOutcome:
    """What running a user's list of raw commands did: one entry per command, and the first refused one."""

    def __init__(self):
        self.results = []
        self.failed = None
        self.changed = False


def check_raw_commands(commands):
    """ValueError for a list that cannot be run: AUTH/QUIT (the session owns them) or a broken line. The text never echoes AUTH."""
    for index, command in enumerate(commands):
        verb = command_verb(command or '')
        if verb in SESSION_VERBS:
            raise ValueError('commands[%d] is %s: the module logs in and out itself (username/password), remove it from the list'
                             % (index, verb))
        try:
            check_command(command or '')
        except ValueError as exc:
            raise ValueError('commands[%d]: %s' % (index, exc)) from None


def run_raw_commands(session, commands, check_mode=False, accept_codes=(), accept_messages=(), outcome=None):
    """Run ``commands`` in order: read-only runs pipelined, the others lock-step; stop at the first reply not accepted.

    In check mode the mutating commands are not sent and are reported as skipped.
    A reply is accepted when its code is 0 or in ``accept_codes``, or its message matches one of ``accept_messages`` (regex).
    """
    patterns = [re.compile(pattern) for pattern in accept_messages]

    def accepted(reply):
        return reply.ok or reply.code in accept_codes or any(pattern.search(reply.message) for pattern in patterns)

    outcome = CommandOutcome() if outcome is None else outcome
    position = 0
    while position < len(commands) and outcome.failed is None:
        if is_read_only(commands[position]):
            end = position
            while end < len(commands) and is_read_only(commands[end]):
                end += 1
            batch = commands[position:end]
            replies = session.query(batch)
        else:
            end = position + 1
            batch = commands[position:end]
            if check_mode:
                outcome.results.append({'command': batch[0], 'code': None, 'message': None, 'lines': [], 'read_only': False, 'skipped': True})
                outcome.changed = True
                position = end
                continue
            replies = [session.run(batch[0])]
        for command, reply in zip(batch, replies):
            result = reply.to_dict()
            result.update(read_only=is_read_only(command), skipped=False)
            outcome.results.append(result)
            if not is_read_only(command) and reply.ok:
                outcome.changed = True
            if not accepted(reply):
                outcome.failed = result
                break
        position = end
    return outcome


# -- module glue ----------------------------------------------------------------------------


def ntsapi_argument_spec(**options):
    """The shared connection options (NTSAPI defaults and MAGRATHEA_NTSAPI_* fallbacks), pipeline_depth and ``options``."""
    spec = connection_argument_spec('NTSAPI')
    spec['pipeline_depth'] = dict(type='int', default=DEFAULT_PIPELINE_DEPTH)
    spec.update(options)
    return spec


def run_module_session(module, work, partial=None):
    """Open a session from the module's options, call ``work(session)`` and close with QUIT.

    Every collection error becomes one fail_json whose message names host:port; ``partial``
    (a callable returning what was done so far, as a dict) is returned with it. Pipelining fall-backs become warnings.
    """
    params = module.params
    if not 1 <= params['pipeline_depth'] <= MAX_PIPELINE_DEPTH:
        module.fail_json(msg='pipeline_depth must be between 1 (lock-step) and %d, not %d' % (MAX_PIPELINE_DEPTH, params['pipeline_depth']))
    endpoint = endpoint_from_module(module, 'NTSAPI')
    try:
        session = NtsapiSession(endpoint, params['username'], params['password'], params['pipeline_depth'])
    except ValueError as exc:
        module.fail_json(msg='%s: %s' % (endpoint.describe(), exc))
    try:
        with session:
            result = work(session)
    except (MagratheaError, ValueError) as exc:
        for warning in session.warnings:
            module.warn(warning)
        message = str(exc) if isinstance(exc, MagratheaError) else 'NTSAPI %s: %s' % (endpoint.describe(), exc)
        module.fail_json(msg=message, **(partial() if partial else {}))
    for warning in session.warnings:
        module.warn(warning)
    return result
