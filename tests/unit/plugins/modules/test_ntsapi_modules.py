# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The glue of ntsapi_command, ntsapi_number and ntsapi_number_info, run through main() against the sandbox's
NTSAPI server in this process (TLS on 127.0.0.1, a fresh CA): options, refusals before sending, check and diff mode,
warnings, and the password kept out of every result and of the server's log."""

from __future__ import annotations

import json
import sys

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.magrathea.secure import sandbox as sandbox_package
from ansible_collections.magrathea.secure.plugins.module_utils import _ntsapi_session
from ansible_collections.magrathea.secure.plugins.modules import ntsapi_command, ntsapi_number, ntsapi_number_info
from ansible_collections.magrathea.secure.sandbox import pki
from ansible_collections.magrathea.secure.sandbox import registry as registry_module

# sandbox/ntsapi.py imports its sibling as `sandbox.registry` (it runs as `python -m sandbox`).
sys.modules.setdefault('sandbox', sandbox_package)
sys.modules.setdefault('sandbox.registry', registry_module)
from ansible_collections.magrathea.secure.sandbox import ntsapi as sandbox_ntsapi  # noqa: E402 pylint: disable=wrong-import-position

PASSWORD = 'Unit-Sandbox-Password-5k'
MUTATING = ('ALLO', 'ACTI', 'DEAC', 'REAC', 'SET', 'ORDE', 'SPIN')


class Server:
    """The sandbox NTSAPI server with its own CA, its command log and the module arguments that reach it."""

    def __init__(self, tmp_path, **faults):
        paths = pki.write_server_pki(str(tmp_path / 'pki'))
        context = pki.server_context(paths['cert_file'], paths['key_file'])
        self.log_path = tmp_path / 'ntsapi.log'
        self.registry = sandbox_ntsapi.NumberRegistry(pool=['01792100000-01792100099', '0169770000-0169770019'], taken=['01792100007'],
                                                      ported=[])
        self.server = sandbox_ntsapi.NtsapiServer(host='127.0.0.1', ssl_context=context, registry=self.registry, username='unit',
                                                  password=PASSWORD, log_path=str(self.log_path), **faults).start()
        self.args = {'host': 'localhost', 'port': self.server.port, 'username': 'unit', 'password': PASSWORD,
                     'ca_path': paths['ca_file'], 'timeout': 5}

    def commands(self):
        if not self.log_path.exists():
            return []
        return [json.loads(line)['command'] for line in self.log_path.read_text().splitlines()]

    def stop(self):
        self.server.stop()


@pytest.fixture(name='server')
def server_fixture(tmp_path):
    server = Server(tmp_path)
    yield server
    server.stop()


def run(module, capsys, args, check_mode=False, diff=False):
    args = dict(args)
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit) as caught:
            module.main()
    output = capsys.readouterr().out
    assert PASSWORD not in output
    return caught.value.code, json.loads(output)


def test_info_reads_many_numbers_and_a_prefix(server, capsys):
    server.registry.activate('01792100001')
    server.registry.set_target('01792100001', 1, 'S:441792100001@sip.example.com')
    numbers = ['0179210%04d' % index for index in range(50)]
    code, result = run(ntsapi_number_info, capsys, dict(server.args, numbers=numbers, prefix='0179210000', quantity=3))
    assert code == 0 and result['changed'] is False
    assert [fact['number'] for fact in result['numbers']] == numbers
    assert result['numbers'][1]['targets'] == [{'index': 1, 'value': 'S:441792100001@sip.example.com', 'kind': 'sip'}]
    assert result['numbers'][7]['state'] == 'unallocated'
    assert len(result['available']) == 3 and result['available_message'] == 'End of list'
    assert [command.split()[0] for command in server.commands()].count('AUTH') == 1
    assert not [command for command in server.commands() if command.split()[0] in MUTATING]


@pytest.mark.parametrize('module, args, text', [
    (ntsapi_number_info, {'numbers': ['1234']}, 'UK national format'),
    (ntsapi_number_info, {'prefix': '01792', 'quantity': 0}, 'quantity must be between 1 and 1000'),
    (ntsapi_number_info, {'prefix': '01792 1'}, 'prefix'),
    (ntsapi_number_info, {'numbers': ['01792100001'], 'pipeline_depth': 0}, 'pipeline_depth must be between 1'),
    (ntsapi_command, {'commands': ['STAT 01792100001', 'AUTH unit ' + PASSWORD]}, 'commands[1] is AUTH'),
    (ntsapi_command, {'commands': ['STAT 01792100001'], 'accept_messages': ['(unclosed']}, 'Nothing was sent'),
    (ntsapi_number, {'numbers': ['01792100001'], 'targets': ['sip:user@host']}, 'Accepted forms'),
    (ntsapi_number, {'numbers': ['01792100001'], 'emergency': {'name': 'N' * 51, 'postcode': 'SA1 1AA'}}, 'at most 50'),
])
def test_refused_before_connecting(server, capsys, module, args, text):
    code, result = run(module, capsys, dict(server.args, **args))
    assert code == 1 and text in result['msg']
    assert server.commands() == []


def test_number_check_mode_then_change_then_idempotent(server, capsys):
    args = dict(server.args, numbers=['01792100002', '01792100003'], targets=['S:{international}@sip.example.com'])
    code, checked = run(ntsapi_number, capsys, args, check_mode=True, diff=True)
    assert code == 0 and checked['changed'] is True
    assert not [command for command in server.commands() if command.split()[0] in MUTATING]
    assert set(checked['diff']['after']) == {'01792100002', '01792100003'}

    code, changed = run(ntsapi_number, capsys, args, diff=True)
    assert code == 0 and changed['changed'] is True
    assert changed['numbers'][0]['commands'] == checked['numbers'][0]['commands']
    assert changed['numbers'][0]['after']['targets'][0]['value'] == 'S:441792100002@sip.example.com'

    code, again = run(ntsapi_number, capsys, args, diff=True)
    assert code == 0 and again['changed'] is False and again['diff'] == {'before': {}, 'after': {}}


def test_number_failures_are_per_number(server, capsys):
    code, result = run(ntsapi_number, capsys, dict(server.args, numbers=['01792100007', '01792100004']))
    assert code == 1 and result['changed'] is True
    assert result['msg'].startswith('1 of 2 numbers failed: 01792100007: not available for allocation')
    assert [entry['failed'] for entry in result['numbers']] == [True, False]


def test_command_check_mode_skips_changes(server, capsys):
    code, result = run(ntsapi_command, capsys, dict(server.args, commands=['ALIST 0179210000 2', 'ALLO 01792100005']), check_mode=True)
    assert code == 0 and result['changed'] is True
    assert [entry['skipped'] for entry in result['results']] == [False, True]
    assert 'ALLO 01792100005' not in server.commands()


def test_wrong_password_one_auth_and_no_secret(server, capsys):
    code, result = run(ntsapi_number_info, capsys, dict(server.args, numbers=['01792100001'], password='Wrong-Password-Unit-1'))
    assert code == 1 and 'refused AUTH' in result['msg'] and 'Wrong-Password-Unit-1' not in json.dumps(result)
    assert server.commands() == ['AUTH unit ********']
    assert PASSWORD not in server.log_path.read_text()


def test_fall_back_is_a_warning(tmp_path, capsys):
    server = Server(tmp_path, drop_after=10)
    try:
        numbers = ['0179210%04d' % index for index in range(12)]
        code, result = run(ntsapi_number_info, capsys, dict(server.args, numbers=numbers))
    finally:
        server.stop()
    assert code == 0 and len(result['numbers']) == 12
    # AnsibleModule keeps warnings process-wide, so other tests' warnings may be listed too.
    fall_backs = [warning for warning in result['warnings'] if 'one command at a time' in json.dumps(warning)]
    assert len(fall_backs) == 1 and 'closed the connection' in json.dumps(fall_backs[0])


# -- regressions (issue 12): nothing is sent before every option checks out ------------------------------

SERVER_ARGS_KEYS = ('host', 'username', 'password', 'ca_path')
EMERGENCY = {'name': 'Example Widgets', 'postcode': 'SA1 1AA', 'title': 'Dr', 'forename': 'Ann', 'honours': 'OBE',
             'bussuffix': 'Ltd', 'premises': 'Unit 4', 'thoroughfare': 'Harbour Road', 'locality': 'Swansea'}
FULL_NUMBER = {'numbers': ['01792100001'], 'targets': ['S:441792100001@sip.example.com', '441234567890'],
               'features': {'D': True, 'J': False}, 'order': ['0800-1800'], 'emergency': EMERGENCY}


def _with_newline(path):
    """ntsapi_number arguments with a line feed after the option at ``path`` (a tuple of keys and indexes)."""
    args = json.loads(json.dumps(FULL_NUMBER))
    if path[0] == 'features':
        args['features'] = {key + ('\n' if key == path[1] else ''): value for key, value in args['features'].items()}
        return args
    if path[0] in SERVER_ARGS_KEYS or path[0] in ('state', 'send_order'):
        return args
    container = args
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] += '\n'
    return args


NEWLINE_PATHS = ([('numbers', 0), ('targets', 0), ('targets', 1), ('features', 'D'), ('order', 0)]
                 + [('emergency', field) for field in sorted(EMERGENCY)]
                 + [(key,) for key in SERVER_ARGS_KEYS] + [('state',), ('send_order',)])


@pytest.mark.parametrize('path', NEWLINE_PATHS, ids=['.'.join(map(str, path)) for path in NEWLINE_PATHS])
def test_a_trailing_newline_in_any_option_of_ntsapi_number_sends_nothing(server, capsys, path):
    args = dict(server.args, **_with_newline(path))
    if path[0] in SERVER_ARGS_KEYS:
        args[path[0]] += '\n'
    elif path[0] == 'state':
        args['state'] = 'active\n'
    elif path[0] == 'send_order':
        args['send_order'] = 'always\n'
    code, result = run(ntsapi_number, capsys, args)
    assert code == 1, result
    assert server.commands() == [], 'sent: %r' % server.commands()
    assert server.server.accepted == 0 or path[0] == 'ca_path'
    assert result.get('changed') is not True


@pytest.mark.parametrize('module, args, option', [
    (ntsapi_number, {'numbers': ['01792100\uff1300']}, 'numbers[0]'),
    (ntsapi_number_info, {'numbers': ['01792100001', '01792100\uff1300']}, 'numbers[1]'),
    (ntsapi_number, {'numbers': ['01792100001'], 'emergency': {'name': 'Zo\u00eb', 'postcode': 'SA1 1AA'}}, 'emergency.name'),
    (ntsapi_command, {'commands': ['STAT 01792100001', 'INFO 01792100001 GEN Zo\u00eb']}, 'commands[1]'),
    (ntsapi_number, {'numbers': ['01792100001'], 'targets': ['S:caf\u00e9@sip.example.com']}, 'targets[0]'),
])
def test_non_ascii_is_refused_naming_the_option(server, capsys, module, args, option):
    code, result = run(module, capsys, dict(server.args, **args))
    assert code == 1 and option in result['msg'] and 'ASCII' in result['msg'], result['msg']
    assert server.commands() == []


def test_an_over_long_command_is_refused_without_repeating_it(server, capsys):
    code, result = run(ntsapi_command, capsys, dict(server.args, commands=['INFO 01792100001 GEN ' + 'x' * 10000]))
    assert code == 1 and 'commands[0]' in result['msg'] and 'at most' in result['msg']
    assert len(result['msg']) < 400
    assert server.commands() == []


def test_an_unquoted_yaml_number_is_recognised(server, capsys):
    # YAML reads an unquoted 02012300002 as the octal integer 271155202.
    code, result = run(ntsapi_number_info, capsys, dict(server.args, numbers=[271155202]))
    assert code == 1 and '02012300002' in result['msg'] and 'quote' in result['msg'], result['msg']
    assert server.commands() == []


def test_iax2_secrets_are_masked_in_ntsapi_command_results_and_the_sandbox_log(server, capsys):
    server.registry.activate('01792100001')
    target = 'I:pbx:hunter2secret@iax.example.com'
    code, result = run(ntsapi_command, capsys, dict(server.args, commands=['SET 01792100001 1 ' + target, 'STAT 01792100001']))
    output = json.dumps(result)
    assert code == 0 and 'hunter2secret' not in output
    assert result['results'][0]['command'] == 'SET 01792100001 1 I:pbx:********@iax.example.com'
    assert 'I:pbx:********@iax.example.com' in result['results'][1]['message']
    assert 'hunter2secret' not in server.log_path.read_text()
    assert server.registry.describe('01792100001')['targets'][0] == target


def test_iax2_secret_of_ntsapi_number_is_masked_in_the_invocation(server, capsys):
    code, result = run(ntsapi_number, capsys, dict(server.args, numbers=['01792100002'], targets=['I:pbx:hunter2secret@iax.example.com']),
                       diff=True)
    assert code == 0 and 'hunter2secret' not in json.dumps(result)


def test_a_999_status_digit_is_a_read_not_a_failure(server, capsys):
    server.registry.activate('01792100003')
    server.registry.emergency_create('01792100003')
    server.registry.emergency_set('01792100003', 'NAME', 'Example')
    server.registry.emergency_set('01792100003', 'POSTCODE', 'SA1 1AA')
    code, result = run(ntsapi_command, capsys, dict(server.args, commands=['INFO 01792100003 999 STATUS', 'STAT 01792100003']))
    assert code == 0, result['msg']
    assert result['results'][0]['code'] == 1 and result['results'][0]['message'] == 'Info received'
    assert len(result['results']) == 2


# -- what the sandbox cannot know about the real server: both answers work ---------------------------------


@pytest.fixture(name='start')
def start_fixture(tmp_path):
    servers = []

    def start(**behaviour):
        servers.append(Server(tmp_path / str(len(servers)), **behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_a_server_that_frames_per_read_costs_no_second_login(start, capsys, monkeypatch):
    monkeypatch.setattr(_ntsapi_session, 'PIPELINE_STALL', 0.5)
    server = start(framing='read')
    numbers = ['0179210%04d' % index for index in range(30)]
    code, result = run(ntsapi_number_info, capsys, dict(server.args, numbers=numbers))
    assert code == 0 and [fact['number'] for fact in result['numbers']] == numbers
    assert [command.split()[0] for command in server.commands()].count('AUTH') == 1
    assert server.server.accepted == 1
    assert any('one command per read' in json.dumps(warning) for warning in result['warnings'])
    code, result = run(ntsapi_number, capsys, dict(server.args, numbers=numbers[:3], targets=['S:{international}@sip.example.com']))
    assert code == 0 and result['changed'] and [command.split()[0] for command in server.commands()].count('AUTH') == 2


def test_stat_answered_per_target_is_read_and_idempotent(start, capsys):
    server = start(stat_format='per-target')
    args = dict(server.args, numbers=['01792100010'], targets=['S:{international}@sip.example.com', '441234567890', 'F:fax@example.com'])
    code, first = run(ntsapi_number, capsys, args)
    assert code == 0 and first['changed']
    assert [target['kind'] for target in first['numbers'][0]['after']['targets']] == ['sip', 'divert', 'fax2email']
    code, again = run(ntsapi_number, capsys, args)
    assert code == 0 and not again['changed']


def test_an_option_the_server_refuses_is_named_and_the_others_are_applied(start, capsys):
    server = start(refuse=['feat-list'])
    code, result = run(ntsapi_number, capsys, dict(server.args, numbers=['01792100011'], targets=['441234567890'], features={'D': True},
                                                   emergency={'name': 'Example', 'postcode': 'SA1 1AA'}))
    assert code == 1 and result['changed'] is True
    assert 'features could not be applied' in result['msg'] and 'FEAT 01792100011' in result['msg']
    entry = result['numbers'][0]
    assert entry['failed'] and entry['after']['targets'][0]['value'] == '441234567890'
    assert entry['after']['emergency'] == {'name': 'Example', 'postcode': 'SA1 1AA'}


def test_alten_then_the_ten_numbers_as_magrathea_api_uses_it(server, capsys):
    code, result = run(ntsapi_command, capsys, dict(server.args, commands=['ALTEN 0179210001_']))
    assert code == 0 and result['changed'] is True
    stem = result['results'][0]['message'].split()[0]
    assert stem == '0179210001_'
    numbers = [stem[:-1] + str(digit) for digit in range(10)]
    code, result = run(ntsapi_number, capsys, dict(server.args, numbers=numbers))
    assert code == 0 and [entry['after']['state'] for entry in result['numbers']] == ['active'] * 10


def test_a_ten_digit_number_is_allocated_by_ntsapi_number(server, capsys):
    code, result = run(ntsapi_number, capsys, dict(server.args, numbers=['0169770003']))
    assert code == 0 and result['numbers'][0]['commands'] == ['ALLO 0169770003', 'ACTI 0169770003']
