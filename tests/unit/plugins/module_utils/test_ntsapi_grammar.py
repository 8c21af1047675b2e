# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The NTSAPI grammar: reply lines, typed replies, number and target formats, command classes and the line check."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize('message, targets', [
    ('01792100001 Y 2026-11-27 S:a@sip.example.com||01792100001 Y 2026-11-27 F:fax@example.com',
     ['S:a@sip.example.com', '', 'F:fax@example.com']),
    ('01792100001 Y 2026-11-27|01792100001 Y 2026-11-27 441234567890|', ['', '441234567890', '']),
    ('P1792100001 N 2026-11-27 E:a@sbc.example.com|01792100001 N 2026-11-27 V:vm@example.com|', ['E:a@sbc.example.com', 'V:vm@example.com', '']),
])
def test_stat_per_target_reading_with_empty_slots(message, targets):
    assert grammar.NumberStatus.from_message(message).targets == targets


@pytest.mark.parametrize('message', [
    '01792100001 Y 2026-11-27 a|01792100002 Y 2026-11-27 b|',        # a piece about another number
    '01792100001 Y 2026-11-27 a|b c|',                               # neither a target nor a piece
    '01792100001 Y 2026-11-27 a b',                                  # white space inside the first target
])
def test_stat_pieces_that_fit_neither_reading_are_refused(message):
    with pytest.raises(ValueError):
        grammar.NumberStatus.from_message(message)


@pytest.mark.parametrize('value', ['01792100001\n', '01792100001\r', '01792100\uff1300', '0179210000\u0661', '01792\t100001', '\u00a001792100001'])
def test_numbers_are_ascii_digits_without_control_characters(value):
    with pytest.raises(ValueError, match=r'numbers\[0\]'):
        grammar.normalize_number(value, 'numbers[0]')


@pytest.mark.parametrize('target', ['S:a@b.example\n', 'S:a@b.example\r\n', '441234567890\n', 'I:u:s\n@h.example', 'S:caf\u00e9@h.example',
                                    'V:vm@example.com ', 'S:a@b.example\x00'])
def test_target_forms_are_whole_string_matches(target):
    assert grammar.target_error(target) is not None


@pytest.mark.parametrize('value, hint', [
    (271155202, '02012300002'),          # YAML's octal reading of an unquoted 02012300002
    ('271155202', '02012300002'),        # the same after Ansible made text of it
    (1792100001, '"01792100001"'),       # a decimal integer lost its leading 0
])
def test_an_integer_where_a_number_was_meant_says_to_quote_it(value, hint):
    with pytest.raises(ValueError) as info:
        grammar.normalize_number(value, 'numbers[0]')
    assert hint in str(info.value) and 'quote' in str(info.value)


def test_normalize_numbers_keeps_order_drops_duplicates_and_lists_every_problem():
    numbers, problems = grammar.normalize_numbers(['01792 100001', 'P1632960001', '+441792100001', 'x', '01792100002\n'])
    assert numbers == ['01792100001', 'P1632960001']
    assert [problem.split()[0] for problem in problems] == ['numbers[3]', 'numbers[4]']


@pytest.mark.parametrize('line, text', [
    ('INFO 01792100001 GEN ' + 'x' * 600, 'at most 512'),
    ('STAT 01792100001\n', 'line break'),
    ('INFO 01792100001 GEN Zo\u00eb', 'ASCII'),
    ('   ', 'empty'),
    ('SET 01792100001 1 I:pbx:hunter2@iax.example.com\x7f', 'control character'),
])
def test_the_line_check_refuses_and_never_repeats_a_secret(line, text):
    with pytest.raises(ValueError, match=text) as info:
        grammar.check_command(line, 'commands[0]')
    message = str(info.value)
    assert message.startswith('commands[0]') and len(message) < 300 and 'hunter2' not in message


def test_a_command_is_built_from_checked_words():
    assert grammar.command('INFO', '01792100001', '999', 'NAME', 'Example Widgets') == 'INFO 01792100001 999 NAME Example Widgets'
    with pytest.raises(ValueError):
        grammar.command('SET', '01792100001', 1, 'S:a@b.example\n')


@pytest.mark.parametrize('text, shown', [
    ('SET 01792100001 1 I:pbx:s3cret@iax.example.com', 'SET 01792100001 1 I:pbx:********@iax.example.com'),
    ('01792100001 Y 2030-01-01 S:a@b.example|I:u:p@h.example|I:v:q@h.example',
     '01792100001 Y 2030-01-01 S:a@b.example|I:u:********@h.example|I:v:********@h.example'),
    ('S:user:notasecret@h.example', 'S:user:notasecret@h.example'),
])
def test_mask_text_hides_every_iax2_secret(text, shown):
    assert grammar.mask_text(text) == shown


@pytest.mark.parametrize('message, features', [
    ('Features DJ', ['D', 'J']), ('Features none', []), ('features  none', []), ('OK', None), ('Features D J', None), ('Features dj', None),
])
def test_the_feature_listing_is_read_strictly(message, features):
    assert grammar.parse_features(grammar.Reply('FEAT 01792100001', 0, message)) == features


@pytest.mark.parametrize('command, message, fits', [
    ('ALTEN 01792______', '0179210001_ Range found', True),
    ('ALTEN 0845_______', '084515404_', False),           # one digit short of the pattern
    ('ALTEN 01792______', '0179310001_', False),          # another prefix
    ('ALTEN 0169770___', '016977000_ Range found', True),  # a 10-digit number's range
    ('ALLO 0169770005', '0169770005 Allocated', True),
    ('ALLO 01792______', '0179310001 Allocated', False),
])
def test_allo_and_alten_replies_must_fit_their_pattern(command, message, fits):
    reply = grammar.Reply(command, 0, message)
    if fits:
        grammar.check_reply(command, reply)
    else:
        with pytest.raises(ValueError):
            grammar.check_reply(command, reply)


@pytest.mark.parametrize('prefix, text', [
    ('1034', '"02012"'),          # YAML's octal reading of an unquoted 02012
    (1034, '"02012"'),
    ('01792 1', 'starting with 0'),
    ('01792\n', 'line break'),
    ('017921000011', 'starting with 0'),
])
def test_alist_prefixes_are_checked(prefix, text):
    with pytest.raises(ValueError, match=re.escape(text)):
        grammar.check_prefix(prefix)


@pytest.mark.parametrize('prefix', ['0', '01792', '0179210000_', '_1792'])
def test_good_alist_prefixes(prefix):
    assert grammar.check_prefix(prefix) == prefix
