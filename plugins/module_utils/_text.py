# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Text that crosses a wire or reaches a message: the one policy for both.

Private to this collection: not for use by other collections.

Owns the checks every option that reaches a wire goes through before the
first byte (whole-string matches, ASCII only, no control characters,
published length limits, a message that names the option and never repeats
a secret), and the filter every server-supplied text goes through before it
reaches a message (secrets removed, one line, bounded length).
"""

from __future__ import annotations

import base64
import re

MASK = '********'
PREVIEW_LIMIT = 200


def text_problem(value, printable=True, spaces=True, max_length=None, pattern=None):
    """Why ``value`` cannot be sent (a short phrase), or None when it can.

    ``printable``: ASCII letters, digits, punctuation and the space only (no control character, nothing beyond ASCII).
    ``spaces``: whether a space may appear. ``pattern``: a compiled expression the whole value must match.
    """
    if not isinstance(value, str):
        return 'is %s, not text' % ('a number' if isinstance(value, (int, float)) else type(value).__name__)
    for char in value:
        if char in '\r\n':
            return 'holds a line break'
        if ord(char) < 32 or ord(char) == 127:
            return 'holds a control character (U+%04X)' % ord(char)
        if printable and not char.isascii():
            return 'holds a character outside ASCII (U+%04X); the service only takes ASCII' % ord(char)
        if not spaces and char.isspace():
            return 'holds white space'
    if max_length is not None and len(value) > max_length:
        return 'is %d characters long; at most %d are allowed' % (len(value), max_length)
    if pattern is not None and not pattern.fullmatch(value):
        return 'is not in the expected form'
    return None


def check_text(option, value, secret=False, expected=None, **rules):
    """Raise ValueError naming ``option`` when ``value`` breaks ``rules`` (see text_problem); return the value.

    A ``secret`` value is never repeated; other values are shown bounded and escaped. ``expected`` describes the form.
    """
    problem = text_problem(value, **rules)
    if problem is None:
        return value
    shown = '' if secret or not isinstance(value, str) else ' %s' % shown_value(value)
    hint = '; expected %s' % expected if expected else ''
    raise ValueError('%s%s %s%s' % (option, shown, problem, hint))


def is_decimal(text):
    """Whether ``text`` is one or more ASCII digits (str.isdigit also takes '²' and Arabic-Indic digits)."""
    return isinstance(text, str) and re.fullmatch(r'[0-9]+', text) is not None


def shown_value(value, limit=60):
    """A value as a message may repeat it: quoted, non-ASCII and control characters escaped, bounded."""
    text = value if isinstance(value, str) else str(value)
    return ascii(text if len(text) <= limit else text[:limit] + '...')


def secret_forms(username=None, password=None):
    """Every form in which credentials may come back in a server's text: the password, and the Basic auth token."""
    forms = []
    if password:
        forms.append(password)
        if username is not None:
            token = base64.b64encode(('%s:%s' % (username, password)).encode('utf-8')).decode('ascii')
            forms.extend((token, 'Basic ' + token))
    return sorted(set(forms), key=len, reverse=True)


def redact(text, secrets, mask=MASK):
    """``text`` with every secret replaced by ``mask`` (longest first, case-sensitive)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask)
    return text


def server_text(text, secrets=(), limit=PREVIEW_LIMIT):
    """Text a server supplied, made fit for a message: secrets removed, control characters escaped, one line, bounded."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    text = redact(str(text), secrets)
    text = ' '.join(text.split())
    text = re.sub(r'[^\x20-\x7e]', lambda match: '\\x%02x' % ord(match.group()) if ord(match.group()) < 256 else '?', text)
    # Redact again: splitting on white space could have joined a secret that a line break had cut.
    text = redact(text, secrets)
    if len(text) > limit:
        text = text[:limit] + '...'
    return text
