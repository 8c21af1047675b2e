# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The NTSAPI grammar: reply lines, typed replies, number and target formats, command classes and the line check."""

from __future__ import annotations

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _ntsapi_grammar as grammar

PASSWORD = 'Sandbox-Secret-42'


# -- grammar and typed parsing ------------------------------------------------------------------


@pytest.mark.parametrize('line, expected', [
    ('0 Access granted. Welcome (cl=500)', (0, 'Access granted. Welcome (cl=500)')),
    ('1 No number found for allocation', (1, 'No number found for allocation')),
    ('9\tNo record found', (9, 'No record found')),
    ('0 ', (0, '')),
    ('0', None),
    ('10 two digits', None),
    ('OK 0', None),
    ('', None),
    ('Magrathea gateway hiccup', None),
])
def test_reply_grammar(line, expected):
    assert grammar.parse_line(line) == expected


@pytest.mark.parametrize('message, active, expiry, targets', [
    ('01792100001 Y 2026-11-27 S:441792100001@sip.example.com|441234567890|F:fax@example.com', True, '2026-11-27',
     ['S:441792100001@sip.example.com', '441234567890', 'F:fax@example.com']),
    ('01792100001 N 2026-11-27 ||', False, '2026-11-27', ['', '', '']),
    ('01792100001 Y 2026-11-27 |V:vm@example.com|', True, '2026-11-27', ['', 'V:vm@example.com', '']),
    ('01792100001 Y 2026-11-27', True, '2026-11-27', ['', '', '']),
    ('P1792100001 y 2026-11-27 E:441792100001@sbc.example.com', True, '2026-11-27', ['E:441792100001@sbc.example.com', '', '']),
])
def test_stat_parsing_tolerates_empty_slots(message, active, expiry, targets):
    status = grammar.NumberStatus.from_message(message)
    assert (status.active, status.expiry, status.targets) == (active, expiry, targets)


@pytest.mark.parametrize('message', [
    '01792100001 Y',
    '01792100001 X 2026-11-27 ||',
    '01792100001 Y 27/11/2026 ||',
    '01792100001 Y 2026-11-27 a|b|c|d',
])
def test_stat_parsing_refuses_other_shapes(message):
    with pytest.raises(ValueError):
        grammar.NumberStatus.from_message(message)


@pytest.mark.parametrize('target, kind', [
    ('441234567890', 'divert'),
    ('S:441792100001@sip.example.com', 'sip'),
    ('s:441792100001@sip.example.com:5060', 'sip-inband'),
    ('E:441792100001@sbc.example.com', 'tls'),
    ('I:user:secret@iax.example.com', 'iax2'),
    ('F:fax@example.com', 'fax2email'),
    ('V:voicemail@example.co.uk', 'voice2email'),
])
def test_target_forms_accepted_and_typed(target, kind):
    assert grammar.target_error(target) is None
    assert grammar.target_kind(target) == kind


@pytest.mark.parametrize('target', [
    '01792100001', '+441234567890', 'S:441792100001', 'S:user@', 'X:user@host', 'F:not-an-email', 'S:a b@host', 'S:a@host|x', '',
])
def test_bad_targets_name_the_accepted_forms(target):
    error = grammar.target_error(target)
    assert 'Accepted forms' in error
    for form in ('S:user@host', 's:user@host', 'E:user@host', 'I:user:secret@host', 'F:', 'V:', '441234567890'):
        assert form in error


def test_iax2_secret_is_masked():
    assert grammar.mask_text('I:user:hunter2@iax.example.com') == 'I:user:********@iax.example.com'
    assert 'hunter2' not in grammar.target_error('I:user:hunter2@bad host')
    reply = grammar.Reply('SET 01792100001 1 I:user:hunter2@iax.example.com', 0, '01792100001 Y 2030-01-01 I:user:hunter2@iax.example.com||')
    assert 'hunter2' not in repr(reply.to_dict()) and 'hunter2' not in repr(reply)


@pytest.mark.parametrize('raw, number', [
    ('01792100001', '01792100001'),
    ('01792 100 001', '01792100001'),
    ('+44 1792 100001', '01792100001'),
    ('0044-1792-100001', '01792100001'),
    ('P1792100001', 'P1792100001'),
    ('+3531234567', '+3531234567'),
])
def test_number_formats(raw, number):
    assert grammar.normalize_number(raw) == number


@pytest.mark.parametrize('raw', ['1792100001', '01792', 'abc', '+44', '017921000011234'])
def test_bad_numbers(raw):
    with pytest.raises(ValueError, match='UK national format'):
        grammar.normalize_number(raw)


@pytest.mark.parametrize('command, read_only, multi_line', [
    ('STAT 01792100001', True, False),
    ('ALIST 01792 5', True, True),
    ('BLKINFO 01792100001', True, False),
    ('INFO 01792100001 999 STATUS', True, False),
    ('INFO 01792100001 999 DATA', True, True),
    ('FEAT 01792100001', True, False),
    ('FEAT 01792100001 D', False, False),
    ('INFO 01792100001 999 VALIDATE', False, False),
    ('INFO 01792100001 999 NAME Example', False, False),
    ('INFO 01792100001 GEN hello', False, False),
    ('ALLO 01792______', False, False),
    ('ACTI 01792100001', False, False),
    ('DEAC 01792100001', False, False),
    ('REAC 01792100001', False, False),
    ('SET 01792100001 1 441234567890', False, False),
    ('ORDE 01792100001 1 0800-1800', False, False),
    ('SPIN 01792100001 1234', False, False),
    ('BLKACTI 01792 10', False, False),
    ('BLKDEAC 01792100000', False, False),
    ('SOMETHINGNEW 1', False, False),
])
def test_command_classes(command, read_only, multi_line):
    assert grammar.is_read_only(command) is read_only
    assert grammar.is_multi_line(command) is multi_line


@pytest.mark.parametrize('commands, text', [
    (['STAT 01792100001', 'AUTH acct ' + PASSWORD], r'commands\[1\] is AUTH'),
    (['quit'], r'commands\[0\] is QUIT'),
    (['STAT 01792100001\r\nDEAC 01792100001'], 'one line'),
    ([''], 'empty'),
])
def test_raw_command_lists_are_checked_without_echoing_auth(commands, text):
    with pytest.raises(ValueError, match=text) as info:
        grammar.check_raw_commands(commands)
    assert PASSWORD not in str(info.value)


def test_stat_in_the_per_target_reading_keeps_every_slot():
    message = ('01792100001 Y 2026-11-27 S:441792100001@sip.example.com|01792100001 Y 2026-11-27 441234567890'
               '|01792100001 Y 2026-11-27 F:fax@example.com')
    status = grammar.NumberStatus.from_message(message)
    assert status.targets == ['S:441792100001@sip.example.com', '441234567890', 'F:fax@example.com']
