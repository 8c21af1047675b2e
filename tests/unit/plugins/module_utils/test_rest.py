# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The REST client against a scripted HTTPS server on loopback with throwaway certificates."""

from __future__ import annotations

import base64
import glob
import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from decimal import Decimal

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _rest, _retry, _tls
from ansible_collections.magrathea.secure.sandbox import pki
from ansible_collections.magrathea.secure.tests.unit.plugins.module_utils.test_tls import ConnectProxy

USER, PASSWORD, ACCOUNT = 'rest-user', 'rest-secret-Zq9', 'MAG000001'
TOKEN = base64.b64encode(('%s:%s' % (USER, PASSWORD)).encode()).decode()
BALANCE = {'funds': '125.50', 'promofunds': '10.00'}
BALANCE_BODY = json.dumps(BALANCE).encode()
COLLECTIONS = os.path.abspath(os.path.join(os.path.dirname(_rest.__file__), '..', '..', '..', '..', '..'))


def json_reply(status, document, **headers):
    return status, dict({'Content-Type': 'application/json'}, **headers), json.dumps(document).encode()


def http_head(status, headers):
    lines = ['HTTP/1.1 %d Scripted' % status, 'Connection: close'] + ['%s: %s' % item for item in headers.items()]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode()


class ScriptedHttpsServer:
    """HTTPS on 127.0.0.1 answering each request with the next scripted reply, one request per connection.

    A reply is (status, headers, body), ('hang', seconds), or a function(tls, request) that answers itself.
    Every request received is recorded.
    """

    def __init__(self, certificate, key, tmp_path, replies):
        self.context = pki.issued_server_context(certificate, key, str(tmp_path))
        self.replies = list(replies)
        self.received = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return 'https://localhost:%d/v1/' % self.port

    @property
    def requests(self):
        return [raw for raw in self.received if raw]

    def _serve(self):
        while not self.stopped.is_set():
            try:
                raw, dummy = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            # A connection per thread, so that a hanging reply does not hold up the client's retry.
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw):
        raw.settimeout(5)
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                self._answer(tls)
        except (ssl.SSLError, OSError):
            self.received.append(b'')

    def _answer(self, tls):
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
        self.received.append(data)
        if not data:
            return
        with self.lock:
            reply = self.replies.pop(0) if self.replies else json_reply(500, {'error': 'script exhausted'})
        if callable(reply):
            reply(tls, data)
            return
        if reply[0] == 'hang':
            time.sleep(reply[1])
            return
        status, headers, body = reply
        headers = dict(headers)
        if 'Transfer-Encoding' not in headers:
            headers.setdefault('Content-Length', str(len(body)))
        tls.sendall(http_head(status, headers) + body)

    def stop(self):
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture(name='serve')
def serve_fixture(authority, tmp_path):
    servers = []

    def start(*replies, signer=None, **issue):
        certificate, key = (signer or authority).issue(**issue)
        server = ScriptedHttpsServer(certificate, key, tmp_path, replies)
        server.certificate = certificate
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class Sleeps(list):
    """Records the waits between retries instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


def client_for(server, ca_file, **options):
    options.setdefault('sleep', Sleeps())
    options.setdefault('timeout', 5)
    return _rest.RestClient(server.url, options.pop('username', USER), options.pop('password', PASSWORD), ca_path=ca_file, **options)


def authorization_of(request):
    for line in request.decode('latin-1').split('\r\n'):
        if line.lower().startswith('authorization:'):
            return line.split(':', 1)[1].strip()
    return ''


def echo_authorization(status, as_json=True, where='body'):
    """A reply that hands the request's Authorization header back, as a careless server does in its error text."""
    def reply(tls, request):
        seen = authorization_of(request)
        text = 'header was: Authorization: %s; password %s' % (seen, base64.b64decode(seen.split()[1]).decode().split(':', 1)[1])
        headers = {'Content-Type': 'application/json' if as_json else 'text/plain; %s' % seen}
        if where == 'location':
            headers['Location'] = 'https://elsewhere.example/login?auth=%s' % seen
        body = json.dumps({'error': text}).encode() if as_json else ('<html>\n%s\n</html>' % text).encode()
        headers['Content-Length'] = str(len(body))
        tls.sendall(http_head(status, headers) + body)
    return reply


class Drip:
    """A reply sent one byte at a time: every wait is short, the whole reply is not."""

    def __init__(self, data, interval):
        self.data = data
        self.interval = interval
        self.sent = 0
        self.done = threading.Event()

    def __call__(self, tls, request):
        try:
            for index in range(len(self.data)):
                tls.sendall(self.data[index:index + 1])
                self.sent += 1
                time.sleep(self.interval)
        except OSError:
            pass
        finally:
            self.done.set()


class EndlessChunks:
    """A chunked body that goes on until the client leaves (or ``limit`` bytes): valid JSON padded with white space."""

    def __init__(self, limit=32 * 1024 * 1024):
        self.limit = limit
        self.sent = 0
        self.done = threading.Event()

    def __call__(self, tls, request):
        chunk = b' ' * 65536
        try:
            tls.sendall(http_head(200, {'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked'}))
            body = BALANCE_BODY
            tls.sendall(b'%x\r\n%s\r\n' % (len(body), body))
            while self.sent < self.limit:
                tls.sendall(b'%x\r\n%s\r\n' % (len(chunk), chunk))
                self.sent += len(chunk)
            tls.sendall(b'0\r\n\r\n')
        except OSError:
            pass
        finally:
            self.done.set()


# -- base URL and allow-list --------------------------------------------------------------------


@pytest.mark.parametrize('url, host, port, path', [
    ('https://restapi.magrathea.net:8443/v1/', 'restapi.magrathea.net', 8443, '/v1/'),
    ('https://restapi.magrathea.net:8443/v1', 'restapi.magrathea.net', 8443, '/v1/'),
    ('HTTPS://api.example/', 'api.example', 443, '/'),
    ('https://127.0.0.1:9443', '127.0.0.1', 9443, '/'),
])
def test_endpoint_from_url(url, host, port, path):
    endpoint, base_path = _tls.endpoint_from_url(url)
    assert (endpoint.host, endpoint.port, base_path) == (host, port, path)


@pytest.mark.parametrize('url, message', [
    ('http://restapi.magrathea.net:8443/v1/', 'must start with https://'),
    ('https://user:secret@restapi.magrathea.net/v1/', 'holds credentials'),
    ('https://restapi.magrathea.net/v1/?account=x', 'without ?query'),
    ('https://restapi.magrathea.net/v1/#balance', '#fragment'),
    ('https:///v1/', 'no host name'),
    ('https://restapi.magrathea.net:99999/v1/', 'invalid port'),
    ('', 'must start with https://'),
])
def test_bad_url_is_explained(url, message):
    with pytest.raises(ValueError, match=message.replace('?', r'\?')) as caught:
        _rest.RestClient(url, USER, PASSWORD)
    assert 'secret' not in str(caught.value)


@pytest.mark.parametrize('template, parameters, path', [
    ('account/balance/{account}', {'account': 'MAG000001'}, 'account/balance/MAG000001'),
    ('account/services', {}, 'account/services'),
    ('account/gettariff/{account}', {'account': 'ab_12-3'}, 'account/gettariff/ab_12-3'),
    ('number/status/{number}', {'number': 'P1792000123'}, 'number/status/P1792000123'),
    ('number/status/{number}', {'number': '+33123456789'}, 'number/status/%2B33123456789'),
    ('block/info/{number}', {'number': '01792000100'}, 'block/info/01792000100'),
])
def test_allowed_paths(template, parameters, path):
    assert _rest.rest_path(template, **parameters) == path


@pytest.mark.parametrize('template, parameters', [
    ('account/transfer/{source}/{target}/{funds}', {'source': 'MAG1', 'target': 'MAG2', 'funds': '10'}),
    ('account/balance/{account}', {'account': '../transfer/MAG1/MAG2/10'}),
    ('account/balance/{account}', {'account': '..'}),
    ('account/balance/{account}', {'account': 'MAG1/../../transfer'}),
    ('account/balance/{account}', {'account': 'MAG1?x=1'}),
    ('account/balance/{account}', {'account': 'MAG1\n'}),
    ('account/balance/{account}', {'account': ''}),
    ('account/balance/{account}', {}),
    ('number/status/{number}', {'number': '0179 200'}),
])
def test_anything_else_is_refused(template, parameters):
    with pytest.raises(_rest.DisallowedPathError, match='nothing was sent|Nothing was sent|needs a value'):
        _rest.rest_path(template, **parameters)


def test_a_money_moving_path_never_reaches_the_server(serve, ca_file):
    server = serve(json_reply(200, {}))
    client = client_for(server, ca_file)
    with pytest.raises(_rest.DisallowedPathError):
        client.get('account/transfer/{source}/{target}/{funds}', source='MAG1', target='MAG2', funds='10')
    assert server.received == []


# -- inputs are checked before any connection ---------------------------------------------------


@pytest.mark.parametrize('options, message', [
    ({'account': 'MAG000001\n'}, r"account 'MAG000001\\n' holds a line break"),
    ({'account': 'MAG000001 '}, 'account .* holds white space'),
    ({'account': 'MAG\u0660001'}, 'account .* outside ASCII'),
    ({'password': 'p\u00e4ssword-Zq9'}, r'password \(MAGRATHEA_REST_PASSWORD\) holds a character outside ASCII'),
    ({'password': 'pass\nword'}, r'password \(MAGRATHEA_REST_PASSWORD\) holds a line break'),
    ({'username': 'rest:user'}, r'username \(MAGRATHEA_REST_USERNAME\) .* holds a ":"'),
    ({'username': ''}, 'needs username and password'),
    ({'password': None}, 'needs username and password'),
    ({'retries': 11}, 'retries must be a whole number from 0 to 10'),
    ({'retries': -1}, 'retries must be a whole number from 0 to 10'),
    ({'timeout': 0}, 'timeout must be more than 0'),
    ({'timeout': -1}, 'timeout must be more than 0'),
    ({'proxy': 'socks5://127.0.0.1:1080'}, 'proxy must be an http://'),
])
def test_inputs_are_checked_before_any_connection(serve, ca_file, options, message):
    server = serve(json_reply(200, BALANCE))
    account = options.pop('account', ACCOUNT)
    # A bad account is refused by the allow-list of paths (DisallowedPathError), everything else by the client's checks.
    with pytest.raises((ValueError, _rest.DisallowedPathError), match=message) as caught:
        client = client_for(server, ca_file, **options)
        client.balance(account)
    assert 'p\u00e4ssword' not in str(caught.value) and 'pass\nword' not in str(caught.value)
    server.stop()
    assert server.received == []


# -- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize('value, text', [
    ('125.50', '125.50'),
    (125, '125'),
    (Decimal('0.1'), '0.1'),
    ('1E+3', '1000'),
    ('1e-5', '0.00001'),
    ('-3.20', '-3.20'),
    (0, '0'),
    ('999999999999.99999999999999999999', '999999999999.99999999999999999999'),
])
def test_parse_money(value, text):
    amount = _rest.parse_money(value)
    assert isinstance(amount, Decimal)
    assert _rest.money_text(amount) == text


@pytest.mark.parametrize('value, reason', [
    (True, 'not an amount'), (None, 'not an amount'), ([1], 'not an amount'), ({'x': 1}, 'not an amount'), (1.5, 'not an amount'),
    ('abc', 'not a plain decimal'), ('', 'not a plain decimal'), ('NaN', 'not a finite amount'), ('Infinity', 'not a finite amount'),
    (Decimal('NaN'), 'not a finite amount'), (Decimal('-Infinity'), 'not a finite amount'),
    (' 7 ', 'not a plain decimal'), ('1_000', 'not a plain decimal'), ('\u0661\u0662\u0663', 'not a plain decimal'),
    ('\uff11\uff12', 'not a plain decimal'), ('+5', 'not a plain decimal'), ('.5', 'not a plain decimal'), ('0x10', 'not a plain decimal'),
    ('1e5000', 'implausible'), ('1e1000000', 'implausible'), ('1e99999999999999999999', 'implausible'), (Decimal('1E+5000'), 'implausible'),
    pytest.param('9' * 5000, 'implausible', id='5000-digit-text'), pytest.param(10 ** 5000, 'implausible', id='5000-digit-int'),
    ('1000000000000', 'implausible'), ('-1000000000000', 'implausible'),
    ('49.999999999999999999999999999', 'implausible'), ('0E-1000000', 'implausible'),
])
def test_parse_money_refuses_what_is_not_a_plausible_plain_amount(value, reason):
    with pytest.raises(_tls.ProtocolError, match='^promofunds .*%s' % reason) as caught:
        _rest.parse_money(value, 'promofunds')
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize('value, expected', [
    (None, None), ('50.00', Decimal('50.00')), (50, Decimal('50')), (0.1, Decimal('0.1')), (125.50, Decimal('125.5')),
    ('1e3', Decimal('1000')),
])
def test_parse_threshold(value, expected):
    assert _rest.parse_threshold(value) == expected


@pytest.mark.parametrize('value', ['fifty', True, 'inf', [50], '', ' 20 ', '1_000', '\u0661\u0660', '1e5000', float('nan')])
def test_bad_threshold_is_explained(value):
    with pytest.raises(ValueError, match='^min_funds'):
        _rest.parse_threshold(value)


def test_balance_as_dict_gives_text_and_numbers():
    balance = _rest.Balance.from_document(ACCOUNT, {'funds': Decimal('0.1'), 'promofunds': Decimal('0.2')})
    assert balance.as_dict() == {
        'account': ACCOUNT, 'funds': '0.1', 'funds_number': 0.1, 'promofunds': '0.2', 'promofunds_number': 0.2,
        'total': '0.3', 'total_number': 0.3,
    }
    whole = _rest.Balance.from_document(ACCOUNT, {'funds': '100.00'}).as_dict()
    assert (whole['funds_number'], whole['promofunds'], whole['total']) == (100, '0', '100.00')
    # The numbers are what the module documents: floats, also when whole.
    assert all(isinstance(whole[name + '_number'], float) for name in ('funds', 'promofunds', 'total'))


@pytest.mark.parametrize('document, field', [
    ({'promofunds': '1'}, 'funds'), ([], 'funds'), ('funds', 'funds'), ({'funds': None}, 'funds'),
    ({'funds': '12', 'promofunds': 'lots'}, 'promofunds'), ({'funds': '1e5000'}, 'funds'),
    pytest.param({'funds': '1', 'promofunds': 10 ** 5000}, 'promofunds', id='5000-digit-int'),
])
def test_balance_without_money_is_a_protocol_error_naming_the_field(document, field):
    with pytest.raises(_tls.ProtocolError, match='the balance of %s.* %s ' % (ACCOUNT, field)):
        _rest.Balance.from_document(ACCOUNT, document)


def test_the_total_is_exact_beyond_28_digits():
    # 32 significant digits: the default decimal context (28) would round the sum up to the threshold.
    funds = '999999999999.99999999999999999999'
    balance = _rest.Balance.from_document(ACCOUNT, {'funds': funds, 'promofunds': '0'})
    assert _rest.money_text(balance.total) == funds
    assert _rest.LowFunds(balance, Decimal('1000000000000'), include_promofunds=True).low is True
    both = _rest.Balance.from_document(ACCOUNT, {'funds': funds, 'promofunds': '0.00000000000000000001'})
    assert _rest.money_text(both.total) == '1000000000000.00000000000000000000'
    assert _rest.LowFunds(both, Decimal('1000000000000'), include_promofunds=True).low is False


@pytest.mark.parametrize('funds, promofunds, threshold, include, low', [
    ('125.50', '10', None, False, False),
    ('125.50', '10', '125.50', False, False),
    ('125.49', '10', '125.50', False, True),
    ('100', '30', '120', False, True),
    ('100', '30', '120', True, False),
    ('0.1', '0.2', '0.3', True, False),
    ('49.99999999999999999999', '0', '50', True, True),
])
def test_low_funds(funds, promofunds, threshold, include, low):
    balance = _rest.Balance.from_document(ACCOUNT, {'funds': funds, 'promofunds': promofunds})
    check = _rest.LowFunds(balance, _rest.parse_threshold(threshold), include_promofunds=include)
    assert check.low is low


def test_low_funds_message_gives_balance_and_threshold():
    balance = _rest.Balance(ACCOUNT, Decimal('12.34'), Decimal('5.00'))
    message = _rest.LowFunds(balance, Decimal('50.00')).message()
    assert '12.34' in message and '50.00' in message and ACCOUNT in message and 'top up' in message


# -- bodies: bounded, decoded within a bound ----------------------------------------------------


@pytest.mark.parametrize('encoding, packed', [
    (None, BALANCE_BODY), ('identity', BALANCE_BODY), ('gzip', gzip.compress(BALANCE_BODY)), ('x-gzip', gzip.compress(BALANCE_BODY)),
    ('deflate', zlib.compress(BALANCE_BODY)), ('deflate', zlib.compress(BALANCE_BODY)[2:-4]), ('GZIP', gzip.compress(BALANCE_BODY)),
])
def test_decode_body(encoding, packed):
    assert _rest.decode_body(packed, encoding, 1000) == BALANCE_BODY


@pytest.mark.parametrize('encoding, packed, reason', [
    ('gzip', gzip.compress(b' ' * 5000), 'unpacks to more than 1000 bytes'),
    ('deflate', zlib.compress(b' ' * 5000), 'unpacks to more than 1000 bytes'),
    ('gzip', b'not gzip at all', 'is not valid gzip'),
    ('br', b'x', 'Content-Encoding br'),
    ('gzip, gzip', gzip.compress(gzip.compress(b'x')), 'Content-Encoding gzip, gzip'),
])
def test_decode_body_refuses(encoding, packed, reason):
    with pytest.raises(ValueError, match=reason):
        _rest.decode_body(packed, encoding, 1000)


def test_a_gzip_bomb_is_refused(serve, ca_file):
    # 64 MiB of white space after a valid balance packs into about 64 KiB; the client stops at its bound.
    bomb = gzip.compress(BALANCE_BODY + b' ' * (64 * 1024 * 1024))
    server = serve((200, {'Content-Type': 'application/json', 'Content-Encoding': 'gzip'}, bomb))
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError, match='unpacks to more than 1048576 bytes'):
        client.balance(ACCOUNT)
    assert len(server.requests) == 1


def test_a_compressed_balance_is_read(serve, ca_file):
    server = serve((200, {'Content-Type': 'application/json', 'Content-Encoding': 'gzip'}, gzip.compress(BALANCE_BODY)))
    client = client_for(server, ca_file)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert b'\r\nAccept-Encoding: gzip, deflate\r\n' in server.requests[0]


def test_a_body_beyond_the_bound_is_refused(serve, ca_file):
    server = serve((200, {'Content-Type': 'application/json'}, BALANCE_BODY + b' ' * (10 * 1024 * 1024)))
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError, match='more than 1048576 bytes'):
        client.balance(ACCOUNT)


def test_an_endless_chunked_body_is_cut_off(serve, ca_file):
    endless = EndlessChunks()
    server = serve(endless)
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError, match='more than 1048576 bytes'):
        client.balance(ACCOUNT)
    assert endless.done.wait(10)
    assert endless.sent < endless.limit


@pytest.mark.parametrize('body', [b'[' * 100000, b'{"funds": ' * 50000], ids=['arrays', 'objects'])
def test_deeply_nested_json_is_not_json(serve, ca_file, body):
    server = serve((200, {'Content-Type': 'application/json'}, body))
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError, match='not JSON'):
        client.balance(ACCOUNT)


@pytest.mark.parametrize('body, field', [
    (b'{"funds": 1e5000, "promofunds": 0}', 'funds'),
    pytest.param(b'{"funds": 1, "promofunds": ' + b'9' * 5000 + b'}', 'promofunds', id='5000-digit-int'),
    (b'{"funds": NaN}', 'funds'),
    (b'{"funds": "\\u0661\\u0662"}', 'funds'),
])
def test_implausible_amounts_from_the_server_name_the_field(serve, ca_file, body, field):
    server = serve((200, {'Content-Type': 'application/json'}, body))
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError, match='balance of %s: %s ' % (ACCOUNT, field)) as caught:
        client.balance(ACCOUNT)
    assert 'not JSON' not in str(caught.value) and len(str(caught.value)) < 400


# -- against a server ---------------------------------------------------------------------------


def test_balance_over_verified_tls_with_basic_auth(serve, ca_file):
    server = serve(json_reply(200, BALANCE))
    client = client_for(server, ca_file)
    balance = client.balance(ACCOUNT)
    assert (balance.funds, balance.promofunds) == (Decimal('125.50'), Decimal('10.00'))
    [request] = server.requests
    head = request.decode()
    assert head.startswith('GET /v1/account/balance/MAG000001 HTTP/1.1\r\n')
    assert 'Authorization: Basic %s\r\n' % TOKEN in head
    assert 'Host: localhost:%d\r\n' % server.port in head


def test_json_numbers_are_read_exactly(serve, ca_file):
    body = b'{"funds": 0.1, "promofunds": 1e2}'
    server = serve((200, {'Content-Type': 'application/json'}, body))
    client = client_for(server, ca_file)
    balance = client.balance(ACCOUNT)
    assert balance.funds == Decimal('0.1') and balance.total == Decimal('100.1')
    assert balance.as_dict()['total'] == '100.1'


def test_wrong_password_is_explained_once(serve, ca_file):
    server = serve(json_reply(401, {'error': 'Wrong username, password or account'}))
    client = client_for(server, ca_file, retries=3)
    with pytest.raises(_tls.AuthenticationError) as caught:
        client.balance(ACCOUNT)
    message = str(caught.value)
    assert 'Wrong username, password or account' in message
    assert 'localhost:%d/v1/account/balance/MAG000001' % server.port in message
    assert PASSWORD not in message
    assert len(server.requests) == 1


@pytest.mark.parametrize('status', [401, 403, 404, 400, 500, 302])
@pytest.mark.parametrize('as_json', [True, False])
def test_server_text_never_carries_the_credentials(serve, ca_file, status, as_json):
    server = serve(*[echo_authorization(status, as_json, where='location' if status == 302 else 'body')] * 3)
    client = client_for(server, ca_file, retries=0)
    with pytest.raises(_tls.MagratheaError) as caught:
        client.balance(ACCOUNT)
    message = str(caught.value)
    assert authorization_of(server.requests[0]) == 'Basic ' + TOKEN
    assert PASSWORD not in message and TOKEN not in message
    assert '********' in message


def test_a_not_json_body_is_shown_without_credentials_and_bounded(serve, ca_file):
    server = serve(echo_authorization(200, as_json=False))
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError, match='not JSON') as caught:
        client.balance(ACCOUNT)
    message = str(caught.value)
    assert PASSWORD not in message and TOKEN not in message and 'text/plain; ********' in message


def test_a_long_error_body_is_shortened(serve, ca_file):
    server = serve(json_reply(400, {'error': 'x' * 100000}))
    client = client_for(server, ca_file)
    with pytest.raises(_rest.RestError) as caught:
        client.balance(ACCOUNT)
    assert len(str(caught.value)) < 600


def test_malformed_json_is_a_clear_error(serve, ca_file):
    server = serve((200, {'Content-Type': 'text/html'}, b'<html><body><h1>Service temporarily unavailable</h1></body></html>'))
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError) as caught:
        client.balance(ACCOUNT)
    message = str(caught.value)
    assert 'not JSON' in message and 'text/html' in message and 'Service temporarily unavailable' in message


@pytest.mark.parametrize('status, error, next_step', [
    (404, 'Not found', "check the account number (MAG000001) and that the REST user may read it"),
    (403, 'Forbidden', "the REST user lacks the 'balance' permission for MAG000001"),
])
def test_not_found_and_forbidden_say_what_to_do(serve, ca_file, status, error, next_step):
    server = serve(json_reply(status, {'error': error}), json_reply(200, BALANCE))
    client = client_for(server, ca_file)
    with pytest.raises(_rest.RestError) as caught:
        client.balance(ACCOUNT)
    message = str(caught.value)
    assert caught.value.status == status and 'HTTP %d: %s' % (status, error) in message
    assert next_step in message and 'GET account/services lists' in message
    assert len(server.requests) == 1


def test_server_errors_are_retried_then_succeed(serve, ca_file):
    server = serve(json_reply(503, {'error': 'busy'}), json_reply(502, {}), json_reply(200, BALANCE))
    sleeps = Sleeps()
    client = client_for(server, ca_file, sleep=sleeps)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert len(server.requests) == 3
    assert sleeps[0] == _rest.RETRY_MIN_DELAY and _rest.RETRY_MIN_DELAY <= sleeps[1] <= 2 * _rest.RETRY_BASE_DELAY


def test_retries_are_bounded(serve, ca_file):
    server = serve(*[json_reply(503, {'error': 'Service temporarily unavailable'})] * 5)
    client = client_for(server, ca_file, retries=2)
    with pytest.raises(_rest.RestError) as caught:
        client.balance(ACCOUNT)
    assert caught.value.status == 503
    assert '503' in str(caught.value) and 'all 3 attempts' in str(caught.value) and 'Service temporarily unavailable' in str(caught.value)
    assert len(server.requests) == 3


def test_a_server_that_always_answers_503_retry_after_0_gets_a_bounded_number_of_requests(serve, ca_file):
    server = serve(*[json_reply(503, {'error': 'busy'}, **{'Retry-After': '0'})] * 40)
    sleeps = Sleeps()
    client = client_for(server, ca_file, retries=_retry.MAX_RETRIES, sleep=sleeps)
    with pytest.raises(_rest.RestError, match='all 11 attempts'):
        client.balance(ACCOUNT)
    # The run's budget is spent: a second call in the same run sends nothing.
    with pytest.raises(_retry.BudgetExhausted):
        client.balance(ACCOUNT)
    assert len(server.requests) == _rest.MAX_REQUESTS == 11
    assert len(sleeps) == 10 and min(sleeps) >= _rest.RETRY_MIN_DELAY > 0


def test_retry_after_is_honoured_within_bounds(serve, ca_file):
    server = serve(json_reply(503, {}, **{'Retry-After': '3'}), json_reply(503, {}, **{'Retry-After': '3600'}),
                   json_reply(503, {}, **{'Retry-After': 'Wed, 21 Oct 2015 07:28:00 GMT'}), json_reply(200, BALANCE))
    sleeps = Sleeps()
    client = client_for(server, ca_file, sleep=sleeps, retries=3)
    client.balance(ACCOUNT)
    assert sleeps[:2] == [3.0, _rest.RETRY_MAX_DELAY]
    assert _rest.RETRY_MIN_DELAY <= sleeps[2] <= _rest.RETRY_MAX_DELAY


@pytest.mark.parametrize('status, error', [(400, 'No CDRS'), (501, 'Not implemented'), (429, 'Too many requests')])
def test_other_errors_are_not_retried(serve, ca_file, status, error):
    server = serve(json_reply(status, {'error': error}), json_reply(200, BALANCE))
    client = client_for(server, ca_file)
    with pytest.raises(_rest.RestError, match='HTTP %d: %s' % (status, error)):
        client.balance(ACCOUNT)
    assert len(server.requests) == 1


def test_redirects_are_not_followed(serve, ca_file):
    server = serve((302, {'Location': 'https://elsewhere.example/v1/'}, b''), json_reply(200, BALANCE))
    client = client_for(server, ca_file)
    with pytest.raises(_tls.ProtocolError, match='redirected to https://elsewhere.example/v1/'):
        client.balance(ACCOUNT)
    assert len(server.requests) == 1


def test_timeout_is_retried(serve, ca_file):
    server = serve(('hang', 2), json_reply(200, BALANCE))
    sleeps = Sleeps()
    client = client_for(server, ca_file, timeout=0.5, sleep=sleeps)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert len(server.requests) == 2 and sleeps == [_rest.RETRY_MIN_DELAY]


def test_timeout_after_the_last_attempt(serve, ca_file):
    server = serve(('hang', 2), ('hang', 2))
    client = client_for(server, ca_file, timeout=0.3, retries=1)
    with pytest.raises(_tls.MagratheaTimeout, match='localhost:%d/v1/account/balance/MAG000001 within 0.3s.*all 2 attempts' % server.port):
        client.balance(ACCOUNT)


@pytest.mark.parametrize('slow', ['headers', 'body'])
def test_a_reply_sent_one_byte_at_a_time_ends_at_the_deadline(serve, ca_file, slow):
    # Each byte comes well within timeout; the whole reply would take 8 s. The attempt must end after timeout (1 s).
    body = BALANCE_BODY + b' ' * 40
    head = http_head(200, {'Content-Type': 'application/json', 'Content-Length': str(len(body))})

    def reply(tls, request):
        if slow == 'body':
            tls.sendall(head)
        drip(tls, request)
    drip = Drip(head + body if slow == 'headers' else body, 0.1)
    server = serve(reply)
    client = client_for(server, ca_file, timeout=1, retries=0)
    with pytest.raises(_tls.MagratheaTimeout, match='within 1s') as caught:
        client.balance(ACCOUNT)
    assert 'whole' in str(caught.value)
    assert drip.done.wait(10)
    assert drip.sent < len(drip.data)


def test_connection_refused_names_endpoint(ca_file):
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    listener.close()
    sleeps = Sleeps()
    client = _rest.RestClient('https://127.0.0.1:%d/v1/' % port, USER, PASSWORD, ca_path=ca_file, retries=1, sleep=sleeps)
    with pytest.raises(_tls.MagratheaConnectionError, match='cannot connect to 127.0.0.1:%d' % port):
        client.balance(ACCOUNT)
    assert sleeps == [_rest.RETRY_MIN_DELAY]


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
def test_pin_match(serve, ca_file, algorithm):
    server = serve(json_reply(200, BALANCE))
    pin = pki.fingerprints(server.certificate)[algorithm].lower()
    client = client_for(server, ca_file, fingerprint=pin)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')


def test_pins_for_a_certificate_rotation(serve, ca_file, authority):
    server = serve(json_reply(200, BALANCE))
    other, dummy = authority.issue()
    pins = [pki.fingerprints(other)['sha256'], pki.fingerprints(server.certificate)['sha1']]
    client = client_for(server, ca_file, fingerprint=pins)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
def test_pin_mismatch_sends_no_credentials(serve, ca_file, authority, algorithm):
    server = serve(json_reply(200, BALANCE))
    others = [authority.issue()[0] for dummy in range(2)]
    pinned = [pki.fingerprints(other)[algorithm] for other in others]
    client = client_for(server, ca_file, fingerprint=pinned, retries=2)
    with pytest.raises(_tls.PinMismatchError) as caught:
        client.balance(ACCOUNT)
    message = str(caught.value)
    assert all(pin in message for pin in pinned) and pki.fingerprints(server.certificate)[algorithm] in message
    assert 'localhost:%d' % server.port in message and 'Nothing was sent' in message
    server.stop()
    assert server.requests == []
    assert all(b'Authorization' not in raw for raw in server.received)


def test_a_pin_does_not_waive_the_host_name_check(serve, ca_file):
    server = serve(json_reply(200, BALANCE), hosts=('billing.example',))
    pin = pki.fingerprints(server.certificate)['sha256']
    client = client_for(server, ca_file, fingerprint=pin)
    with pytest.raises(_tls.TLSVerifyError, match='match'):
        client.balance(ACCOUNT)
    server.stop()
    assert server.requests == []


def test_pin_is_checked_without_verification(serve, ca_file):
    server = serve(json_reply(200, BALANCE), signer=pki.CertificateAuthority('Someone Else'))
    client = client_for(server, None, validate_certs=False, fingerprint='00' * 32)
    with pytest.raises(_tls.PinMismatchError):
        client.balance(ACCOUNT)
    server.stop()
    assert server.requests == []


@pytest.mark.parametrize('issue, reason', [
    ({'signer': pki.CertificateAuthority('Someone Else')}, 'unable to get local issuer certificate'),
    ({'hosts': ('billing.example',)}, 'match'),
])
def test_bad_certificate_is_refused_before_sending(serve, ca_file, issue, reason):
    server = serve(json_reply(200, BALANCE), **issue)
    client = client_for(server, ca_file, retries=2)
    with pytest.raises(_tls.TLSVerifyError, match=reason) as caught:
        client.balance(ACCOUNT)
    assert 'install the Magrathea root CA' in str(caught.value)
    server.stop()
    assert server.requests == []


def test_validate_certs_false_accepts_any_certificate(serve):
    server = serve(json_reply(200, BALANCE), signer=pki.CertificateAuthority('Someone Else'), hosts=('elsewhere.example',))
    client = client_for(server, None, validate_certs=False)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')


def test_without_ca_path_the_system_store_is_used(serve, ca_file, monkeypatch):
    # OpenSSL's default verify paths (the system store) honour SSL_CERT_FILE: point them at the test root.
    monkeypatch.setenv('SSL_CERT_FILE', ca_file)
    monkeypatch.setenv('SSL_CERT_DIR', '/nonexistent')
    server = serve(json_reply(200, BALANCE))
    client = client_for(server, None)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert client.endpoint.context().cert_store_stats()['x509_ca'] == 1


def test_ca_bundles_of_other_clients_in_the_environment_are_ignored(serve, ca_file, monkeypatch):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', ca_file)
    monkeypatch.setenv('CURL_CA_BUNDLE', ca_file)
    monkeypatch.setenv('SSL_CERT_FILE', '/nonexistent')
    monkeypatch.setenv('SSL_CERT_DIR', '/nonexistent')
    server = serve(json_reply(200, BALANCE))
    client = client_for(server, None, retries=0)
    with pytest.raises(_tls.TLSVerifyError):
        client.balance(ACCOUNT)


def test_ca_path_is_the_only_trust(serve, ca_file):
    server = serve(json_reply(200, BALANCE))
    client = client_for(server, ca_file)
    client.balance(ACCOUNT)
    assert client.endpoint.context().cert_store_stats()['x509_ca'] == 1


def test_a_missing_ca_file_is_found_before_connecting(serve):
    server = serve(json_reply(200, BALANCE))
    with pytest.raises(_tls.TLSVerifyError, match='does not exist'):
        client_for(server, '/nonexistent/ca.pem')
    server.stop()
    assert server.received == []


# -- proxies ------------------------------------------------------------------------------------


@pytest.fixture(name='proxy')
def proxy_fixture(monkeypatch):
    for name in ('https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY', 'http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    proxy = ConnectProxy()
    proxy.url = 'http://127.0.0.1:%d' % proxy.port
    yield proxy
    proxy.close()


@pytest.mark.parametrize('how', ['option', 'environment'])
def test_through_a_proxy(serve, ca_file, proxy, monkeypatch, how):
    server = serve(json_reply(200, BALANCE))
    options = {}
    if how == 'option':
        options['proxy'] = proxy.url
    else:
        monkeypatch.setenv('https_proxy', proxy.url)
    client = client_for(server, ca_file, **options)
    assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert [connect.split('\r\n')[0] for connect in proxy.requests] == ['CONNECT localhost:%d HTTP/1.1' % server.port]
    # The proxy saw the tunnel, never the request inside it.
    assert TOKEN not in proxy.requests[0]


@pytest.mark.parametrize('setting', [{'no_proxy': 'localhost'}, {'use_proxy': False}])
def test_no_proxy_and_use_proxy_false_connect_directly(serve, ca_file, proxy, monkeypatch, setting):
    monkeypatch.setenv('https_proxy', proxy.url)
    if 'no_proxy' in setting:
        monkeypatch.setenv('no_proxy', setting['no_proxy'])
    server = serve(json_reply(200, BALANCE))
    client = client_for(server, ca_file, use_proxy=setting.get('use_proxy', True))
    assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert proxy.requests == [] and len(server.requests) == 1


def test_a_proxy_that_is_down_is_named_without_its_password(serve, ca_file):
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    listener.close()
    server = serve(json_reply(200, BALANCE))
    client = client_for(server, ca_file, proxy='http://proxyuser:proxy-Secret-8@127.0.0.1:%d' % port, retries=0)
    with pytest.raises(_tls.MagratheaConnectionError, match='proxy 127.0.0.1:%d' % port) as caught:
        client.balance(ACCOUNT)
    assert 'proxy-Secret-8' not in str(caught.value)


# -- the client on the standard library alone ---------------------------------------------------


def interpreters():
    """This interpreter and, where pyenv has one, Python 3.8: the oldest a managed host may run."""
    found = [sys.executable]
    found += sorted(glob.glob('/root/.pyenv/versions/3.8.*/bin/python'))[-1:]
    return found


@pytest.mark.parametrize('python', interpreters())
def test_the_client_runs_on_the_standard_library_alone(serve, ca_file, python):
    # -S: no site-packages, so neither requests nor any other third-party package can be imported.
    server = serve(json_reply(200, BALANCE))
    script = (
        'import sys; sys.path.insert(0, %r)\n'
        'from ansible_collections.magrathea.secure.plugins.module_utils import _rest\n'
        'client = _rest.RestClient(%r, %r, %r, ca_path=%r, timeout=5)\n'
        'print(_rest.money_text(client.balance(%r).total))\n'
        'print(sorted(name for name in sys.modules if name.split(".")[0] in ("requests", "urllib3", "ansible")))\n'
    ) % (COLLECTIONS, server.url, USER, PASSWORD, ca_file, ACCOUNT)
    result = subprocess.run([python, '-S', '-c', script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['135.50', '[]']


def test_against_the_sandbox_rest_server(authority, ca_file, tmp_path):
    # The sandbox imitation, with money as JSON numbers: what the integration tests rely on.
    from ansible_collections.magrathea.secure.sandbox.rest import RestServer

    certificate, key = authority.issue()
    context = pki.issued_server_context(certificate, key, str(tmp_path), 'sandbox')
    server = RestServer(ssl_context=context, username=USER, password=PASSWORD, account=ACCOUNT, funds='0.30',
                        promofunds='0.10', numeric_money=True).start()
    try:
        client = _rest.RestClient(server.url, USER, PASSWORD, ca_path=ca_file, timeout=5)
        balance = client.balance(ACCOUNT)
        assert (balance.funds, balance.total) == (Decimal('0.30'), Decimal('0.40'))
        with pytest.raises(_tls.AuthenticationError, match='Wrong username, password or account'):
            client.balance('MAG999999')
    finally:
        server.stop()


def test_endpoint_from_url_for_other_services():
    endpoint, path = _tls.endpoint_from_url('https://portal.example/portal', service='PORTAL', timeout=3)
    assert (endpoint.describe(), path, endpoint.timeout) == ('portal.example:443', '/portal/', 3.0)
    with pytest.raises(ValueError) as caught:
        _tls.endpoint_from_url('ftp://portal.example/', service='PORTAL')
    assert 'PORTAL is only reached over TLS' in str(caught.value) and 'restapi' not in str(caught.value)
