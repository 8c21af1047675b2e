# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one TLS/connection layer of magrathea.secure.

Private to this collection: not for use by other collections.

Owns every TLS decision made by the NTSAPI, FTPS, REST and trust-check
clients: which CA to trust, the host-name check, the minimum protocol
version, the fingerprint pin (checked right after the handshake, before any
credential leaves the host), timeouts, the shared option names with their
environment fallbacks, and the small family of exceptions whose messages
name the endpoint and the next step.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
from urllib.parse import urlsplit

SERVICES = {
    # service: (default host, default port)
    'NTSAPI': ('secure.magrathea-telecom.co.uk', 777),
    'CDR': ('cdr.magrathea-telecom.co.uk', 21),
    'REST': ('restapi.magrathea.net', 8443),
}
DEFAULT_REST_URL = 'https://restapi.magrathea.net:8443/v1/'
DEFAULT_TIMEOUT = 30.0
CA_FILE_ENV = 'MAGRATHEA_CA_FILE'


class MagratheaError(Exception):
    """Base of every error raised by this collection's clients.

    The message names the endpoint (host:port) and says what to do next.
    """


class MagratheaConnectionError(MagratheaError):
    """The TCP connection could not be made or was lost."""


class MagratheaTimeout(MagratheaConnectionError):
    """The peer did not answer within the timeout."""


class TLSVerifyError(MagratheaError):
    """The server certificate did not verify against the trusted CAs or host name."""


class PinMismatchError(TLSVerifyError):
    """The server certificate does not match the pinned fingerprint."""


class ProtocolError(MagratheaError):
    """The server answered something the protocol does not allow."""


class AuthenticationError(MagratheaError):
    """The server refused the credentials."""


def normalize_fingerprint(value):
    """Return (algorithm, lower-case hex) for a SHA-1 or SHA-256 fingerprint.

    Accepts hex with or without colons (or spaces), in any case, optionally
    prefixed with ``sha1:`` / ``sha256:``.
    """
    text = value.strip()
    prefix = re.match(r'^(sha-?1|sha-?256)[:=\s]', text, re.IGNORECASE)
    if prefix:
        text = text[prefix.end():]
    digits = re.sub(r'[\s:]', '', text).lower()
    if not re.fullmatch(r'[0-9a-f]+', digits or 'x'):
        raise ValueError('fingerprint %r is not hexadecimal; give the SHA-1 (40 hex digits) or SHA-256 (64 hex digits) '
                         'of the server certificate, colons optional' % value)
    algorithm = {40: 'sha1', 64: 'sha256'}.get(len(digits))
    if algorithm is None:
        raise ValueError('fingerprint %r has %d hex digits; a SHA-1 has 40 and a SHA-256 has 64' % (value, len(digits)))
    return algorithm, digits


def format_fingerprint(digits):
    """Colon-separated upper-case hex, the way browsers and openssl print it."""
    return ':'.join(digits[i:i + 2] for i in range(0, len(digits), 2)).upper()


def certificate_fingerprint(der, algorithm='sha256'):
    """Hex fingerprint of a DER certificate."""
    return hashlib.new(algorithm, der).hexdigest()


class Endpoint:
    """One TLS endpoint and every decision about how to trust it."""

    def __init__(self, host, port, ca_path=None, validate_certs=True, fingerprint=None, timeout=DEFAULT_TIMEOUT, service='NTSAPI',
                 context=None):
        self.host = host
        self.port = int(port)
        self.ca_path = ca_path
        self.validate_certs = validate_certs
        self.pin_algorithm, self.pin = normalize_fingerprint(fingerprint) if fingerprint else (None, None)
        self.timeout = float(timeout) if timeout else None
        self.service = service
        # A context built for the same trust decisions may be shared: it does not depend on the host.
        self._context = context

    def describe(self):
        return '%s:%d' % (self.host, self.port)

    def context(self):
        """The client SSLContext: TLS 1.2 or newer, host name checked, the CA file or the system store."""
        if self._context is None:
            self._context = self._build_context()
        return self._context

    def _build_context(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.validate_certs:
            # insecure-by-request: the caller asked for validate_certs=false and has warned the user.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if self.ca_path:
            if not os.path.exists(self.ca_path):
                raise TLSVerifyError('CA file %s for %s does not exist; give ca_path (or %s) the path of the Magrathea root CA'
                                     % (self.ca_path, self.describe(), CA_FILE_ENV))
            try:
                if os.path.isdir(self.ca_path):
                    context.load_verify_locations(capath=self.ca_path)
                else:
                    context.load_verify_locations(cafile=self.ca_path)
            except (ssl.SSLError, OSError) as exc:
                raise TLSVerifyError('cannot load CA file %s for %s (%s); it must hold PEM certificates'
                                     % (self.ca_path, self.describe(), exc)) from None
        else:
            context.load_default_certs()
        return context

    def connect(self):
        """A connected, verified and pin-checked TLS socket."""
        return self.wrap(self.open_tcp())

    def open_tcp(self):
        """A plain TCP connection (FTPS upgrades it with AUTH TLS, then calls wrap)."""
        try:
            return socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.timeout:
            raise MagratheaTimeout('no answer from %s within %ss; check the host, port and firewall, or raise timeout'
                                   % (self.describe(), self.timeout)) from None
        except OSError as exc:
            raise MagratheaConnectionError('cannot connect to %s: %s; check the host and port, and that the service is reachable from here'
                                           % (self.describe(), exc.strerror or exc)) from None

    def wrap(self, sock, session=None, check_pin=True):
        """Run the TLS handshake over ``sock`` and check the pin before returning."""
        try:
            tls = self.context().wrap_socket(sock, server_hostname=self.host, session=session)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise TLSVerifyError('certificate of %s did not verify: %s; install the Magrathea root CA or give ca_path'
                                 % (self.describe(), exc.verify_message or exc.reason)) from None
        except socket.timeout:
            sock.close()
            raise MagratheaTimeout('TLS handshake with %s timed out after %ss; check that the port speaks TLS'
                                   % (self.describe(), self.timeout)) from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise MagratheaConnectionError('TLS handshake with %s failed: %s; check that the port speaks TLS 1.2 or newer'
                                           % (self.describe(), exc)) from None
        if check_pin:
            self.check_pin(tls)
        return tls

    def check_pin(self, tls):
        """Raise PinMismatchError (and close) when the peer certificate is not the pinned one."""
        if self.pin is None:
            return
        algorithm, expected = self.pin_algorithm, self.pin
        der = tls.getpeercert(binary_form=True)
        got = certificate_fingerprint(der, algorithm) if der else ''
        if got != expected:
            tls.close()
            raise PinMismatchError('certificate for %s does not match pinned %s %s; got %s. Nothing was sent. '
                                   'If Magrathea renewed the certificate, update fingerprint from their notice'
                                   % (self.describe(), algorithm.upper(), format_fingerprint(expected), format_fingerprint(got)))

    def peer_fingerprints(self, tls):
        der = tls.getpeercert(binary_form=True)
        return {'sha1': format_fingerprint(certificate_fingerprint(der, 'sha1')),
                'sha256': format_fingerprint(certificate_fingerprint(der, 'sha256'))}


def connection_argument_spec(service, port=None, host=None):
    """Argument spec of the shared connection options for ``service`` (NTSAPI, CDR or REST)."""
    # env_fallback lives in module_utils.basic; imported here to keep this file importable without Ansible in tests.
    from ansible.module_utils.basic import env_fallback

    default_host, default_port = SERVICES[service]
    prefix = 'MAGRATHEA_%s_' % service
    return dict(
        host=dict(type='str', default=host or default_host, fallback=(env_fallback, [prefix + 'HOST'])),
        port=dict(type='int', default=port or default_port, fallback=(env_fallback, [prefix + 'PORT'])),
        username=dict(type='str', fallback=(env_fallback, [prefix + 'USERNAME'])),
        password=dict(type='str', no_log=True, fallback=(env_fallback, [prefix + 'PASSWORD'])),
        ca_path=dict(type='path', fallback=(env_fallback, [CA_FILE_ENV])),
        validate_certs=dict(type='bool', default=True),
        fingerprint=dict(type='str'),
        timeout=dict(type='float', default=DEFAULT_TIMEOUT),
    )


def endpoint_from_module(module, service):
    """Build the Endpoint from a module's shared connection options; fail the module on bad input."""
    params = module.params
    host, port = params['host'], params['port']
    if not params['validate_certs']:
        module.warn('validate_certs is false: the certificate of %s:%s is not verified and a third party can read the session. '
                    'Use ca_path with the Magrathea root CA instead.' % (host, port))
    try:
        return Endpoint(host, port, ca_path=params['ca_path'], validate_certs=params['validate_certs'],
                        fingerprint=params['fingerprint'], timeout=params['timeout'], service=service)
    except ValueError as exc:
        module.fail_json(msg='%s:%s: %s' % (host, port, exc))


def split_https_url(url, service='REST'):
    """(host, port, path) of an ``https://host[:port]/path`` URL naming ``service``.

    Raises ValueError with the next step when the URL is not plain HTTPS (credentials, a query or a fragment included).
    """
    example = ', e.g. %s' % DEFAULT_REST_URL if service == 'REST' else ''
    parts = urlsplit((url or '').strip())
    if parts.scheme.lower() != 'https':
        raise ValueError('url %s must start with https:// (%s is only reached over TLS)%s' % (url, service, example))
    if parts.username is not None or parts.password is not None:
        hint = ': give them in username and password, so that they are never logged' if service == 'REST' else ' (they would be logged)'
        raise ValueError('url must not hold credentials%s' % hint)
    if parts.query or parts.fragment:
        raise ValueError('url %s must be a base URL without ?query or #fragment%s' % (url, example))
    if not parts.hostname:
        raise ValueError('url %s has no host name%s' % (url, example))
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError('url %s has an invalid port' % url) from None
    return parts.hostname, port, parts.path or '/'


def endpoint_from_url(url, ca_path=None, validate_certs=True, fingerprint=None, timeout=DEFAULT_TIMEOUT, service='REST'):
    """(Endpoint, base path ending in /) for an ``https://host[:port]/path/`` base URL, such as the REST API's."""
    host, port, path = split_https_url(url, service)
    if not path.endswith('/'):
        path += '/'
    endpoint = Endpoint(host, port, ca_path=ca_path, validate_certs=validate_certs, fingerprint=fingerprint,
                        timeout=timeout, service=service)
    return endpoint, path
