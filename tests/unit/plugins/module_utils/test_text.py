# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The text policy: what may be sent, and what a server's text looks like once it reaches a message."""

from __future__ import annotations

import re

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _text


@pytest.mark.parametrize('value, rules, problem', [
    ('plain text', {}, None),
    ('trailing\n', {}, 'holds a line break'),
    ('tab\there', {}, 'control character (U+0009)'),
    ('Zo\u00eb', {}, 'outside ASCII (U+00EB)'),
    ('01792100\uff1300', {}, 'outside ASCII'),
    ('Zo\u00eb', {'printable': False}, None),
    ('two words', {'spaces': False}, 'holds white space'),
    ('x' * 21, {'max_length': 20}, 'is 21 characters long; at most 20'),
    ('0800-1800\n', {'pattern': re.compile(r'\d{4}-\d{4}')}, 'holds a line break'),
    ('0800-18000', {'pattern': re.compile(r'\d{4}-\d{4}')}, 'not in the expected form'),
    (271155202, {}, 'is a number, not text'),
])
def test_text_problem(value, rules, problem):
    found = _text.text_problem(value, **rules)
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_check_text_names_the_option_and_hides_secrets():
    with pytest.raises(ValueError, match=r"^name 'a\\nb' holds a line break; expected a name$"):
        _text.check_text('name', 'a\nb', expected='a name')
    with pytest.raises(ValueError) as caught:
        _text.check_text('password', 'hunter2\n', secret=True)
    assert 'hunter2' not in str(caught.value) and str(caught.value).startswith('password holds a line break')


def test_server_text_removes_credentials_and_bounds_length():
    forms = _text.secret_forms('user', 'hunter2')
    body = 'denied for Basic dXNlcjpodW50ZXIy (password hunter2)\r\n' + 'x' * 1000
    shown = _text.server_text(body, forms)
    assert 'hunter2' not in shown and 'dXNlcjpodW50ZXIy' not in shown
    assert '\n' not in shown and len(shown) <= _text.PREVIEW_LIMIT + 3
    assert shown.startswith('denied for ******** (password ********) xxx')


def test_server_text_escapes_control_characters():
    assert _text.server_text('a\x1b[31mred\x00') == 'a\\x1b[31mred\\x00'
