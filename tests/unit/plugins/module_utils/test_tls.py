# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shared TLS layer against real TLS sockets on loopback with throwaway certificates."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _text, _tls
from ansible_collections.magrathea.secure.sandbox import pki

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


class OneShotTLSServer:
    """Accepts TLS connections on 127.0.0.1, sends a greeting and records every byte received."""

    def __init__(self, certificate, key, tmp_path):
        self.context = pki.issued_server_context(certificate, key, str(tmp_path))
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.received = b''
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        raw, dummy = self.listener.accept()
        raw.settimeout(5)
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(b'0 hello\n')
                while True:
                    data = tls.recv(4096)
                    if not data:
                        break
                    self.received += data
        except (ssl.SSLError, OSError):
            pass

    def join(self):
        self.thread.join(5)
        self.listener.close()


def serve(authority, tmp_path, **issue):
    certificate, key = authority.issue(**issue)
    return OneShotTLSServer(certificate, key, tmp_path), certificate


def test_good_certificate_connects_and_reads(authority, ca_file, tmp_path):
    server, dummy = serve(authority, tmp_path)
    tls = _tls.Endpoint('localhost', server.port, ca_path=ca_file, timeout=5).connect()
    assert tls.recv(100) == b'0 hello\n'
    assert tls.version() in ('TLSv1.2', 'TLSv1.3')
    tls.sendall(b'PING\n')
    tls.close()
    server.join()
    assert server.received == b'PING\n'


def test_ip_address_san_verifies(authority, ca_file, tmp_path):
    server, dummy = serve(authority, tmp_path)
    _tls.Endpoint('127.0.0.1', server.port, ca_path=ca_file, timeout=5).connect().close()
    server.join()


@pytest.mark.parametrize('issue, reason', [
    ({'not_before': NOW - 10 * DAY, 'not_after': NOW - DAY}, 'expired'),
    ({'hosts': ('billing.example',)}, "Hostname mismatch"),
])
def test_bad_server_certificate_is_refused(authority, ca_file, tmp_path, issue, reason):
    server, dummy = serve(authority, tmp_path, **issue)
    with pytest.raises(_tls.TLSVerifyError) as caught:
        _tls.Endpoint('localhost', server.port, ca_path=ca_file, timeout=5).connect()
    server.join()
    assert reason in str(caught.value)
    assert 'localhost:%d' % server.port in str(caught.value)
    assert server.received == b''


def test_unknown_ca_is_refused(ca_file, tmp_path):
    server, dummy = serve(pki.CertificateAuthority('Someone Else'), tmp_path)
    with pytest.raises(_tls.TLSVerifyError, match='unable to get local issuer certificate'):
        _tls.Endpoint('localhost', server.port, ca_path=ca_file, timeout=5).connect()
    server.join()


def test_system_store_does_not_trust_the_sandbox(authority, tmp_path):
    server, dummy = serve(authority, tmp_path)
    with pytest.raises(_tls.TLSVerifyError, match='install the Magrathea root CA'):
        _tls.Endpoint('localhost', server.port, timeout=5).connect()
    server.join()


def test_validate_certs_false_connects_to_anything(tmp_path):
    server, dummy = serve(pki.CertificateAuthority('Someone Else'), tmp_path, hosts=('elsewhere.example',))
    endpoint = _tls.Endpoint('localhost', server.port, validate_certs=False, timeout=5)
    assert endpoint.connect().recv(100) == b'0 hello\n'
    server.join()


def pin_forms(certificate):
    prints = pki.fingerprints(certificate)
    sha1, sha256 = prints['sha1'], prints['sha256']
    return [sha1, sha1.lower(), sha1.replace(':', ''), sha256, sha256.replace(':', '').lower(), 'sha256:' + sha256]


def test_pin_match_in_every_spelling(authority, ca_file, tmp_path):
    certificate, key = authority.issue()
    for form in pin_forms(certificate):
        server = OneShotTLSServer(certificate, key, tmp_path)
        tls = _tls.Endpoint('localhost', server.port, ca_path=ca_file, fingerprint=form, timeout=5).connect()
        assert tls.recv(100) == b'0 hello\n'
        tls.sendall(b'AUTH user secret\n')
        tls.close()
        server.join()
        assert server.received == b'AUTH user secret\n'


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
def test_pin_mismatch_sends_nothing(authority, ca_file, tmp_path, algorithm):
    server, dummy = serve(authority, tmp_path)
    other, dummy_key = authority.issue()
    pinned = pki.fingerprints(other)[algorithm]
    with pytest.raises(_tls.PinMismatchError) as caught:
        _tls.Endpoint('localhost', server.port, ca_path=ca_file, fingerprint=pinned, timeout=5).connect()
    server.join()
    message = str(caught.value)
    assert server.received == b''
    assert pinned in message and 'localhost:%d' % server.port in message and 'Nothing was sent' in message


def test_pin_is_checked_even_without_verification(tmp_path):
    server, dummy = serve(pki.CertificateAuthority('Someone Else'), tmp_path)
    with pytest.raises(_tls.PinMismatchError):
        _tls.Endpoint('localhost', server.port, validate_certs=False, fingerprint='00' * 32, timeout=5).connect()
    server.join()
    assert server.received == b''


@pytest.mark.parametrize('value, expected', [
    ('65:c6:5c:b2:88:23:6d:a7:74:77:00:55:c3:51:8f:20:e0:36:29:d1', ('sha1', '65c65cb288236da774770055c3518f20e03629d1')),
    ('65C65CB288236DA774770055C3518F20E03629D1', ('sha1', '65c65cb288236da774770055c3518f20e03629d1')),
    ('SHA256:' + 'AB' * 32, ('sha256', 'ab' * 32)),
])
def test_normalize_fingerprint(value, expected):
    assert _tls.normalize_fingerprint(value) == expected


@pytest.mark.parametrize('value, message', [('65:c6', 'has 4 hex digits'), ('zz' * 20, 'not hexadecimal'), ('', 'not hexadecimal')])
def test_bad_fingerprint_is_explained(value, message):
    with pytest.raises(ValueError, match=message):
        _tls.normalize_fingerprint(value)


def test_connection_refused_names_endpoint():
    listener = socket.create_server(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(_tls.MagratheaConnectionError, match='127.0.0.1:%d' % port):
        _tls.Endpoint('127.0.0.1', port, timeout=2).connect()


def test_silent_server_times_out(ca_file):
    listener = socket.create_server(('127.0.0.1', 0))
    try:
        endpoint = _tls.Endpoint('localhost', listener.getsockname()[1], ca_path=ca_file, timeout=0.3)
        with pytest.raises(_tls.MagratheaTimeout, match='timed out'):
            endpoint.connect()
    finally:
        listener.close()


def test_missing_ca_file_is_explained(tmp_path):
    with pytest.raises(_tls.TLSVerifyError, match='does not exist'):
        _tls.Endpoint('localhost', 1, ca_path=str(tmp_path / 'nope.pem')).context()


def test_pin_list_accepts_the_next_certificate(authority, ca_file, tmp_path):
    server, certificate = serve(authority, tmp_path)
    other, dummy_key = authority.issue()
    pins = [pki.fingerprints(other)['sha1'], pki.fingerprints(certificate)['sha256']]
    tls = _tls.Endpoint('localhost', server.port, ca_path=ca_file, fingerprint=pins, timeout=5).connect()
    tls.close()
    server.join()


def test_pin_list_mismatch_names_every_pin_and_sends_nothing(authority, ca_file, tmp_path):
    server, dummy = serve(authority, tmp_path)
    first, dummy_key = authority.issue()
    second, dummy_key = authority.issue()
    pins = [pki.fingerprints(first)['sha1'], pki.fingerprints(second)['sha256']]
    with pytest.raises(_tls.PinMismatchError) as caught:
        _tls.Endpoint('localhost', server.port, ca_path=ca_file, fingerprint=pins, timeout=5).connect()
    server.join()
    assert server.received == b''
    assert pins[0] in str(caught.value) and pins[1] in str(caught.value)


class TricklingServer:
    """A TLS server that sends its greeting one byte at a time, ``interval`` seconds apart, for ever."""

    def __init__(self, authority, tmp_path, interval=0.1):
        certificate, key = authority.issue()
        self.context = pki.issued_server_context(certificate, key, str(tmp_path))
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.interval = interval
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        raw, dummy = self.listener.accept()
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                while not self.stop.wait(self.interval):
                    tls.sendall(b'0')
        except (ssl.SSLError, OSError):
            pass

    def close(self):
        self.stop.set()
        self.listener.close()


def test_deadline_ends_a_reply_that_trickles(authority, ca_file, tmp_path):
    server = TricklingServer(authority, tmp_path)
    clock = __import__('time').monotonic
    try:
        tls = _tls.Endpoint('localhost', server.port, ca_path=ca_file, timeout=5).connect(deadline=_tls.Deadline(0.8))
        started = clock()
        received = b''
        with pytest.raises(socket.timeout, match='did not end within 0.8s'):
            while True:
                received += tls.recv(1)
        assert 0.3 < clock() - started < 2 and received.startswith(b'0')
        tls.close()
    finally:
        server.close()


def test_deadline_can_be_renewed_per_exchange(authority, ca_file, tmp_path):
    server = TricklingServer(authority, tmp_path, interval=0.05)
    try:
        tls = _tls.Endpoint('localhost', server.port, ca_path=ca_file, timeout=5).connect()
        assert tls.deadline is None
        session = _tls.Deadline(30)
        tls.deadline = session.within(0.3)
        with pytest.raises(socket.timeout):
            while True:
                tls.recv(1)
        tls.deadline = session.within(0.3)
        assert tls.recv(1) == b'0'
        tls.close()
    finally:
        server.close()


def test_inner_deadline_never_outlasts_the_outer():
    outer = _tls.Deadline(1)
    inner = outer.within(60)
    assert inner.at == outer.at and inner.remaining() <= 1


@pytest.mark.parametrize('timeout', [0, -1, 'soon', float('nan'), float('inf')])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(ValueError, match='timeout must be'):
        _tls.Endpoint('localhost', 777, timeout=timeout)


@pytest.mark.parametrize('host', ['bad host', 'evil.example\n', 'caf\u00e9.example', '', '-x', 'a/b'])
def test_host_must_be_an_ascii_name(host):
    with pytest.raises(ValueError, match='is not a host name'):
        _tls.Endpoint(host, 777)


@pytest.mark.parametrize('port', [0, 65536, '77a', True])
def test_port_must_be_in_range(port):
    with pytest.raises(ValueError, match='port'):
        _tls.Endpoint('localhost', port)


@pytest.mark.parametrize('username, password, message', [
    ('user\n', 'pw', 'username .* holds a line break'),
    ('Zo\u00eb', 'pw', 'username .* outside ASCII'),
    ('user', 'p\u00e4ss', 'password .* outside ASCII'),
    ('user', 'pw\r', 'password .* holds a line break'),
])
def test_credentials_are_checked_and_the_password_never_shown(username, password, message):
    with pytest.raises(ValueError, match=message) as caught:
        _tls.check_credentials(username, password, 'NTSAPI')
    assert password not in str(caught.value)


def test_url_with_credentials_is_never_repeated():
    with pytest.raises(ValueError) as caught:
        _tls.split_https_url('https://user:s3cret@rest.example/v1/')
    assert 's3cret' not in str(caught.value) and 'holds credentials' in str(caught.value)


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on loopback that records the requests it saw."""

    def __init__(self, answer=None):
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.requests = []
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, dummy = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client):
        head = b''
        while b'\r\n\r\n' not in head:
            head += client.recv(1024)
        self.requests.append(head.decode('latin-1'))
        if self.answer:
            client.sendall(self.answer)
            client.close()
            return
        target = head.split()[1].decode()
        host, port = target.rsplit(':', 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')

        def pump(source, sink):
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    sink.sendall(data)
            except OSError:
                pass
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self):
        self.listener.close()


def test_https_through_a_proxy_tunnel(authority, ca_file, tmp_path):
    server, dummy = serve(authority, tmp_path)
    proxy = ConnectProxy()
    try:
        endpoint = _tls.Endpoint('localhost', server.port, ca_path=ca_file, timeout=5,
                                 proxy='http://tunnel:pa%%3Ass@127.0.0.1:%d' % proxy.port)
        tls = endpoint.connect()
        assert tls.recv(100) == b'0 hello\n'
        tls.close()
        server.join()
        request = proxy.requests[0]
        assert request.startswith('CONNECT localhost:%d HTTP/1.1\r\n' % server.port)
        assert 'Proxy-Authorization: Basic dHVubmVsOnBhOnNz\r\n' in request
    finally:
        proxy.close()


def test_proxy_refusal_is_explained_without_its_password():
    proxy = ConnectProxy(answer=b'HTTP/1.1 407 Proxy Authentication Required\r\n\r\n')
    try:
        endpoint = _tls.Endpoint('rest.example', 8443, timeout=5, proxy='http://u:hunter2@127.0.0.1:%d' % proxy.port)
        with pytest.raises(_tls.MagratheaConnectionError) as caught:
            endpoint.connect()
        assert '407' in str(caught.value) and 'needs credentials' in str(caught.value)
        assert 'hunter2' not in str(caught.value)
    finally:
        proxy.close()


@pytest.mark.parametrize('environment, host, expected', [
    ({'https_proxy': 'http://proxy.example:3128'}, 'rest.example', 'http://proxy.example:3128'),
    ({'https_proxy': 'http://proxy.example:3128', 'no_proxy': 'rest.example'}, 'rest.example', None),
    ({'https_proxy': 'http://proxy.example:3128', 'no_proxy': '.example'}, 'rest.example', None),
    ({}, 'rest.example', None),
])
def test_proxy_from_the_environment(monkeypatch, environment, host, expected):
    for name in ('https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY', 'http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert _tls.proxy_for(host) == expected
    assert _tls.proxy_for(host, use_proxy=False) is None
    assert _tls.proxy_for(host, proxy='http://explicit:1') == 'http://explicit:1'


@pytest.mark.parametrize('url', [
    'https://u:s3c/ret@rest.example/v1/',
    'https:/u:s3cret@rest.example/',
    'https://u:s3c?ret@rest.example/v1/',
    'u:s3cret@rest.example/v1/',
    'https://u:s3cret@rest.example:99999/v1/',
    'HTTP://u:s3cret@rest.example/',
])
def test_a_url_with_credentials_is_never_repeated_however_it_parses(url):
    with pytest.raises(ValueError) as caught:
        _tls.split_https_url(url)
    assert 's3c' not in str(caught.value) and 'holds credentials' in str(caught.value)
    secrets = _tls.url_secrets(url)
    assert url in secrets and 's3c' not in _text.redact('got ' + url, secrets)


def test_url_secrets_of_a_proxy():
    secrets = _tls.url_secrets('http://tunnel:pa%3Ass@proxy.example:3128')
    assert 'pa%3Ass' in secrets and 'pa:ss' in secrets and 'tunnel' not in secrets
    assert _tls.url_secrets('http://proxy.example:3128') == []
    assert _tls.url_secrets(None) == []
