# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The balance_info module's glue: options, threshold, fail or warn, check mode; the REST client is replaced."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.magrathea.secure.plugins.module_utils import _rest, _tls
from ansible_collections.magrathea.secure.plugins.modules import balance_info

ARGS = {'url': 'https://rest.example:8443/v1/', 'username': 'rest-user', 'password': 'rest-secret-Zq9', 'account': 'MAG000001'}


class FakeClient:
    """Stands in for RestClient: answers the balance, or raises."""

    url = 'https://rest.example:8443/v1/'

    def __init__(self, answer):
        self.answer = answer
        self.accounts = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def balance(self, account):
        self.accounts.append(account)
        if isinstance(self.answer, Exception):
            raise self.answer
        return _rest.Balance(account, Decimal(self.answer[0]), Decimal(self.answer[1]))


def run(monkeypatch, capsys, args, answer=('125.50', '10.00'), check_mode=False):
    client = FakeClient(answer)
    monkeypatch.setattr(balance_info, 'client_from_module', lambda module: client)
    args = dict(ARGS, **args)
    if check_mode:
        args['_ansible_check_mode'] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit) as caught:
            balance_info.main()
    result = json.loads(capsys.readouterr().out)
    return caught.value.code, result, client


def test_reads_the_balance(monkeypatch, capsys):
    code, result, client = run(monkeypatch, capsys, {})
    assert code == 0 and client.accounts == ['MAG000001']
    assert result['changed'] is False and result['low_funds'] is False and 'min_funds' not in result
    assert result['balance'] == {'account': 'MAG000001', 'funds': '125.50', 'funds_number': 125.5, 'promofunds': '10.00',
                                 'promofunds_number': 10, 'total': '135.50', 'total_number': 135.5}
    assert result['url'] == 'https://rest.example:8443/v1/'


def test_check_mode_reads_and_changes_nothing(monkeypatch, capsys):
    code, result, client = run(monkeypatch, capsys, {'min_funds': '100'}, check_mode=True)
    assert code == 0 and result['changed'] is False and client.accounts == ['MAG000001']


def test_below_threshold_fails_with_balance_and_threshold(monkeypatch, capsys):
    code, result, dummy = run(monkeypatch, capsys, {'min_funds': '200.00'})
    assert code == 1 and result['failed'] is True and result['changed'] is False
    assert '125.50' in result['msg'] and '200.00' in result['msg']
    assert result['low_funds'] is True and result['min_funds'] == '200.00' and result['balance']['funds'] == '125.50'


def test_below_threshold_warns_when_asked(monkeypatch, capsys):
    code, result, dummy = run(monkeypatch, capsys, {'min_funds': 130, 'on_low_funds': 'warn'})
    assert code == 0 and result['low_funds'] is True and result['min_funds'] == '130'
    # ansible-core 2.19 returns warnings as structured events.
    warnings = [json.dumps(warning) for warning in result['warnings']]
    assert any('125.50' in warning and 'threshold 130' in warning for warning in warnings)


def test_promotional_funds_count_when_asked(monkeypatch, capsys):
    code, result, dummy = run(monkeypatch, capsys, {'min_funds': '130', 'include_promofunds': True})
    assert code == 0 and result['low_funds'] is False


def test_bad_threshold_is_explained_before_connecting(monkeypatch, capsys):
    code, result, client = run(monkeypatch, capsys, {'min_funds': 'plenty'})
    assert code == 1 and 'not a decimal number' in result['msg'] and client.accounts == []


def test_client_errors_become_the_message(monkeypatch, capsys):
    error = _tls.AuthenticationError('rest.example:8443/v1/account/balance/MAG000001 refused the credentials: Wrong username, password or account')
    code, result, dummy = run(monkeypatch, capsys, {}, answer=error)
    assert code == 1 and result['msg'] == str(error)
    assert 'rest-secret-Zq9' not in json.dumps(result)


def test_account_comes_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv('MAGRATHEA_ACCOUNT', 'MAG424242')
    args = dict(ARGS)
    del args['account']
    client = FakeClient(('1', '0'))
    monkeypatch.setattr(balance_info, 'client_from_module', lambda module: client)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            balance_info.main()
    assert client.accounts == ['MAG424242']
    assert json.loads(capsys.readouterr().out)['balance']['account'] == 'MAG424242'


def test_missing_requests_is_reported(monkeypatch, capsys):
    monkeypatch.setattr(balance_info, 'HAS_REQUESTS', False)
    code, result, client = run(monkeypatch, capsys, {})
    assert code == 1 and 'requests' in result['msg'] and client.accounts == []


@pytest.mark.parametrize('args, message', [
    ({'url': 'http://rest.example/v1/'}, 'must start with https://'),
    ({'url': 'https://u:p@rest.example/v1/'}, 'holds credentials'),
    ({'fingerprint': 'abc'}, 'has 3 hex digits'),
    ({'retries': -1}, 'retries must be 0 or more'),
    ({'password': ''}, 'needs username and password'),
])
def test_bad_options_are_explained(capsys, args, message):
    with patch_module_args(dict(ARGS, **args)):
        with pytest.raises(SystemExit) as caught:
            balance_info.main()
    result = json.loads(capsys.readouterr().out)
    assert caught.value.code == 1 and message in result['msg']
