# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The balance_info module's glue: options, threshold, fail or warn, check mode; the REST client is replaced."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
import yaml

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
                                 'promofunds_number': 10.0, 'total': '135.50', 'total_number': 135.5}
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
    assert code == 1 and 'min_funds is \'plenty\', not a plain decimal amount' in result['msg'] and client.accounts == []


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


@pytest.mark.parametrize('args, message', [
    ({'url': 'http://rest.example/v1/'}, 'must start with https://'),
    ({'url': 'https://u:p@rest.example/v1/'}, 'holds credentials'),
    ({'fingerprint': 'abc'}, 'has 3 hex digits'),
    ({'retries': -1}, 'retries must be a whole number from 0 to 10'),
    ({'retries': 11}, 'retries must be a whole number from 0 to 10'),
    ({'timeout': 0}, 'timeout must be more than 0'),
    ({'timeout': -1}, 'timeout must be more than 0'),
    ({'password': ''}, 'needs username and password'),
    ({'username': 'rest:user'}, 'holds a ":"'),
    ({'password': 'r\u00e9st-secret'}, 'password (MAGRATHEA_REST_PASSWORD) holds a character outside ASCII'),
    ({'proxy': 'socks5://proxy.example:1080'}, 'proxy must be an http://'),
    ({'ca_path': '/nonexistent/ca.pem'}, 'does not exist'),
])
def test_bad_options_are_explained(capsys, args, message):
    with patch_module_args(dict(ARGS, **args)):
        with pytest.raises(SystemExit) as caught:
            balance_info.main()
    result = json.loads(capsys.readouterr().out)
    assert caught.value.code == 1 and message in result['msg']
    assert 'r\u00e9st-secret' not in result['msg']


@pytest.mark.parametrize('args, message', [
    ({'account': 'MAG000001\n'}, "account 'MAG000001\\n' holds a line break"),
    ({'account': 'MAG 1'}, 'account \'MAG 1\' holds white space'),
    ({'min_funds': '1_000'}, 'min_funds is \'1_000\', not a plain decimal amount'),
    ({'min_funds': '\u0661\u0660'}, 'not a plain decimal amount'),
    ({'min_funds': '1e5000'}, 'implausible'),
])
def test_account_and_threshold_are_checked_before_connecting(monkeypatch, capsys, args, message):
    code, result, client = run(monkeypatch, capsys, args)
    assert code == 1 and message in result['msg'] and client.accounts == []


@pytest.mark.parametrize('args, secret', [
    ({'url': 'https://billing:url-Secret-77@rest.example/v1/'}, 'url-Secret-77'),
    ({'url': 'https://billing:url%3ASecret@rest.example/v1/'}, 'url%3ASecret'),
    ({'url': 'https://billing:url%3ASecret@rest.example/v1/'}, 'url:Secret'),
    ({'proxy': 'http://proxyuser:proxy-Secret-88@proxy.example:3128', 'timeout': 0}, 'proxy-Secret-88'),
    ({'proxy': 'http://proxyuser:proxy-Secret-99@proxy.example:3128', 'validate_certs': False, 'min_funds': 'x'}, 'proxy-Secret-99'),
])
def test_a_password_in_a_url_is_in_no_output(capsys, args, secret):
    with patch_module_args(dict(ARGS, **args)):
        with pytest.raises(SystemExit) as caught:
            balance_info.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert caught.value.code == 1 and result['failed'] is True
    # The module's arguments (shown at -vvv) are part of the output.
    assert 'invocation' in result
    assert secret not in out and 'rest-secret-Zq9' not in out


def test_the_basic_token_is_in_no_output(monkeypatch, capsys):
    token = base64.b64encode(b'rest-user:rest-secret-Zq9').decode()

    def careless(self, account):
        raise _tls.AuthenticationError('server said: Authorization: Basic %s' % token)
    monkeypatch.setattr(_rest.RestClient, 'balance', careless)
    with patch_module_args(ARGS):
        with pytest.raises(SystemExit):
            balance_info.main()
    out = capsys.readouterr().out
    assert token not in out and 'rest-secret-Zq9' not in out and 'server said' in out


def test_proxy_options(monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, module):
            seen.update(_rest.client_from_module(module).__dict__)

    monkeypatch.delenv('https_proxy', raising=False)
    monkeypatch.delenv('HTTPS_PROXY', raising=False)
    for args, proxy in (({'proxy': 'http://proxy.example:3128'}, 'proxy.example:3128'), ({}, None),
                        ({'proxy': 'http://proxy.example:3128', 'use_proxy': False}, None)):
        monkeypatch.setattr(balance_info, 'client_from_module', lambda module: Recorder(module) and FakeClient(('1', '0')))
        with patch_module_args(dict(ARGS, **args)):
            with pytest.raises(SystemExit):
                balance_info.main()
        endpoint = seen['endpoint']
        assert (endpoint.proxy.describe() if endpoint.proxy else None) == (proxy and 'proxy ' + proxy)


def documented(section):
    return yaml.safe_load(getattr(balance_info, section))


def test_returned_types_are_the_documented_ones(monkeypatch, capsys):
    types = {'str': str, 'float': float, 'bool': bool, 'dict': dict}
    for answer in (('125.50', '10'), ('100', '0'), ('0.1', '0.2')):
        dummy, result, dummy = run(monkeypatch, capsys, {'min_funds': '1'}, answer=answer)
        for name, spec in documented('RETURN').items():
            assert isinstance(result[name], types[spec['type']]), name
        for name, spec in documented('RETURN')['balance']['contains'].items():
            assert isinstance(result['balance'][name], types[spec['type']]), name


def test_documentation_matches_the_client():
    options = documented('DOCUMENTATION')['options']
    assert options['fingerprint']['type'] == 'list' and options['fingerprint']['elements'] == 'str'
    fingerprint = ' '.join(options['fingerprint']['description'])
    assert 'host name is not checked' not in fingerprint and 'in addition to the certificate verification' in fingerprint
    assert options['proxy']['type'] == 'str' and options['use_proxy']['default'] is True
    text = balance_info.DOCUMENTATION
    assert 'requests' not in ' '.join(documented('DOCUMENTATION')['requirements'])
    for promise in ('B(Deadline.)', 'never more than 11', 'B(Checked before any connection.)', 'more than 12 digits', '1 MiB'):
        assert promise in text
    assert _rest.call_seconds(30, 2) == 110 and '(110 seconds with the defaults)' in ' '.join(text.split())
    assert _rest.MAX_REQUESTS == 11 and _rest.MAX_WHOLE_DIGITS == 12 and _rest.MAX_BODY == 1024 * 1024
