# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A small DER reader for what the trust modules need from certificates and PKCS#12 keystores.

Private to this collection: not for use by other collections.

Owns walking DER elements (definite lengths only, as DER requires), their
children and object identifiers, so that certificates and keystores are
read without a third-party library on the managed host. A malformed input
raises DerError, whose message never repeats the input.
"""

from __future__ import annotations


class DerError(ValueError):
    """The bytes are not the DER structure expected; the message gives a position, never content."""


def element(data, pos, end):
    """(tag, start, stop) of the DER element at ``pos``; its content is data[start:stop]."""
    if pos + 2 > end:
        raise DerError('truncated element at byte %d' % pos)
    tag = data[pos]
    if tag & 0x1f == 0x1f:
        raise DerError('unexpected multi-byte tag at byte %d' % pos)
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7f
        if count == 0 or count > 4 or pos + count > end:
            raise DerError('bad length at byte %d' % pos)
        length = int.from_bytes(data[pos:pos + count], 'big')
        pos += count
    if pos + length > end:
        raise DerError('element at byte %d runs past its container' % pos)
    return tag, pos, pos + length


def children(data, start, stop):
    """Every element inside data[start:stop], which they must fill exactly."""
    items = []
    pos = start
    while pos < stop:
        tag, begin, end = element(data, pos, stop)
        items.append((tag, begin, end))
        pos = end
    return items


def check_structure(data, start, stop, depth=0):
    """Walk every constructed element, so that a corrupt input is refused, not half read."""
    if depth > 32:
        raise DerError('nesting too deep')
    for tag, begin, end in children(data, start, stop):
        if tag & 0x20:
            check_structure(data, begin, end, depth + 1)


def oid(raw):
    """The dotted form of the content of an OBJECT IDENTIFIER."""
    if not raw:
        raise DerError('empty object identifier')
    first = raw[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7f)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return '.'.join(str(part) for part in parts)
