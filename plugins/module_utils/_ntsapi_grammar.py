# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The NTSAPI grammar: every format of the protocol, checked in one place.

Private to this collection: not for use by other collections.

Owns what a command and a reply may look like, and nothing that talks to a
server: the reply line ``<digit> <message>``; the command words and their
classes (read-only, multi-line, session); the number formats (UK national,
ported ``P``, ``+`` international), including an integer that YAML made of an
unquoted number; the target forms, their kinds and the masking of an IAX2
secret; ORDE periods, feature letters, ALLO/ALTEN/ALIST patterns; the 999
fields with their published limits and the UK postcode; the typed STAT reply
(both readings of several targets) and the other typed replies; and the line
check every command passes before it is sent (printable ASCII, no control
character, at most MAX_COMMAND_LENGTH characters). Every format check is a
whole-string match over ASCII, and every problem names the option it came from.
"""

from __future__ import annotations

import re

from ansible_collections.magrathea.secure.plugins.module_utils._text import MASK, is_decimal, shown_value, text_problem

REPLY_RE = re.compile(r'([0-9])[ \t]+(.*)')
# The longest command line this client sends: a 999 field or a SIP target fits many times over; a server need not see more.
MAX_COMMAND_LENGTH = 512

READ_ONLY_VERBS = frozenset(('STAT', 'ALIST', 'BLKINFO'))
INFO_READ_SUBCOMMANDS = frozenset(('STATUS', 'DATA'))
SESSION_VERBS = frozenset(('AUTH', 'QUIT'))

NATIONAL_RE = re.compile(r'0[0-9]{9,10}')
PORTED_RE = re.compile(r'P[0-9]{9,10}')
INTERNATIONAL_RE = re.compile(r'\+[0-9]{6,15}')
EXPIRY_RE = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}')
# ALIST takes a prefix; ALLO and ALTEN a whole number (10 or 11 characters) where _ stands for any one digit.
PREFIX_RE = re.compile(r'[0-9_]{1,11}')
PATTERN_RE = re.compile(r'[0-9_]{10,11}')
RANGE_RE = re.compile(r'[0-9]{9,10}_')
# ORDE periods as the sandbox takes them (HHMM-HHMM, comma separated); the real format is not published, so this stays lenient.
PERIODS_RE = re.compile(r'[0-9][0-9:,-]{0,99}')
FEATURE_RE = re.compile(r'[A-Z]')

_HOST = r'[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?'
_EMAIL = r"[A-Za-z0-9._%+'=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_IAX2_SECRET = r'(?:(?![@:|])[!-~])+'
# (kind, how it is written, regex) in the order the accepted forms are listed to the user.
TARGET_FORMS = (
    ('divert', '441234567890 (divert to a phone number, international digits without +)', re.compile(r'[1-9][0-9]{6,14}')),
    ('sip', 'S:user@host (SIP, RFC2833 DTMF)', re.compile(r'S:[A-Za-z0-9._~+*#-]+@' + _HOST)),
    ('sip-inband', 's:user@host (SIP, inband DTMF)', re.compile(r's:[A-Za-z0-9._~+*#-]+@' + _HOST)),
    ('tls', 'E:user@host (SIP over TLS/SRTP)', re.compile(r'E:[A-Za-z0-9._~+*#-]+@' + _HOST)),
    ('iax2', 'I:user:secret@host (IAX2)', re.compile(r'I:[A-Za-z0-9._~+-]+:' + _IAX2_SECRET + '@' + _HOST)),
    ('fax2email', 'F:fax@example.com (fax to email)', re.compile(r'F:' + _EMAIL)),
    ('voice2email', 'V:voicemail@example.com (voicemail to email)', re.compile(r'V:' + _EMAIL)),
)
TARGET_PREFIX_KINDS = {'S:': 'sip', 's:': 'sip-inband', 'E:': 'tls', 'I:': 'iax2', 'F:': 'fax2email', 'V:': 'voice2email'}
ACCEPTED_TARGET_FORMS = '; '.join(form for dummy, form, dummy in TARGET_FORMS)
# The secret of an IAX2 target wherever it stands in a text: a command, a STAT reply, a message.
IAX2_SECRET_RE = re.compile(r'(I:[^\s:@|]*:)([^\s@|]+)(?=@)')

# 999 fields in the order NTSAPI lists them, with their published maximum lengths (postcode: a UK postcode).
EMERGENCY_FIELDS = (('title', 20), ('forename', 20), ('name', 50), ('honours', 30), ('bussuffix', 50),
                    ('premises', 60), ('thoroughfare', 55), ('locality', 30), ('postcode', None))
EMERGENCY_REQUIRED = ('name', 'postcode')
# Royal Mail shapes: A9 9AA, A99 9AA, A9A 9AA, AA9 9AA, AA99 9AA, AA9A 9AA, and GIR 0AA.
POSTCODE_RE = re.compile(r'GIR ?0AA|[A-PR-UWYZ](?:[0-9][0-9A-HJKPSTUW]?|[A-HK-Y][0-9][0-9ABEHMNPRV-Y]?) ?[0-9][ABD-HJLNP-UW-Z]{2}')
# For INFO <n> 999 STATUS the digit is the status, not success or failure.
EMERGENCY_STATUS_TEXT = {
    0: 'Accepted', 1: 'Info received', 2: 'Info awaiting further validation', 3: 'Info submitted',
    6: 'Submitted - Awaiting manual processing', 8: 'Rejected', 9: 'No record found',
}
# The FEAT <n> listing as the sandbox answers it (the real shape is not published): anything else is unreadable, never guessed.
FEATURES_RE = re.compile(r'(?i:features)[ \t]+((?i:none)|[A-Z]+)[ \t]*')


# -- text that reaches a message ---------------------------------------------------------------------


def mask_text(text):
    """``text`` with the secret of every IAX2 target (``I:user:secret@host``) shown as ********."""
    return IAX2_SECRET_RE.sub(lambda match: match.group(1) + MASK, text) if text else text


def target_secrets(text):
    """The IAX2 secrets in ``text`` (to be kept out of every output)."""
    return [match.group(2) for match in IAX2_SECRET_RE.finditer(text or '')]


def refusal(problems, limit=20):
    """One message for everything wrong with a task's input (at most ``limit`` problems, then a count); nothing was sent."""
    shown = '; '.join(problems[:limit])
    if len(problems) > limit:
        shown += '; and %d more problems' % (len(problems) - limit)
    return shown + '. Nothing was sent.'


def describe_command(command):
    """The command as it may appear in a message or a result: AUTH never shows its arguments, an IAX2 secret is masked."""
    return 'AUTH' if command_verb(command) == 'AUTH' else mask_text(command)


# -- command lines -------------------------------------------------------------------------------------


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


def is_emergency_status(command):
    words = command.split()
    return command_verb(command) == 'INFO' and len(words) == 4 and words[2] == '999' and words[3].upper() == 'STATUS'


def check_command(line, option='command'):
    """Return ``line`` when it can travel as one NTSAPI command line, else raise ValueError naming ``option``.

    Printable ASCII only (no CR, LF or other control character, nothing beyond ASCII), not empty, at most
    MAX_COMMAND_LENGTH characters. The message shows the line bounded, with an IAX2 secret masked, never an AUTH line.
    """
    problem = text_problem(line, printable=True, max_length=MAX_COMMAND_LENGTH)
    if problem is None and not line.strip():
        problem = 'is empty'
    if problem is None:
        return line
    shown = '' if not isinstance(line, str) or command_verb(line) == 'AUTH' else ' ' + shown_value(mask_text(line))
    raise ValueError('%s%s %s; a command is one line of printable ASCII, at most %d characters'
                     % (option, shown, problem, MAX_COMMAND_LENGTH))


def command(*words):
    """One command line from its words, checked before it can be sent."""
    return check_command(' '.join(str(word) for word in words))


def check_raw_commands(commands):
    """ValueError for a user's list that cannot be run: AUTH/QUIT (the session owns them) or a line that breaks the grammar."""
    for index, line in enumerate(commands):
        option = 'commands[%d]' % index
        if not isinstance(line, str):
            raise ValueError('%s is not text' % option)
        verb = command_verb(line)
        if verb in SESSION_VERBS:
            raise ValueError('%s is %s: the module logs in and out itself (username/password), remove it from the list' % (option, verb))
        check_command(line, option)


# -- numbers -------------------------------------------------------------------------------------------


def _yaml_integer_hint(text, whole=True):
    """What to say when ``text`` looks like a number (``whole``) or prefix that YAML read as an integer.

    YAML reads an unquoted 02012300002 as the octal integer 271155202, and any unquoted number loses its leading 0.
    """
    if not text.isdigit() or not text.isascii() or text.startswith('0'):
        return ''
    octal = '0%o' % int(text)
    if NATIONAL_RE.fullmatch(octal) or not whole:
        return ('; it looks like %s, which YAML read as the octal integer %s because it was not quoted: quote it ("%s")'
                % (octal, text, octal))
    return '; if YAML read it as an integer (an unquoted number loses its leading 0), quote it: "0%s"' % text


def normalize_number(value, option='number'):
    """The number as NTSAPI wants it: UK national (``01792100001``), ported (``P1792100001``) or ``+`` international.

    Spaces, dots, dashes and brackets are dropped and ``+44``/``0044`` becomes ``0``. Raises ValueError naming ``option``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    problem = text_problem(value, printable=True)
    if problem:
        raise ValueError('%s %s %s' % (option, shown_value(value) if isinstance(value, str) else repr(value), problem))
    text = re.sub(r'[ .()-]', '', value)
    if text.startswith('0044'):
        text = '+44' + text[4:]
    if text.startswith('+44'):
        text = '0' + text[3:]
    if NATIONAL_RE.fullmatch(text) or PORTED_RE.fullmatch(text) or INTERNATIONAL_RE.fullmatch(text):
        return text
    raise ValueError('%s %s is not a telephone number NTSAPI accepts: use UK national format ("01792100001"), P instead of the '
                     'leading 0 for a number ported in ("P1792100001"), or +<country code><number>%s'
                     % (option, shown_value(value), _yaml_integer_hint(text)))


def normalize_numbers(values, option='numbers'):
    """(numbers in the order given without duplicates, problems) for a list of numbers; nothing raised."""
    numbers, problems = [], []
    for index, value in enumerate(values or []):
        try:
            number = normalize_number(value, '%s[%d]' % (option, index))
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if number not in numbers:
            numbers.append(number)
    return numbers, problems


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


def check_prefix(prefix, option='prefix'):
    """An ALIST prefix of a UK number: 1 to 11 digits starting with 0, ``_`` for any one digit."""
    text = str(prefix) if isinstance(prefix, int) and not isinstance(prefix, bool) else prefix
    problem = text_problem(text, printable=True)
    if problem or not PREFIX_RE.fullmatch(text) or text[0] not in '0_':
        raise ValueError('%s %s %s1 to 11 digits starting with 0 (or _ for any one digit), e.g. "01792"%s'
                         % (option, shown_value(text) if isinstance(text, str) else repr(text), problem + '; give ' if problem else 'must be ',
                            '' if problem else _yaml_integer_hint(text, whole=False)))
    return text


def pattern_regex(pattern):
    """An ALLO/ALTEN pattern (``_`` = any one digit) as a compiled regex for whole numbers."""
    return re.compile(''.join('[0-9]' if char == '_' else re.escape(char) for char in pattern))


# -- targets -------------------------------------------------------------------------------------------


def target_kind(target):
    """sip, sip-inband, tls, iax2, fax2email, voice2email, divert, unknown, or None for an empty slot."""
    if not target:
        return None
    if target.isdigit() and target.isascii():
        return 'divert'
    return TARGET_PREFIX_KINDS.get(target[:2], 'unknown')


def target_error(target):
    """None when ``target`` is one of the NTSAPI target forms, else a message naming the accepted forms."""
    problem = text_problem(target, printable=True, spaces=False)
    if problem is None and any(regex.fullmatch(target) for dummy, dummy, regex in TARGET_FORMS):
        return None
    shown = shown_value(mask_text(target)) if isinstance(target, str) else repr(target)
    return 'target %s %sis not one of the NTSAPI target forms. Accepted forms: %s' % (
        shown, '%s and ' % problem if problem else '', ACCEPTED_TARGET_FORMS)


def expand_target(template, number):
    """``{number}`` and ``{international}`` in a target become this number's national and international digits."""
    return template.replace('{number}', national_form(number)).replace('{international}', international_digits(number))


# -- 999 fields ----------------------------------------------------------------------------------------


def normalize_postcode(value):
    """``SA1 1AA`` form (upper case, one space before the inward code), or None when it is not a UK postcode."""
    compact = re.sub(r'[ \t]', '', value).upper()
    if not POSTCODE_RE.fullmatch(compact):
        return None
    return compact[:-3] + ' ' + compact[-3:]


def emergency_field_problem(field, value):
    """Why a 999 field cannot be sent (a phrase), or None; ``value`` is as NTSAPI stores it (white space collapsed)."""
    limit = dict(EMERGENCY_FIELDS)[field]
    problem = text_problem(value, printable=True)
    if problem:
        return problem
    if field in EMERGENCY_REQUIRED and not value:
        return 'must not be empty'
    if field == 'postcode':
        return None if normalize_postcode(value) else 'is not a UK postcode (e.g. SA1 1AA)'
    if len(value) > limit:
        return 'is %d characters long; NTSAPI allows at most %d' % (len(value), limit)
    return None


# -- replies -------------------------------------------------------------------------------------------


def parse_line(line):
    """(code, message) of one reply line, or None when it breaks the grammar ``<digit> <message>``."""
    match = REPLY_RE.fullmatch(line)
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
        """The reply as a module returns it: an IAX2 secret masked in the command, the message and the lines."""
        return {'command': describe_command(self.command), 'code': self.code, 'message': mask_text(self.message),
                'lines': [mask_text(line) for line in self.lines]}

    def __repr__(self):
        return 'Reply(%r, %d, %r, %r)' % (describe_command(self.command), self.code, mask_text(self.message), self.lines)


class NumberStatus:
    """A typed STAT reply, in either reading of several targets.

    ``0 <number> <Y|N> <YYYY-MM-DD> <t1>|<t2>|<t3>`` (magrathea-cli) or ``0 <number> <Y|N> <YYYY-MM-DD> <t1>|<number> <Y|N>
    <YYYY-MM-DD> <t2>|...`` (Magrathea::API reads each piece so); empty slots are tolerated in both.
    """

    __slots__ = ('number', 'active', 'expiry', 'targets')

    def __init__(self, number, active, expiry, targets):
        self.number = number
        self.active = active
        self.expiry = expiry
        self.targets = list(targets)

    @classmethod
    def from_message(cls, message):
        """Parse the message of a successful STAT reply; ValueError when it has neither shape."""
        shown = mask_text(message)
        pieces = message.split('|')
        words = pieces[0].split()
        if len(words) not in (3, 4):
            raise ValueError('STAT reply %r is not "<number> <Y|N> <expiry> <targets>"' % shown)
        number, flag, expiry = words[0], words[1].upper(), words[2]
        if flag not in ('Y', 'N'):
            raise ValueError('STAT reply %r: active flag %r is neither Y nor N' % (shown, words[1]))
        if not EXPIRY_RE.fullmatch(expiry):
            raise ValueError('STAT reply %r: expiry %r is not YYYY-MM-DD' % (shown, expiry))
        slots = [words[3] if len(words) == 4 else '']
        for piece in pieces[1:]:
            words = piece.split()
            if len(words) <= 1:
                slots.append(words[0] if words else '')
            elif len(words) in (3, 4) and same_number(words[0], number) and EXPIRY_RE.fullmatch(words[2]):
                slots.append(words[3] if len(words) == 4 else '')
            else:
                raise ValueError('STAT reply %r: target piece %r is neither "<target>" nor "<number> <Y|N> <expiry> <target>"'
                                 % (shown, mask_text(piece)))
        if len(slots) > 3 and any(slots[3:]):
            raise ValueError('STAT reply %r has more than three targets' % shown)
        return cls(number, flag == 'Y', expiry, (slots + ['', '', ''])[:3])


def parse_features(reply):
    """Enabled feature letters from the ``FEAT <n>`` listing, or None when it was refused or cannot be read.

    The listing's shape is not published (the sandbox answers ``0 Features DJ`` / ``0 Features none``); any other shape is
    unreadable rather than guessed, so that no feature is switched on a misreading.
    """
    if not reply.ok:
        return None
    match = FEATURES_RE.fullmatch(reply.message.strip())
    if not match:
        return None
    letters = match.group(1)
    return [] if letters.lower() == 'none' else sorted(set(letters))


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
    """{first, quantity} of a BLKINFO reply, or None when the number is in no block."""
    if not reply.ok:
        return None
    first, quantity = reply.message.split()[:2]
    return {'first': first, 'quantity': int(quantity)}


def check_reply(command_line, reply):
    """Raise ValueError when ``reply`` cannot be the answer to ``command_line`` (how a pipelined mix-up shows)."""
    if not reply.ok:
        return
    verb = command_verb(command_line)
    words = command_line.split()
    if verb == 'STAT':
        status = NumberStatus.from_message(reply.message)
        if len(words) > 1 and not same_number(status.number, words[1]):
            raise ValueError('the reply is about %s, not %s' % (status.number, words[1]))
    elif verb == 'BLKINFO':
        fields = reply.message.split()
        if len(fields) < 2 or not is_decimal(fields[1]):
            raise ValueError('BLKINFO reply %r is not "<first> <quantity>"' % reply.message)
    elif verb == 'ALIST':
        for line in reply.lines:
            if not line.split() or not is_decimal(line.split()[0].lstrip('+')):
                raise ValueError('ALIST line %r is not a number' % line)
    elif verb in ('ALLO', 'ALTEN'):
        pattern = words[1] if len(words) > 1 else ''
        got = reply.message.split()[0] if reply.message.split() else ''
        if verb == 'ALLO':
            fits = bool(pattern_regex(pattern).fullmatch(got))
        else:
            fits = bool(RANGE_RE.fullmatch(got)) and len(got) == len(pattern) and bool(pattern_regex(pattern[:-1]).fullmatch(got[:-1]))
        if not fits:
            raise ValueError('%s reply %r does not name %s matching %s'
                             % (verb, reply.message, 'a number' if verb == 'ALLO' else 'a range of ten numbers', pattern))
