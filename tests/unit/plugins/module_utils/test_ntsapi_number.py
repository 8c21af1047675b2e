# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Declarative number state: validation before sending, the smallest command list, check mode, idempotence.

The session is in memory and answers through the sandbox's own NTSAPI command table and number registry,
so the replies are the sandbox's, without sockets.
"""

from __future__ import annotations

import re
import sys

import pytest

from ansible_collections.magrathea.secure import sandbox as sandbox_package
from ansible_collections.magrathea.secure.plugins.module_utils import _ntsapi_grammar as grammar
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_number import NumberReconciler, build_specs, diff_of
from ansible_collections.magrathea.secure.sandbox import registry as registry_module

# sandbox/ntsapi.py imports its sibling as `sandbox.registry` (it runs as `python -m sandbox`).
sys.modules.setdefault('sandbox', sandbox_package)
sys.modules.setdefault('sandbox.registry', registry_module)
from ansible_collections.magrathea.secure.sandbox import ntsapi as sandbox_ntsapi  # noqa: E402 pylint: disable=wrong-import-position

MUTATING = ('ALLO', 'ACTI', 'DEAC', 'REAC', 'SET', 'ORDE', 'SPIN', 'BLKACTI', 'BLKDEAC', 'BLKREAC')


class RegistrySession:
    """NtsapiSession's query/run over the sandbox command table; records what was sent and how."""

    def __init__(self, registry, **behaviour):
        self.registry = registry
        self.commands = sandbox_ntsapi.NtsapiCommands(registry, **behaviour)
        self.sent = []

    def _reply(self, command):
        words = command.split(None, 1)
        lines = iter(self.commands.run(words[0].upper(), words[1] if len(words) == 2 else ''))
        code, message = grammar.parse_line(next(lines))
        if not grammar.is_multi_line(command):
            return grammar.Reply(command, code, message)
        data = []
        while code == 0:
            data.append(message)
            code, message = grammar.parse_line(next(lines))
        return grammar.Reply(command, 0 if data else code, message, data)

    def query(self, commands):
        assert all(grammar.is_read_only(command) for command in commands)
        self.sent.extend(('query', command) for command in commands)
        return [self._reply(command) for command in commands]

    def run(self, command):
        self.sent.append(('run', command))
        return self._reply(command)

    def mutating(self):
        return [command for dummy, command in self.sent if not grammar.is_read_only(command)]


@pytest.fixture(name='registry')
def registry_fixture():
    return sandbox_ntsapi.NumberRegistry(pool=['01792100000-01792100099', '0169770000-0169770019'], taken=['01792100007'],
                                         ported=['01632960001'])


def reconcile(registry, check_mode=False, send_order='on_change', behaviour=None, **description):
    session = RegistrySession(registry, **(behaviour or {}))
    description.setdefault('numbers', ['01792100001'])
    reconciler = NumberReconciler(session, build_specs(**description), check_mode=check_mode, send_order=send_order)
    outcomes = reconciler.run()
    return session, outcomes, reconciler


def activate(registry, number, targets=('', '', '')):
    registry.activate(number)
    for index, target in enumerate(targets, 1):
        if target:
            registry.set_target(number, index, target)


SIP = 'S:{international}@sip.example.com'


# -- validation before anything is sent ---------------------------------------------------------


@pytest.mark.parametrize('description, text', [
    (dict(numbers=['01792100001'], targets=['S:bad target']), 'Accepted forms: 441234567890'),
    (dict(numbers=['01792100001'], targets=['1', '2', '3', '4']), 'three target slots'),
    (dict(numbers=['1792100001']), 'UK national format'),
    (dict(numbers=[]), 'at least one number'),
    (dict(numbers=['01792100001'], state='inactive', targets=[SIP]), 'cannot be combined with state=inactive'),
    (dict(numbers=['01792100001'], features={'DJ': True}), 'one capital letter'),
    (dict(numbers=['01792100001'], features={'D': 'maybe'}), 'not true or false'),
    (dict(numbers=['01792100001'], order=['08:00 18:00']), 'without spaces'),
    (dict(numbers=['01792100001'], emergency={'name': 'X', 'postcode': 'NOT A CODE'}), 'not a UK postcode'),
    (dict(numbers=['01792100001'], emergency={'name': 'X' * 51, 'postcode': 'SA1 1AA'}), 'emergency.name is 51 characters long; NTSAPI allows at most 50'),
    (dict(numbers=['01792100001'], emergency={'name': 'X', 'postcode': 'SA1 1AA', 'locality': 'L' * 31}), 'at most 30'),
    (dict(numbers=['01792100001'], emergency={'name': 'X', 'postcode': 'SA1 1AA', 'thoroughfare': 'T' * 56}), 'at most 55'),
    (dict(numbers=['01792100001'], emergency={'postcode': 'SA1 1AA'}), 'emergency.name is required'),
])
def test_bad_descriptions_are_refused_before_sending(description, text):
    with pytest.raises(ValueError, match=text) as info:
        build_specs(to_bool=_strict_bool, **description)
    assert str(info.value).endswith('Nothing was sent.')


def _strict_bool(value):
    if isinstance(value, bool):
        return value
    raise ValueError(value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as info:
        build_specs(['01792100001', 'nonsense'], targets=['S:bad target'], emergency={'name': 'X', 'postcode': 'bad'})
    message = str(info.value)
    assert 'nonsense' in message and 'S:bad target' in message and 'postcode' in message


def test_targets_are_expanded_per_number_and_duplicates_dropped():
    specs = build_specs(['01792100001', '+44 1792 100001', 'P1632960001'], targets=[SIP, None, '{international}'])
    assert [spec.number for spec in specs] == ['01792100001', 'P1632960001']
    assert specs[0].targets == ['S:441792100001@sip.example.com', None, '441792100001']
    assert specs[1].targets == ['S:441632960001@sip.example.com', None, '441632960001']


# -- deciding and sending ----------------------------------------------------------------------


def test_unallocated_number_is_allocated_activated_and_configured(registry):
    session, outcomes, dummy = reconcile(registry, targets=[SIP])
    assert session.mutating() == ['ALLO 01792100001', 'ACTI 01792100001', 'SET 01792100001 1 S:441792100001@sip.example.com']
    assert all(kind == 'run' for kind, command in session.sent if command in session.mutating())
    outcome = outcomes[0]
    assert outcome.failure is None
    assert outcome.before.state == 'unallocated' and outcome.after.state == 'active'
    assert outcome.after.targets[0] == 'S:441792100001@sip.example.com'


def test_second_identical_run_sends_nothing(registry):
    description = dict(numbers=['01792100001', '01792100002'], targets=[SIP, '441234567890'], features={'D': True, 'J': False},
                       order=['0800-1800'], emergency={'name': 'Example Widgets', 'postcode': 'sa1 1aa', 'locality': 'Swansea'})
    first, outcomes, dummy = reconcile(registry, **description)
    assert all(outcome.commands for outcome in outcomes)
    second, outcomes, dummy = reconcile(registry, **description)
    assert second.mutating() == []
    assert not any(outcome.commands for outcome in outcomes)
    assert outcomes[0].after is None and outcomes[0].before.emergency == {'name': 'Example Widgets', 'postcode': 'SA1 1AA', 'locality': 'Swansea'}


def test_only_differing_slots_are_set(registry):
    activate(registry, '01792100001', ['S:441792100001@sip.example.com', '441234567890', ''])
    session, outcomes, dummy = reconcile(registry, targets=[SIP, '449999999999', None])
    assert session.mutating() == ['SET 01792100001 2 449999999999']
    assert outcomes[0].after.targets == ['S:441792100001@sip.example.com', '449999999999', '']


def test_check_mode_sends_no_mutating_command_and_predicts(registry):
    activate(registry, '01792100002', ['441234567890', '', ''])
    session, outcomes, reconciler = reconcile(registry, check_mode=True, numbers=['01792100001', '01792100002'], targets=[SIP],
                                              features={'D': True}, emergency={'name': 'X', 'postcode': 'SA1 1AA'})
    assert session.mutating() == []
    assert all(kind == 'query' for kind, dummy in session.sent)
    assert outcomes[0].commands[:2] == ['ALLO 01792100001', 'ACTI 01792100001']
    assert 'SET 01792100002 1 S:441792100002@sip.example.com' in outcomes[1].commands
    assert outcomes[1].current.targets[0] == 'S:441792100002@sip.example.com'
    assert registry.describe('01792100002')['targets'][0] == '441234567890'
    diff = diff_of(outcomes, features=True, emergency=True)
    assert set(diff['after']) == {'01792100001', '01792100002'}
    assert reconciler.manage_features and reconciler.manage_emergency


def test_check_mode_knows_a_number_held_elsewhere_cannot_be_allocated(registry):
    session, outcomes, dummy = reconcile(registry, check_mode=True, numbers=['01792100007', '01792100008'])
    assert session.mutating() == []
    assert 'not available for allocation' in outcomes[0].failure
    assert outcomes[1].failure is None and outcomes[1].commands == ['ALLO 01792100008', 'ACTI 01792100008']


def test_number_taken_by_someone_else_fails_alone(registry):
    session, outcomes, dummy = reconcile(registry, numbers=['01792100007', '01792100008'], targets=[SIP])
    assert 'not available for allocation' in outcomes[0].failure and 'No number found for allocation' in outcomes[0].failure
    assert outcomes[0].commands == []
    assert outcomes[1].failure is None and outcomes[1].after.state == 'active'
    assert 'ACTI 01792100007' not in session.mutating()


def test_lost_allocation_race_is_retried(registry):
    registry.lose_next_allocations(1)
    session, outcomes, dummy = reconcile(registry, numbers=['01792100010', '01792100011'])
    # ACTI lost the race, so ALLO was tried again: for an exact number the second ALLO finds it gone.
    assert session.mutating()[:2] == ['ALLO 01792100010', 'ACTI 01792100010']
    assert [command for dummy, command in session.sent].count('ALLO 01792100010') == 2
    assert 'another account may hold it' in outcomes[0].failure
    assert outcomes[1].after.state == 'active'


def test_deactivated_number_is_reactivated_keeping_its_targets(registry):
    activate(registry, '01792100003', [SIP.replace('{international}', '441792100003'), '', ''])
    registry.deactivate('01792100003')
    session, outcomes, dummy = reconcile(registry, numbers=['01792100003'], targets=[SIP])
    assert session.mutating() == ['REAC 01792100003']
    assert outcomes[0].before.state == 'inactive' and outcomes[0].after.state == 'active'


def test_reactivation_refused_when_someone_took_it(registry):
    activate(registry, '01792100004')
    registry.deactivate('01792100004')
    registry.take_by_other_account('01792100004')
    dummy, outcomes, dummy = reconcile(registry, numbers=['01792100004'])
    assert 'not available for allocation' in outcomes[0].failure


def test_inactive_deactivates_only_active_numbers(registry):
    activate(registry, '01792100005')
    session, outcomes, dummy = reconcile(registry, numbers=['01792100005', '01792100006'], state='inactive')
    assert session.mutating() == ['DEAC 01792100005']
    assert outcomes[0].after.state == 'inactive' and not outcomes[1].commands


def test_ported_numbers_use_p_form_where_ntsapi_wants_it(registry):
    session, outcomes, dummy = reconcile(registry, numbers=['P1632960001'], targets=[SIP], features={'D': True})
    assert session.mutating() == ['SET P1632960001 1 S:441632960001@sip.example.com', 'FEAT 01632960001 D']
    assert outcomes[0].failure is None


def test_features_switch_on_and_off_only_what_differs(registry):
    activate(registry, '01792100001')
    registry.set_feature('01792100001', 'J')
    session, dummy, dummy = reconcile(registry, features={'D': True, 'J': False, 'K': False})
    assert session.mutating() == ['FEAT 01792100001 D', 'FEAT 01792100001 -J']
    assert registry.features('01792100001') == 'D'


def test_order_is_sent_with_a_new_target_or_always(registry):
    activate(registry, '01792100001', ['441234567890', '', ''])
    session, dummy, dummy = reconcile(registry, targets=['441234567890'], order=['0800-1800'])
    assert session.mutating() == []
    session, dummy, dummy = reconcile(registry, targets=['449999999999'], order=['0800-1800'])
    assert session.mutating() == ['SET 01792100001 1 449999999999', 'ORDE 01792100001 1 0800-1800']
    session, dummy, dummy = reconcile(registry, targets=['449999999999'], order=['0800-1800'], send_order='always')
    assert session.mutating() == ['ORDE 01792100001 1 0800-1800']


def test_emergency_data_written_validated_and_status_returned(registry):
    activate(registry, '01792100001')
    session, outcomes, dummy = reconcile(registry, emergency={'name': 'Example', 'postcode': 'SA11AA', 'title': 'Dr'})
    assert session.mutating() == ['INFO 01792100001 999 CREATE', 'INFO 01792100001 999 TITLE Dr', 'INFO 01792100001 999 NAME Example',
                                  'INFO 01792100001 999 POSTCODE SA1 1AA', 'INFO 01792100001 999 VALIDATE']
    assert outcomes[0].after.status == {'code': 0, 'text': 'Accepted'}
    session, outcomes, dummy = reconcile(registry, emergency={'name': 'Example', 'postcode': 'SA1 1AA', 'title': ''})
    assert session.mutating() == ['INFO 01792100001 999 TITLE', 'INFO 01792100001 999 VALIDATE']
    assert outcomes[0].after.emergency == {'name': 'Example', 'postcode': 'SA1 1AA'}


def test_data_left_unvalidated_is_validated_on_the_next_run(registry):
    activate(registry, '01792100001')
    registry.emergency_create('01792100001')
    registry.emergency_set('01792100001', 'NAME', 'Example')
    registry.emergency_set('01792100001', 'POSTCODE', 'SA1 1AA')
    session, outcomes, dummy = reconcile(registry, emergency={'name': 'Example', 'postcode': 'SA1 1AA'})
    assert session.mutating() == ['INFO 01792100001 999 VALIDATE']
    assert outcomes[0].after.status['code'] == 0


def test_iax2_secret_masked_in_commands_and_states(registry):
    target = 'I:user:hunter2@iax.example.com'
    dummy, outcomes, dummy = reconcile(registry, targets=[target])
    shown = repr(outcomes[0].to_dict()) + repr(diff_of(outcomes))
    assert 'hunter2' not in shown and 'I:user:********@iax.example.com' in shown
    assert registry.describe('01792100001')['targets'][0] == target


# -- regressions and fidelity (issue 12) ------------------------------------------------------------------


def test_every_command_is_built_and_checked_before_anything_is_sent():
    long_host = 'S:{international}@' + 'a' * 600 + '.example.com'
    with pytest.raises(ValueError, match='at most 512') as info:
        build_specs(['01792100001', '01792100002'], targets=['441234567890', long_host], order=['0800-1800'])
    assert str(info.value).endswith('Nothing was sent.')
    specs = build_specs(['01792100001'], targets=[SIP], features={'D': True, 'J': False}, order=['0800-1800'],
                        emergency={'name': 'Example', 'postcode': 'SA1 1AA', 'title': ''})
    assert specs[0].commands['FEAT', 'J', False] == 'FEAT 01792100001 -J'
    assert specs[0].commands['INFO', 'title'] == 'INFO 01792100001 999 TITLE'
    assert specs[0].commands['ORDE', 1] == 'ORDE 01792100001 1 0800-1800'


@pytest.mark.parametrize('description, option', [
    (dict(targets=['S:a@b.example\n']), 'targets[0]'),
    (dict(order=['0800-1800\n']), 'order[0]'),
    (dict(features={'D\n': True}), 'features key'),
    (dict(emergency={'name': 'Example\n', 'postcode': 'SA1 1AA'}), 'emergency.name'),
    (dict(emergency={'name': 'Zo\u00eb', 'postcode': 'SA1 1AA'}), 'emergency.name'),
    (dict(numbers=['01792100001\n']), 'numbers[0]'),
])
def test_a_line_break_or_non_ascii_in_any_option_is_refused_by_name(description, option):
    description.setdefault('numbers', ['01792100001'])
    with pytest.raises(ValueError, match=re.escape(option)):
        build_specs(to_bool=_strict_bool, **description)


def test_a_ten_digit_national_number_is_allocated(registry):
    session, outcomes, dummy = reconcile(registry, numbers=['0169770005'], targets=[SIP])
    assert session.mutating() == ['ALLO 0169770005', 'ACTI 0169770005', 'SET 0169770005 1 S:44169770005@sip.example.com']
    assert outcomes[0].failure is None and outcomes[0].after.state == 'active'


def test_stat_in_the_per_target_reading_is_idempotent(registry):
    description = dict(targets=[SIP, '441234567890', 'F:fax@example.com'], behaviour={'stat_format': 'per-target'})
    first, outcomes, dummy = reconcile(registry, **description)
    assert outcomes[0].after.targets == ['S:441792100001@sip.example.com', '441234567890', 'F:fax@example.com']
    second, outcomes, dummy = reconcile(registry, **description)
    assert second.mutating() == []


@pytest.mark.parametrize('refused, option, applied', [
    ('feat-list', 'features', ['SET', 'ORDE', 'INFO']),
    ('feat-off', 'features', ['SET', 'FEAT', 'ORDE', 'INFO']),
    ('orde-periods', 'order', ['SET', 'FEAT', 'INFO']),
])
def test_an_invented_form_the_server_refuses_fails_its_option_only(registry, refused, option, applied):
    activate(registry, '01792100001')
    registry.set_feature('01792100001', 'J')
    session, outcomes, dummy = reconcile(registry, targets=[SIP], features={'D': True, 'J': False}, order=['0800-1800'],
                                         emergency={'name': 'Example', 'postcode': 'SA1 1AA'}, behaviour={'refuse': [refused]})
    failure = outcomes[0].failure
    assert '01792100001: %s could not be applied' % option in failure, failure
    assert sorted(set(command.split()[0] for command in outcomes[0].commands)) == sorted(applied)
    assert registry.configuration('01792100001')['targets'][0] == 'S:441792100001@sip.example.com'
    assert registry.configuration('01792100001')['emergency'] is not None
