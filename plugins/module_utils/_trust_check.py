# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Whether each trust store of a host trusts an endpoint, checked through the shared TLS layer.

Private to this collection: not for use by other collections.

Owns the endpoint list (host/port/protocol or an https URL, through the
HTTP proxy of the environment or of the task for https), the FTPS
``AUTH TLS`` upgrade before the handshake, the separate check of the server
certificate against its pins and of the days until it expires, one verified
handshake per endpoint and store with the store's CA certificates as the
only anchors (Endpoint from _tls with a temporary CA file), and which rows
are problems when every store should trust, or after a removal, refuse.
Stores come from the store files' discover().
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import socket
import tempfile

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import CertificateError, TrustAnchor, pem_text
from ansible_collections.magrathea.secure.plugins.module_utils._text import is_decimal
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    Deadline, Endpoint, HttpProxy, MagratheaError, MagratheaTimeout, PinMismatchError, ProtocolError, TLSVerifyError, check_host,
    check_port, normalize_fingerprints, proxy_for, split_https_url,
)
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import STORE_ERRORS, store_error

PROTOCOLS = ('tls', 'ftps', 'https')
DEFAULT_PORTS = {'tls': None, 'ftps': 21, 'https': 443}
EXPECTATIONS = ('trusted', 'untrusted')


class Target:
    """One endpoint to check."""

    def __init__(self, host, port, protocol='tls', fingerprint=None, path='/', name=None, proxy=None):
        if protocol not in PROTOCOLS:
            raise ValueError('protocol %r of %s is not one of %s' % (protocol, host, ', '.join(PROTOCOLS)))
        if not host:
            raise ValueError('an endpoint needs host (or url)')
        port = port or DEFAULT_PORTS[protocol]
        if not port:
            raise ValueError('endpoint %s needs a port for protocol %s' % (host, protocol))
        # Everything is checked here, before any endpoint is contacted.
        self.host = check_host(host)
        self.port = check_port(port)
        self.protocol = protocol
        self.fingerprint = fingerprint
        normalize_fingerprints(fingerprint)
        self.path = path or '/'
        self.name = name or '%s:%d' % (host, self.port)
        self.proxy = proxy if protocol == 'https' else None  # NTSAPI and FTPS connect directly
        if self.proxy:
            HttpProxy(self.proxy)

    def describe(self):
        return '%s:%d' % (self.host, self.port)

    def endpoint(self, **kwargs):
        """The TLS layer's Endpoint for this target."""
        return Endpoint(self.host, self.port, fingerprint=self.fingerprint, proxy=self.proxy, **kwargs)

    @classmethod
    def from_option(cls, item, proxy=None, use_proxy=True):
        """A Target from one element of the ``endpoints`` option: host/port/protocol or url; https honours the proxy settings."""
        if item.get('url'):
            host, port, path = split_https_url(item['url'], service='the endpoint')
            return cls(host, port, 'https', item.get('fingerprint'), path, item.get('name') or item['url'],
                       proxy=proxy_for(host, proxy, use_proxy))
        protocol = item.get('protocol') or 'tls'
        target_proxy = proxy_for(item.get('host') or '', proxy, use_proxy) if protocol == 'https' else None
        return cls(item.get('host'), item.get('port'), protocol, item.get('fingerprint'), name=item.get('name'), proxy=target_proxy)


def _ftp_reply(sock, endpoint):
    """(code, text) of one FTP reply, multi-line replies included."""
    data = b''
    while True:
        try:
            chunk = sock.recv(1024)
        except socket.timeout:
            raise MagratheaTimeout('no whole FTP reply from %s within %gs' % (endpoint.describe(), endpoint.timeout)) from None
        if not chunk:
            raise ProtocolError('%s closed the connection before its FTP reply; check that the port speaks FTP' % endpoint.describe())
        data += chunk
        lines = data.split(b'\n')
        for line in lines[:-1]:
            text = line.decode('utf-8', 'replace').rstrip('\r')
            if _reply_code(text) is not None:
                return _reply_code(text), text
        if len(data) > 65536:
            raise ProtocolError('%s sent more than 64 KiB without an FTP reply line' % endpoint.describe())


def _reply_code(text):
    """The code of a final FTP reply line ('220 ready'), or None."""
    return int(text[:3]) if re.fullmatch(r'[0-9]{3} .*', text, re.DOTALL) else None


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
    """One verified handshake with ``target`` trusting only ``ca_path``; returns what the server showed of itself.

    ``context``: an SSLContext already built for the same ``ca_path`` (loading a store of 150 CAs costs tens of ms).
    """
    endpoint = target.endpoint(ca_path=ca_path, validate_certs=validate_certs, timeout=timeout, context=context)
    # One deadline for the whole exchange: a server that answers one byte at a time cannot hold the check.
    deadline = Deadline(timeout)
    if target.protocol == 'ftps':
        sock = endpoint.open_tcp(deadline)
        try:
            _upgrade_ftps(sock, endpoint)
        except MagratheaError:
            sock.close()
            raise
        tls = endpoint.wrap(sock, check_pin=False)
    else:
        tls = endpoint.wrap(endpoint.open_tcp(deadline), check_pin=False)
    try:
        der = tls.getpeercert(binary_form=True)
        info = endpoint.peer_fingerprints(tls)
        info['pin_problem'] = endpoint.pin_problem(der)
        info.update(_expiry(der))
        if target.protocol == 'https':
            request = 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: magrathea.secure trust_check\r\n\r\n' % (target.path, target.host)
            tls.sendall(request.encode('ascii'))
            status = tls.recv(1024).split(b'\r\n', 1)[0].decode('latin-1')
            if status.startswith('HTTP/'):
                info['http_status'] = int(status.split()[1]) if len(status.split()) > 1 and is_decimal(status.split()[1]) else None
        elif target.protocol == 'ftps':
            tls.sendall(b'QUIT\r\n')
    except (OSError, ValueError):
        pass
    finally:
        tls.close()
    return info


def _expiry(der, now=None):
    """not_after (ISO 8601) and whole days left of a server certificate; nothing when it cannot be read."""
    try:
        not_after = TrustAnchor(der, 'the server certificate').not_after
    except CertificateError:
        return {}
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return dict(not_after=not_after.strftime('%Y-%m-%dT%H:%M:%SZ'), days_left=(not_after - now).days)


class StoreCheck:
    """One store's CA certificates as a temporary CA file for Endpoint."""

    def __init__(self, store, directory):
        self.store = store
        self.path = store.info().get('bundle') or store.describe()
        self.kind = store.kind
        self.error = None
        self.refuses_all = False
        self.ca_file = None
        self.key = None
        try:
            ders = store.anchors()
        except STORE_ERRORS as exc:
            self.error = str(store_error(exc))
            return
        if not ders:
            self.error = '%s trusts no CA certificate' % self.path
            self.refuses_all = True
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
                problem = peer.pop('pin_problem')
                endpoint_result.update(peer)
                if target.fingerprint:
                    endpoint_result['fingerprint_matches'] = problem is None
                    if problem:
                        endpoint_result['error'] = 'certificate for %s %s' % (target.describe(), problem)
            except MagratheaError as exc:
                endpoint_result['error'] = str(exc)
            endpoints.append(endpoint_result)
            verdicts = {}
            for store_check in checks:
                result = dict(name=target.name, endpoint=target.describe(), protocol=target.protocol, store=store_check.path,
                              kind=store_check.kind, required=is_required(store_check, required), trusted=False, refused=False)
                if endpoint_result.get('sha256') is None:
                    result['error'] = endpoint_result.get('error')
                elif store_check.error:
                    result.update(error=store_check.error, refused=store_check.refuses_all)
                else:
                    if store_check.key not in verdicts:
                        verdicts[store_check.key] = _verdict(target, store_check, contexts, timeout)
                    trusted, refused, error = verdicts[store_check.key]
                    result.update(trusted=trusted, refused=refused)
                    if error:
                        result['error'] = error
                results.append(result)
        return endpoints, results
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _verdict(target, store_check, contexts, timeout):
    """(trusted, refused, error) of one verified handshake trusting only the store; its context is built once for all targets."""
    try:
        if store_check.key not in contexts:
            contexts[store_check.key] = Endpoint(target.host, target.port, ca_path=store_check.ca_file).context()
        handshake(target, timeout=timeout, context=contexts[store_check.key])
        return True, False, None
    except MagratheaError as exc:
        # Only a certificate that did not verify is a refusal; a dropped connection proves nothing either way.
        return False, isinstance(exc, TLSVerifyError) and not isinstance(exc, PinMismatchError), str(exc)


def problems(endpoints, results, expect='trusted'):
    """Every problem once: an endpoint that cannot be reached or matches none of its pins, then each required store that
    does not trust a reachable endpoint (``expect='trusted'``), or that still trusts it or cannot show that it refuses it
    (``expect='untrusted'``, after a removal)."""
    rows = [row for row in endpoints if row.get('error')]
    reachable = set(row['name'] for row in endpoints if row.get('sha256'))
    for row in results:
        if not row['required'] or row['name'] not in reachable:
            continue
        if expect == 'trusted' and not row['trusted']:
            rows.append(row)
        elif expect == 'untrusted' and row['trusted']:
            rows.append(dict(row, error='%s still trusts %s; remove the certificate from it' % (row['store'], row['endpoint'])))
        elif expect == 'untrusted' and not row['refused']:
            rows.append(dict(row, error='cannot tell whether %s refuses %s: %s' % (row['store'], row['endpoint'], row.get('error'))))
    return rows


def expiry_warnings(endpoints, days):
    """A warning for each server certificate that expires within ``days`` days."""
    warnings = []
    for row in endpoints:
        if row.get('days_left') is not None and row['days_left'] < days:
            when = ('expired on %s' % row['not_after'][:10] if row['days_left'] < 0
                    else 'expires in %d days, on %s' % (row['days_left'], row['not_after'][:10]))
            warnings.append('the server certificate of %s (%s, SHA-256 %s) %s; add the fingerprint of its successor to the pins '
                            'before the switch' % (row['name'], row['endpoint'], row['sha256'], when))
    return warnings


def table(rows):
    """A plain-text table of results that are not trusted (or pin mismatches), for messages and CI logs."""
    header = ('ENDPOINT', 'PROTOCOL', 'STORE', 'PROBLEM')
    lines = [header] + [(row['name'], row['protocol'], row.get('store', '-'), (row.get('error') or 'not trusted').split('; ')[0])
                        for row in rows]
    widths = [max(len(str(line[column])) for line in lines) for column in range(3)]
    return '\n'.join('%s  %s  %s  %s' % (str(line[0]).ljust(widths[0]), str(line[1]).ljust(widths[1]), str(line[2]).ljust(widths[2]), line[3])
                     for line in lines)
