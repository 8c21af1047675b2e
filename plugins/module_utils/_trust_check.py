# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Whether each trust store of a host trusts an endpoint, checked through the shared TLS layer.

Private to this collection: not for use by other collections.

Owns the endpoint list (host/port/protocol or an https URL), the FTPS
``AUTH TLS`` upgrade before the handshake, the separate pin check of the
server certificate, and one verified handshake per endpoint and store,
with the store's CA certificates as the only anchors (Endpoint from _tls
with a temporary CA file). Stores come from the store files' discover().
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import pem_text
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    Endpoint, MagratheaError, MagratheaTimeout, ProtocolError, format_fingerprint, normalize_fingerprint, split_https_url,
)
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import TrustStoreError

PROTOCOLS = ('tls', 'ftps', 'https')
DEFAULT_PORTS = {'tls': None, 'ftps': 21, 'https': 443}


class Target:
    """One endpoint to check."""

    def __init__(self, host, port, protocol='tls', fingerprint=None, path='/', name=None):
        if protocol not in PROTOCOLS:
            raise ValueError('protocol %r of %s is not one of %s' % (protocol, host, ', '.join(PROTOCOLS)))
        if not host:
            raise ValueError('an endpoint needs host (or url)')
        port = port or DEFAULT_PORTS[protocol]
        if not port:
            raise ValueError('endpoint %s needs a port for protocol %s' % (host, protocol))
        self.host = host
        self.port = int(port)
        self.protocol = protocol
        self.fingerprint = fingerprint
        if fingerprint:
            normalize_fingerprint(fingerprint)  # refuse a malformed pin before connecting anywhere
        self.path = path or '/'
        self.name = name or '%s:%d' % (host, self.port)

    def describe(self):
        return '%s:%d' % (self.host, self.port)

    @classmethod
    def from_option(cls, item):
        """A Target from one element of the ``endpoints`` option: host/port/protocol or url."""
        if item.get('url'):
            host, port, path = split_https_url(item['url'], service='the endpoint')
            return cls(host, port, 'https', item.get('fingerprint'), path, item.get('name') or item['url'])
        return cls(item.get('host'), item.get('port'), item.get('protocol') or 'tls', item.get('fingerprint'), name=item.get('name'))


def _ftp_reply(sock, endpoint):
    """(code, text) of one FTP reply, multi-line replies included."""
    data = b''
    while True:
        try:
            chunk = sock.recv(1024)
        except socket.timeout:
            raise MagratheaTimeout('no FTP reply from %s within %ss' % (endpoint.describe(), endpoint.timeout)) from None
        if not chunk:
            raise ProtocolError('%s closed the connection before its FTP reply; check that the port speaks FTP' % endpoint.describe())
        data += chunk
        lines = data.split(b'\n')
        for line in lines[:-1]:
            text = line.decode('utf-8', 'replace').rstrip('\r')
            if len(text) >= 4 and text[:3].isdigit() and text[3] == ' ':
                return int(text[:3]), text
        if len(data) > 65536:
            raise ProtocolError('%s sent more than 64 KiB without an FTP reply line' % endpoint.describe())


def _upgrade_ftps(sock, endpoint):
    """Explicit FTPS: read the greeting, ask AUTH TLS, expect 234; the caller then runs the handshake."""
    code, text = _ftp_reply(sock, endpoint)
    if code != 220:
        raise ProtocolError('%s greeted with %r instead of 220; check that the port speaks FTP' % (endpoint.describe(), text))
    sock.sendall(b'AUTH TLS\r\n')
    code, text = _ftp_reply(sock, endpoint)
    if code != 234:
        raise ProtocolError('%s refused AUTH TLS (%r): the server does not offer explicit FTPS' % (endpoint.describe(), text))


def handshake(target, ca_path=None, validate_certs=True, timeout=10.0, context=None):
    """One verified handshake with ``target`` trusting only ``ca_path``; returns the peer's fingerprints.

    ``context``: an SSLContext already built for the same ``ca_path`` (loading a store of 150 CAs costs tens of ms).
    """
    endpoint = Endpoint(target.host, target.port, ca_path=ca_path, validate_certs=validate_certs, timeout=timeout,
                        context=context)
    if target.protocol == 'ftps':
        sock = endpoint.open_tcp()
        try:
            _upgrade_ftps(sock, endpoint)
        except MagratheaError:
            sock.close()
            raise
        tls = endpoint.wrap(sock, check_pin=False)
    else:
        tls = endpoint.connect()
    try:
        info = endpoint.peer_fingerprints(tls)
        if target.protocol == 'https':
            request = 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: magrathea.secure trust_check\r\n\r\n' % (target.path, target.host)
            tls.sendall(request.encode('ascii'))
            status = tls.recv(1024).split(b'\r\n', 1)[0].decode('latin-1')
            if status.startswith('HTTP/'):
                info['http_status'] = int(status.split()[1]) if len(status.split()) > 1 and status.split()[1].isdigit() else None
        elif target.protocol == 'ftps':
            tls.sendall(b'QUIT\r\n')
    except (OSError, ValueError):
        pass
    finally:
        tls.close()
    return info


class StoreCheck:
    """One store's CA certificates as a temporary CA file for Endpoint."""

    def __init__(self, store, directory):
        self.store = store
        self.path = store.info().get('bundle') or store.describe()
        self.kind = store.kind
        self.error = None
        self.ca_file = None
        self.key = None
        try:
            ders = store.anchors()
        except TrustStoreError as exc:
            self.error = str(exc)
            return
        if not ders:
            self.error = '%s trusts no CA certificate' % self.path
            return
        # Stores holding the same certificates give the same answer: one handshake serves them all.
        self.key = hashlib.sha256(b''.join(sorted(hashlib.sha256(der).digest() for der in ders))).hexdigest()
        self.ca_file = os.path.join(directory, '%s.pem' % self.key)
        with open(self.ca_file, 'w') as handle:
            handle.write(''.join(pem_text(der) for der in ders))


def is_required(store_check, required):
    return 'all' in required or store_check.kind in required or store_check.path in required


def check(targets, stores, required=('all',), timeout=10.0):
    """(endpoint results, store results) for every target against every store."""
    directory = tempfile.mkdtemp(prefix='magrathea-trust-check-')
    try:
        checks = [StoreCheck(store, directory) for store in stores]
        contexts = {}
        endpoints, results = [], []
        for target in targets:
            endpoint_result = dict(name=target.name, endpoint=target.describe(), protocol=target.protocol, fingerprint_matches=None)
            try:
                peer = handshake(target, validate_certs=False, timeout=timeout)
                endpoint_result.update(peer)
                if target.fingerprint:
                    algorithm, expected = normalize_fingerprint(target.fingerprint)
                    endpoint_result['fingerprint_matches'] = peer[algorithm].replace(':', '').lower() == expected
                    if not endpoint_result['fingerprint_matches']:
                        endpoint_result['error'] = ('certificate for %s does not match pinned %s %s; got %s'
                                                    % (target.describe(), algorithm.upper(), format_fingerprint(expected), peer[algorithm]))
            except MagratheaError as exc:
                endpoint_result['error'] = str(exc)
            endpoints.append(endpoint_result)
            verdicts = {}
            for store_check in checks:
                result = dict(name=target.name, endpoint=target.describe(), protocol=target.protocol, store=store_check.path,
                              kind=store_check.kind, required=is_required(store_check, required), trusted=False)
                if endpoint_result.get('sha256') is None:
                    result['error'] = endpoint_result.get('error')
                elif store_check.error:
                    result['error'] = store_check.error
                else:
                    if store_check.key not in verdicts:
                        verdicts[store_check.key] = _verdict(target, store_check, contexts, timeout)
                    trusted, error = verdicts[store_check.key]
                    result['trusted'] = trusted
                    if error:
                        result['error'] = error
                results.append(result)
        return endpoints, results
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _verdict(target, store_check, contexts, timeout):
    """(trusted, error) of one verified handshake trusting only the store; its context is built once for all targets."""
    try:
        if store_check.key not in contexts:
            contexts[store_check.key] = Endpoint(target.host, target.port, ca_path=store_check.ca_file).context()
        handshake(target, timeout=timeout, context=contexts[store_check.key])
        return True, None
    except MagratheaError as exc:
        return False, str(exc)


def table(rows):
    """A plain-text table of results that are not trusted (or pin mismatches), for messages and CI logs."""
    header = ('ENDPOINT', 'PROTOCOL', 'STORE', 'PROBLEM')
    lines = [header] + [(row['name'], row['protocol'], row.get('store', '-'), (row.get('error') or 'not trusted').split('; ')[0])
                        for row in rows]
    widths = [max(len(str(line[column])) for line in lines) for column in range(3)]
    return '\n'.join('%s  %s  %s  %s' % (str(line[0]).ljust(widths[0]), str(line[1]).ljust(widths[1]), str(line[2]).ljust(widths[2]), line[3])
                     for line in lines)
