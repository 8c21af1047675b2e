# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The REST client against a scripted HTTPS server on loopback with throwaway certificates."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from decimal import Decimal

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _rest, _tls
from ansible_collections.magrathea.secure.sandbox import pki

USER, PASSWORD, ACCOUNT = 'rest-user', 'rest-secret-Zq9', 'MAG000001'
BALANCE = {'funds': '125.50', 'promofunds': '10.00'}


def json_reply(status, document, **headers):
    return status, dict({'Content-Type': 'application/json'}, **headers), json.dumps(document).encode()


class ScriptedHttpsServer:
    """HTTPS on 127.0.0.1 answering each request with the next scripted reply, one request per connection.

    A reply is (status, headers, body) or ('hang', seconds). Every byte received is recorded.
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
        if reply[0] == 'hang':
            time.sleep(reply[1])
            return
        status, headers, body = reply
        head = ['HTTP/1.1 %d Scripted' % status, 'Content-Length: %d' % len(body), 'Connection: close']
        head += ['%s: %s' % item for item in headers.items()]
        tls.sendall(('\r\n'.join(head) + '\r\n\r\n').encode() + body)

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
    return _rest.RestClient(server.url, USER, PASSWORD, ca_path=ca_file, **options)


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
    # _tls.endpoint_from_url: the shared parser of HTTPS base URLs (REST, and any https:// endpoint).
    with pytest.raises(ValueError, match=message.replace('?', r'\?')) as caught:
        _tls.endpoint_from_url(url)
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
    ('account/balance/{account}', {'account': ''}),
    ('account/balance/{account}', {}),
    ('number/status/{number}', {'number': '0179 200'}),
])
def test_anything_else_is_refused(template, parameters):
    with pytest.raises(_rest.DisallowedPathError, match='nothing was sent|Nothing was sent|needs a value'):
        _rest.rest_path(template, **parameters)


def test_a_money_moving_path_never_reaches_the_server(serve, ca_file):
    server = serve(json_reply(200, {}))
    with client_for(server, ca_file) as client:
        with pytest.raises(_rest.DisallowedPathError):
            client.get('account/transfer/{source}/{target}/{funds}', source='MAG1', target='MAG2', funds='10')
    assert server.received == []


# -- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize('value, text', [
    ('125.50', '125.50'),
    (' 7 ', '7'),
    (125, '125'),
    (Decimal('0.1'), '0.1'),
    ('1E+3', '1000'),
    ('-3.20', '-3.20'),
    (0, '0'),
])
def test_parse_money(value, text):
    amount = _rest.parse_money(value)
    assert isinstance(amount, Decimal)
    assert _rest.money_text(amount) == text


@pytest.mark.parametrize('value', [True, None, 'abc', 'NaN', 'Infinity', '', [1], {'x': 1}, 1.5])
def test_parse_money_refuses_what_is_not_money(value):
    with pytest.raises(_tls.ProtocolError, match='funds'):
        _rest.parse_money(value, 'funds')


@pytest.mark.parametrize('value, expected', [
    (None, None), ('50.00', Decimal('50.00')), (50, Decimal('50')), (0.1, Decimal('0.1')), (' 20 ', Decimal('20')),
])
def test_parse_threshold(value, expected):
    assert _rest.parse_threshold(value) == expected


@pytest.mark.parametrize('value', ['fifty', True, 'inf', [50], ''])
def test_bad_threshold_is_explained(value):
    with pytest.raises(ValueError, match='min_funds'):
        _rest.parse_threshold(value)


def test_balance_as_dict_gives_text_and_numbers():
    balance = _rest.Balance.from_document(ACCOUNT, {'funds': Decimal('0.1'), 'promofunds': Decimal('0.2')})
    assert balance.as_dict() == {
        'account': ACCOUNT, 'funds': '0.1', 'funds_number': 0.1, 'promofunds': '0.2', 'promofunds_number': 0.2,
        'total': '0.3', 'total_number': 0.3,
    }
    whole = _rest.Balance.from_document(ACCOUNT, {'funds': '100.00'}).as_dict()
    assert (whole['funds_number'], whole['promofunds'], whole['total']) == (100, '0', '100.00')


@pytest.mark.parametrize('document', [{'promofunds': '1'}, [], 'funds', {'funds': None}, {'funds': '12', 'promofunds': 'lots'}])
def test_balance_without_money_is_a_protocol_error(document):
    with pytest.raises(_tls.ProtocolError):
        _rest.Balance.from_document(ACCOUNT, document)


@pytest.mark.parametrize('funds, promofunds, threshold, include, low', [
    ('125.50', '10', None, False, False),
    ('125.50', '10', '125.50', False, False),
    ('125.49', '10', '125.50', False, True),
    ('100', '30', '120', False, True),
    ('100', '30', '120', True, False),
    ('0.1', '0.2', '0.3', True, False),
])
def test_low_funds(funds, promofunds, threshold, include, low):
    balance = _rest.Balance(ACCOUNT, Decimal(funds), Decimal(promofunds))
    check = _rest.LowFunds(balance, _rest.parse_threshold(threshold), include_promofunds=include)
    assert check.low is low


def test_low_funds_message_gives_balance_and_threshold():
    balance = _rest.Balance(ACCOUNT, Decimal('12.34'), Decimal('5.00'))
    message = _rest.LowFunds(balance, Decimal('50.00')).message()
    assert '12.34' in message and '50.00' in message and ACCOUNT in message and 'top up' in message


# -- against a server ---------------------------------------------------------------------------


def test_balance_over_verified_tls_with_basic_auth(serve, ca_file):
    server = serve(json_reply(200, BALANCE))
    with client_for(server, ca_file) as client:
        balance = client.balance(ACCOUNT)
    assert (balance.funds, balance.promofunds) == (Decimal('125.50'), Decimal('10.00'))
    [request] = server.requests
    head = request.decode()
    assert head.startswith('GET /v1/account/balance/MAG000001 HTTP/1.1\r\n')
    expected = base64.b64encode(('%s:%s' % (USER, PASSWORD)).encode()).decode()
    assert 'Authorization: Basic %s\r\n' % expected in head


def test_json_numbers_are_read_exactly(serve, ca_file):
    body = b'{"funds": 0.1, "promofunds": 1e2}'
    server = serve((200, {'Content-Type': 'application/json'}, body))
    with client_for(server, ca_file) as client:
        balance = client.balance(ACCOUNT)
    assert balance.funds == Decimal('0.1') and balance.total == Decimal('100.1')
    assert balance.as_dict()['total'] == '100.1'


def test_wrong_password_is_explained_once(serve, ca_file):
    server = serve(json_reply(401, {'error': 'Wrong username, password or account'}))
    with client_for(server, ca_file, retries=3) as client:
        with pytest.raises(_tls.AuthenticationError) as caught:
            client.balance(ACCOUNT)
    message = str(caught.value)
    assert 'Wrong username, password or account' in message
    assert 'localhost:%d/v1/account/balance/MAG000001' % server.port in message
    assert PASSWORD not in message
    assert len(server.requests) == 1


def test_malformed_json_is_a_clear_error(serve, ca_file):
    server = serve((200, {'Content-Type': 'text/html'}, b'<html><body><h1>Service temporarily unavailable</h1></body></html>'))
    with client_for(server, ca_file) as client:
        with pytest.raises(_tls.ProtocolError) as caught:
            client.balance(ACCOUNT)
    message = str(caught.value)
    assert 'not JSON' in message and 'text/html' in message and 'Service temporarily unavailable' in message


def test_server_errors_are_retried_then_succeed(serve, ca_file):
    server = serve(json_reply(503, {'error': 'busy'}), json_reply(502, {}), json_reply(200, BALANCE))
    sleeps = Sleeps()
    with client_for(server, ca_file, sleep=sleeps) as client:
        assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]


def test_retries_are_bounded(serve, ca_file):
    server = serve(*[json_reply(503, {'error': 'Service temporarily unavailable'})] * 5)
    with client_for(server, ca_file, retries=2) as client:
        with pytest.raises(_rest.RestError) as caught:
            client.balance(ACCOUNT)
    assert caught.value.status == 503
    assert '503' in str(caught.value) and 'all 3 attempts' in str(caught.value) and 'Service temporarily unavailable' in str(caught.value)
    assert len(server.requests) == 3


def test_retry_after_is_honoured_up_to_a_limit(serve, ca_file):
    server = serve(json_reply(503, {}, **{'Retry-After': '3'}), json_reply(503, {}, **{'Retry-After': '3600'}), json_reply(200, BALANCE))
    sleeps = Sleeps()
    with client_for(server, ca_file, sleep=sleeps) as client:
        client.balance(ACCOUNT)
    assert sleeps == [3.0, _rest.MAX_RETRY_WAIT]


@pytest.mark.parametrize('status, error', [(404, 'Not found'), (400, 'No CDRS'), (501, 'Not implemented')])
def test_other_errors_are_not_retried(serve, ca_file, status, error):
    server = serve(json_reply(status, {'error': error}), json_reply(200, BALANCE))
    with client_for(server, ca_file) as client:
        with pytest.raises(_rest.RestError, match='HTTP %d: %s' % (status, error)):
            client.balance(ACCOUNT)
    assert len(server.requests) == 1


def test_redirects_are_not_followed(serve, ca_file):
    server = serve((302, {'Location': 'https://elsewhere.example/v1/'}, b''), json_reply(200, BALANCE))
    with client_for(server, ca_file) as client:
        with pytest.raises(_tls.ProtocolError, match='redirected to https://elsewhere.example/v1/'):
            client.balance(ACCOUNT)
    assert len(server.requests) == 1


def test_timeout_is_retried(serve, ca_file):
    server = serve(('hang', 2), json_reply(200, BALANCE))
    sleeps = Sleeps()
    with client_for(server, ca_file, timeout=0.5, sleep=sleeps) as client:
        assert client.balance(ACCOUNT).funds == Decimal('125.50')
    assert len(server.requests) == 2 and sleeps == [0.5]


def test_timeout_after_the_last_attempt(serve, ca_file):
    server = serve(('hang', 2), ('hang', 2))
    with client_for(server, ca_file, timeout=0.3, retries=1) as client:
        with pytest.raises(_tls.MagratheaTimeout, match='localhost:%d within 0.3s.*2 attempts' % server.port):
            client.balance(ACCOUNT)


def test_connection_refused_names_endpoint(ca_file):
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    listener.close()
    sleeps = Sleeps()
    client = _rest.RestClient('https://127.0.0.1:%d/v1/' % port, USER, PASSWORD, ca_path=ca_file, retries=1, sleep=sleeps)
    with pytest.raises(_tls.MagratheaConnectionError, match='cannot connect to 127.0.0.1:%d' % port):
        client.balance(ACCOUNT)
    assert sleeps == [0.5]


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
def test_pin_match(serve, ca_file, algorithm):
    server = serve(json_reply(200, BALANCE))
    pin = pki.fingerprints(server.certificate)[algorithm].lower()
    with client_for(server, ca_file, fingerprint=pin) as client:
        assert client.balance(ACCOUNT).funds == Decimal('125.50')


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
def test_pin_mismatch_sends_no_credentials(serve, ca_file, authority, algorithm):
    server = serve(json_reply(200, BALANCE))
    other, dummy = authority.issue()
    pinned = pki.fingerprints(other)[algorithm]
    with client_for(server, ca_file, fingerprint=pinned, retries=2) as client:
        with pytest.raises(_tls.PinMismatchError) as caught:
            client.balance(ACCOUNT)
    message = str(caught.value)
    assert pinned in message and pki.fingerprints(server.certificate)[algorithm] in message
    assert 'localhost:%d' % server.port in message and 'Nothing was sent' in message
    server.stop()
    assert server.requests == []
    assert all(b'Authorization' not in raw for raw in server.received)


def test_pin_is_checked_without_verification(serve, ca_file):
    server = serve(json_reply(200, BALANCE), signer=pki.CertificateAuthority('Someone Else'))
    with client_for(server, None, validate_certs=False, fingerprint='00' * 32) as client:
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
    with client_for(server, ca_file, retries=2) as client:
        with pytest.raises(_tls.TLSVerifyError, match=reason) as caught:
            client.balance(ACCOUNT)
    assert 'install the Magrathea root CA' in str(caught.value)
    server.stop()
    assert server.requests == []


def test_validate_certs_false_accepts_any_certificate(serve):
    server = serve(json_reply(200, BALANCE), signer=pki.CertificateAuthority('Someone Else'), hosts=('elsewhere.example',))
    with client_for(server, None, validate_certs=False) as client:
        assert client.balance(ACCOUNT).funds == Decimal('125.50')


def test_without_ca_path_the_system_store_is_used_not_certifi(serve, ca_file, monkeypatch):
    # OpenSSL's default verify paths (the system store) honour SSL_CERT_FILE: point them at the test root.
    monkeypatch.setenv('SSL_CERT_FILE', ca_file)
    monkeypatch.setenv('SSL_CERT_DIR', '/nonexistent')
    server = serve(json_reply(200, BALANCE))
    with client_for(server, None) as client:
        assert client.balance(ACCOUNT).funds == Decimal('125.50')
        # Exactly the system store's one root: nothing from requests' certifi bundle was added to the context.
        assert client.endpoint.context().cert_store_stats()['x509_ca'] == 1


def test_requests_ca_bundle_from_the_environment_is_ignored(serve, ca_file, monkeypatch):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', ca_file)
    monkeypatch.setenv('CURL_CA_BUNDLE', ca_file)
    monkeypatch.setenv('SSL_CERT_FILE', '/nonexistent')
    monkeypatch.setenv('SSL_CERT_DIR', '/nonexistent')
    server = serve(json_reply(200, BALANCE))
    with client_for(server, None, retries=0) as client:
        with pytest.raises(_tls.TLSVerifyError):
            client.balance(ACCOUNT)


def test_ca_path_is_the_only_trust(serve, ca_file):
    server = serve(json_reply(200, BALANCE))
    with client_for(server, ca_file) as client:
        client.balance(ACCOUNT)
        assert client.endpoint.context().cert_store_stats()['x509_ca'] == 1


def test_missing_credentials_are_explained():
    with pytest.raises(_tls.AuthenticationError, match='MAGRATHEA_REST_USERNAME'):
        _rest.RestClient('https://localhost/v1/', '', PASSWORD)


def test_against_the_sandbox_rest_server(authority, ca_file, tmp_path):
    # The sandbox imitation, with money as JSON numbers: what the integration tests rely on.
    from ansible_collections.magrathea.secure.sandbox.rest import RestServer

    certificate, key = authority.issue()
    context = pki.issued_server_context(certificate, key, str(tmp_path), 'sandbox')
    server = RestServer(ssl_context=context, username=USER, password=PASSWORD, account=ACCOUNT, funds='0.30',
                        promofunds='0.10', numeric_money=True).start()
    try:
        with _rest.RestClient(server.url, USER, PASSWORD, ca_path=ca_file, timeout=5) as client:
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
