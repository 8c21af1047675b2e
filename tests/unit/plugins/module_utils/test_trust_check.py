# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""trust_check against real TLS, explicit FTPS and HTTPS servers on loopback, per store."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _trust_check
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import TrustStore, TrustStoreError
from ansible_collections.magrathea.secure.sandbox import pki


class Server:
    """Serves every connection until closed: plain TLS, explicit FTPS (AUTH TLS) or HTTPS."""

    def __init__(self, certificate, key, tmp_path, protocol='tls', refuse_auth=False):
        self.context = pki.issued_server_context(certificate, key, str(tmp_path), protocol)
        self.protocol = protocol
        self.refuse_auth = refuse_auth
        self.received = []
        self.connections = 0
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                raw, dummy = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(5)
        try:
            if self.protocol == 'ftps':
                raw.sendall(b'220-Magrathea test FTP\r\n220 ready\r\n')
                self.received.append(raw.recv(100))
                if self.refuse_auth:
                    raw.sendall(b'500 AUTH not understood\r\n')
                    return
                raw.sendall(b'234 AUTH TLS successful\r\n')
            with self.context.wrap_socket(raw, server_side=True) as tls:
                data = tls.recv(4096)
                self.received.append(data)
                if self.protocol == 'https':
                    tls.sendall(b'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n')
        except (ssl.SSLError, OSError):
            pass
        finally:
            raw.close()

    def close(self):
        self.listener.close()


class AnchorStore(TrustStore):
    kind = 'test'

    def __init__(self, path, ders, error=None):
        super().__init__(path)
        self.ders = ders
        self.error = error

    def anchors(self):
        if self.error:
            raise TrustStoreError(self.error)
        return self.ders


@pytest.fixture(name='authority', scope='module')
def authority_fixture():
    return pki.CertificateAuthority('Magrathea Check Root')


def der(certificate):
    return certificate.public_bytes(pki.serialization.Encoding.DER)


@pytest.fixture(name='servers')
def servers_fixture(authority, tmp_path):
    certificate, key = authority.issue()
    made = dict((protocol, Server(certificate, key, tmp_path, protocol)) for protocol in ('tls', 'ftps', 'https'))
    made['certificate'] = certificate
    yield made
    for protocol in ('tls', 'ftps', 'https'):
        made[protocol].close()


def stores(authority):
    return [AnchorStore('/trusting', [der(pki.CertificateAuthority('Unrelated').certificate), der(authority.certificate)]),
            AnchorStore('/other', [der(pki.CertificateAuthority('Other Root').certificate)]),
            AnchorStore('/empty', []),
            AnchorStore('/unreadable', [], error='cannot read /unreadable: Permission denied')]


@pytest.mark.parametrize('protocol', ['tls', 'ftps', 'https'])
def test_each_store_is_checked_on_its_own(authority, servers, protocol):
    target = _trust_check.Target('localhost', servers[protocol].port, protocol)
    endpoints, results = _trust_check.check([target], stores(authority), timeout=5)
    assert endpoints[0]['sha256'] == pki.fingerprints(servers['certificate'])['sha256']
    assert endpoints[0]['fingerprint_matches'] is None and 'error' not in endpoints[0]
    by_store = dict((row['store'], row) for row in results)
    assert by_store['/trusting']['trusted'] is True and 'error' not in by_store['/trusting']
    assert by_store['/other']['trusted'] is False and 'unable to get local issuer certificate' in by_store['/other']['error']
    assert by_store['/empty']['error'] == '/empty trusts no CA certificate'
    assert 'Permission denied' in by_store['/unreadable']['error']
    if protocol == 'ftps':
        assert b'AUTH TLS\r\n' in servers['ftps'].received and b'QUIT\r\n' in servers['ftps'].received
    if protocol == 'https':
        assert endpoints[0]['http_status'] == 204
        assert any(data.startswith(b'GET / HTTP/1.1\r\nHost: localhost\r\n') for data in servers['https'].received)


def test_host_name_is_checked(authority, servers):
    endpoints, results = _trust_check.check([_trust_check.Target('127.0.0.2', servers['tls'].port)], stores(authority)[:1], timeout=5)
    assert results[0]['trusted'] is False


def test_pin_is_checked_apart_from_trust(authority, servers):
    prints = pki.fingerprints(servers['certificate'])
    good = _trust_check.Target('localhost', servers['tls'].port, fingerprint=prints['sha1'])
    wrong_pin = 'AA:' * 31 + 'AA'
    bad = _trust_check.Target('localhost', servers['ftps'].port, 'ftps', fingerprint=wrong_pin, name='cdr')
    endpoints, results = _trust_check.check([good, bad], stores(authority)[:1], timeout=5)
    assert endpoints[0]['fingerprint_matches'] is True
    assert endpoints[1]['fingerprint_matches'] is False and 'does not match pinned SHA256' in endpoints[1]['error']
    assert prints['sha256'] in endpoints[1]['error']
    assert [row['trusted'] for row in results] == [True, True]


def test_unreachable_endpoint(authority):
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    listener.close()
    endpoints, results = _trust_check.check([_trust_check.Target('localhost', port)], stores(authority)[:1], timeout=5)
    assert 'cannot connect to localhost:%d' % port in endpoints[0]['error']
    assert results[0]['trusted'] is False and 'cannot connect' in results[0]['error']


def test_ftps_server_without_auth_tls(authority, tmp_path):
    certificate, key = authority.issue()
    server = Server(certificate, key, tmp_path, 'ftps', refuse_auth=True)
    try:
        endpoints, dummy = _trust_check.check([_trust_check.Target('localhost', server.port, 'ftps')], stores(authority)[:1], timeout=5)
    finally:
        server.close()
    assert 'refused AUTH TLS' in endpoints[0]['error'] and 'does not offer explicit FTPS' in endpoints[0]['error']


@pytest.mark.parametrize('item, expected', [
    ({'url': 'https://restapi.magrathea.net:8443/v1/'}, ('restapi.magrathea.net', 8443, 'https', '/v1/')),
    ({'url': 'https://portal.magrathea.net/portal/'}, ('portal.magrathea.net', 443, 'https', '/portal/')),
    ({'url': 'https://portal.magrathea.net/status.html'}, ('portal.magrathea.net', 443, 'https', '/status.html')),
    ({'host': 'cdr.magrathea-telecom.co.uk', 'protocol': 'ftps'}, ('cdr.magrathea-telecom.co.uk', 21, 'ftps', '/')),
    ({'host': 'secure.magrathea-telecom.co.uk', 'port': 777}, ('secure.magrathea-telecom.co.uk', 777, 'tls', '/')),
])
def test_targets_from_options(item, expected):
    target = _trust_check.Target.from_option(item)
    assert (target.host, target.port, target.protocol, target.path) == expected


@pytest.mark.parametrize('item, message', [
    ({'url': 'ftp://cdr.example/'}, 'must start with https://'),
    ({'url': 'https://user:secret@portal.example/'}, 'holds credentials'),
    ({'url': 'https://portal.example:99999/'}, 'invalid port'),
    ({'host': 'secure.magrathea-telecom.co.uk'}, 'needs a port'),
    ({'host': 'x', 'port': 1, 'fingerprint': 'zz'}, 'not hexadecimal'),
    ({'host': 'bad host', 'port': 1}, 'is not a host name'),
    ({'host': 'x\n', 'port': 1}, 'is not a host name'),
    ({'host': 'x', 'port': 70000}, 'port .* must be a number from 1 to 65535'),
])
def test_bad_targets(item, message):
    with pytest.raises(ValueError, match=message):
        _trust_check.Target.from_option(item)


def test_a_bad_proxy_is_refused_before_any_connection_without_its_password():
    with pytest.raises(ValueError, match='proxy must be an http://') as caught:
        _trust_check.Target.from_option({'url': 'https://portal.example/'}, proxy='ftp://u:hunter2@proxy.example/')
    assert 'hunter2' not in str(caught.value)


def run_module(capsys, args):
    import json
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.magrathea.secure.plugins.modules import trust_check
    with patch_module_args(args):
        with pytest.raises(SystemExit) as caught:
            trust_check.main()
    return caught.value.code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args, message', [
    ({'timeout': 0}, 'timeout must be more than 0 seconds'),
    ({'timeout': -1}, 'timeout must be more than 0 seconds'),
    ({'proxy': 'http://u:hunter2@proxy.example:99999'}, 'invalid port'),
    ({'endpoints': [{'url': 'https://u:s3c/ret@portal.example/'}]}, 'holds credentials'),
])
def test_module_refuses_bad_options_without_a_traceback_or_a_secret(capsys, args, message):
    args = dict({'endpoints': [{'url': 'https://portal.example/'}], 'stores': ['system']}, **args)
    code, result = run_module(capsys, args)
    text = json.dumps(result)
    assert code == 1 and message in result['msg'] and 'Traceback' not in text
    assert 'hunter2' not in text and 's3c' not in text


def test_proxy_password_is_in_no_result(authority, servers, capsys):
    from ansible_collections.magrathea.secure.tests.unit.plugins.module_utils.test_tls import ConnectProxy
    proxy = ConnectProxy()
    try:
        code, result = run_module(capsys, {
            'endpoints': [{'url': 'https://localhost:%d/' % servers['https'].port}], 'stores': ['system'],
            'proxy': 'http://tunnel:hunter2@127.0.0.1:%d' % proxy.port, 'required': []})
    finally:
        proxy.close()
    assert proxy.requests and 'hunter2' not in json.dumps(result)


class TricklingFtpServer:
    """Greets an FTP client one byte every 0.2 s, never ending the line."""

    def __init__(self):
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            raw, dummy = self.listener.accept()
            while not self.stop.wait(0.2):
                raw.sendall(b'2')
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.listener.close()


def test_an_ftps_greeting_that_trickles_meets_the_deadline(authority):
    server = TricklingFtpServer()
    outcome = []
    try:
        worker = threading.Thread(target=lambda: outcome.append(_trust_check.check(
            [_trust_check.Target('localhost', server.port, 'ftps')], stores(authority)[:1], timeout=1)), daemon=True)
        worker.start()
        worker.join(30)  # a bound on a hang, not a speed target: without a deadline the greeting never ends
        assert outcome, 'trust_check was still reading the greeting after 30 s'
        endpoints, results = outcome[0]
        assert 'did not end within 1s' in endpoints[0]['error'] or 'within 1' in endpoints[0]['error']
    finally:
        server.close()


def test_required_and_table():
    check = _trust_check.StoreCheck.__new__(_trust_check.StoreCheck)
    check.kind, check.path = 'java', '/opt/app/trust.p12'
    assert _trust_check.is_required(check, ['all'])
    assert _trust_check.is_required(check, ['java'])
    assert _trust_check.is_required(check, ['/opt/app/trust.p12'])
    assert not _trust_check.is_required(check, ['system', 'nss'])
    text = _trust_check.table([dict(name='ntsapi', protocol='tls', store='/etc/ssl/certs/ca-certificates.crt', error='did not verify; hint')])
    assert text.splitlines()[1].split() == ['ntsapi', 'tls', '/etc/ssl/certs/ca-certificates.crt', 'did', 'not', 'verify']


def test_stores_with_the_same_certificates_share_one_handshake(authority, servers):
    twins = [AnchorStore('/one', [der(authority.certificate)]), AnchorStore('/two', [der(authority.certificate)])]
    endpoints, results = _trust_check.check([_trust_check.Target('localhost', servers['tls'].port)], twins, timeout=5)
    assert [row['trusted'] for row in results] == [True, True]
    assert servers['tls'].connections == 2  # the pin probe and one verified handshake for both stores


def test_a_list_of_pins_matches_any_of_them(authority, servers):
    prints = pki.fingerprints(servers['certificate'])
    rotated = _trust_check.Target.from_option({'host': 'localhost', 'port': servers['tls'].port,
                                               'fingerprint': ['AA:' * 31 + 'AA', prints['sha256']]})
    stale = _trust_check.Target.from_option({'host': 'localhost', 'port': servers['tls'].port, 'fingerprint': ['AA:' * 31 + 'AA', 'BB' * 20]})
    endpoints, dummy = _trust_check.check([rotated, stale], stores(authority)[:1], timeout=5)
    assert endpoints[0]['fingerprint_matches'] is True and 'error' not in endpoints[0]
    assert endpoints[1]['fingerprint_matches'] is False
    assert 'SHA256 AA:AA' in endpoints[1]['error'] and 'SHA1 BB:BB' in endpoints[1]['error'] and prints['sha256'] in endpoints[1]['error']


def test_days_until_the_server_certificate_expires(authority, tmp_path):
    soon, key = authority.issue(not_after=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10, hours=1))
    server = Server(soon, key, tmp_path, 'tls')
    try:
        endpoints, dummy = _trust_check.check([_trust_check.Target('localhost', server.port, name='NTSAPI')], stores(authority)[:1], timeout=5)
    finally:
        server.close()
    assert endpoints[0]['days_left'] == 10
    assert endpoints[0]['not_after'] == soon.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ')
    warnings = _trust_check.expiry_warnings(endpoints, 30)
    assert len(warnings) == 1 and 'NTSAPI' in warnings[0] and 'expires in 10 days' in warnings[0]
    assert _trust_check.expiry_warnings(endpoints, 5) == []


def test_expect_untrusted_after_a_removal(authority, servers):
    target = _trust_check.Target('localhost', servers['tls'].port)
    endpoints, results = _trust_check.check([target], stores(authority), timeout=5)
    untrusted = _trust_check.problems(endpoints, results, expect='untrusted')
    assert sorted(row['store'] for row in untrusted) == ['/trusting', '/unreadable']
    by_store = dict((row['store'], row) for row in untrusted)
    assert 'still trusts' in by_store['/trusting']['error']
    trusted = _trust_check.problems(endpoints, results, expect='trusted')
    assert sorted(row['store'] for row in trusted) == ['/empty', '/other', '/unreadable']


def test_expect_untrusted_is_not_proven_by_an_endpoint_that_is_down(authority):
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    listener.close()
    endpoints, results = _trust_check.check([_trust_check.Target('localhost', port)], stores(authority)[:2], timeout=5)
    rows = _trust_check.problems(endpoints, results, expect='untrusted')
    assert len(rows) == 1 and 'cannot connect' in rows[0]['error'] and 'store' not in rows[0]


def test_https_endpoints_go_through_the_environments_proxy(authority, servers, monkeypatch):
    from ansible_collections.magrathea.secure.tests.unit.plugins.module_utils.test_tls import ConnectProxy
    proxy = ConnectProxy()
    try:
        for name in ('https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv('https_proxy', 'http://127.0.0.1:%d' % proxy.port)
        https = _trust_check.Target.from_option({'url': 'https://localhost:%d/' % servers['https'].port})
        tls = _trust_check.Target.from_option({'host': 'localhost', 'port': servers['tls'].port})
        endpoints, results = _trust_check.check([https, tls], stores(authority)[:1], timeout=5)
        assert [row['trusted'] for row in results] == [True, True]
        assert endpoints[0]['http_status'] == 204
        tunnel = 'CONNECT localhost:%d ' % servers['https'].port
        assert len(proxy.requests) == 2 and all(request.startswith(tunnel) for request in proxy.requests)  # pin probe, verified handshake
        monkeypatch.setenv('no_proxy', 'localhost')
        _trust_check.check([_trust_check.Target.from_option({'url': 'https://localhost:%d/' % servers['https'].port})], stores(authority)[:1],
                           timeout=5)
        assert len(proxy.requests) == 2
        explicit = _trust_check.Target.from_option({'url': 'https://localhost:%d/' % servers['https'].port},
                                                   proxy='http://127.0.0.1:%d' % proxy.port)
        _trust_check.check([explicit], stores(authority)[:1], timeout=5)
        assert len(proxy.requests) == 4
        direct = _trust_check.Target.from_option({'url': 'https://localhost:%d/' % servers['https'].port},
                                                 proxy='http://127.0.0.1:%d' % proxy.port, use_proxy=False)
        _trust_check.check([direct], stores(authority)[:1], timeout=5)
        assert len(proxy.requests) == 4
    finally:
        proxy.close()


def module_documentation(name):
    import importlib
    import yaml
    module = importlib.import_module('ansible_collections.magrathea.secure.plugins.modules.' + name)
    return yaml.safe_load(module.DOCUMENTATION), yaml.safe_load(module.RETURN)


def test_every_returned_key_is_documented(authority, servers):
    dummy, returned = module_documentation('trust_check')
    target = _trust_check.Target('localhost', servers['https'].port, 'https', fingerprint='AA' * 32)
    endpoints, results = _trust_check.check([target], stores(authority), timeout=5)
    assert set().union(*(set(row) for row in results)) <= set(returned['results']['contains'])
    assert set().union(*(set(row) for row in endpoints)) <= set(returned['endpoints']['contains'])


@pytest.mark.parametrize('name', ['ca_trust', 'java_trust', 'browser_trust', 'trust_check'])
def test_requirements_render_as_one_list(name):
    """ansible-doc joins the requirements with ', ': an item that ends with a full stop reads as '...)., Root privileges'."""
    documentation, dummy = module_documentation(name)
    for requirement in documentation.get('requirements', []):
        assert not requirement.rstrip().endswith('.'), requirement
