# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shared TLS layer against real TLS sockets on loopback with throwaway certificates."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _tls
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
