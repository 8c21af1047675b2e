# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one TLS/connection layer of magrathea.secure.

Private to this collection: not for use by other collections.

Owns every TLS decision made by the NTSAPI, FTPS, REST and trust-check
clients: which CA to trust, the host-name check, the minimum protocol
version, the fingerprint pins (checked right after the handshake, before any
credential leaves the host; several may be given while Magrathea rotates a
certificate), the timeout of each wait and the deadline of a whole exchange,
HTTP proxies for the HTTPS clients, the shared option names with their
environment fallbacks and their checks, and the small family of exceptions
whose messages name the endpoint and the next step. Whether an error is
worth another attempt is a property of its class (``transient``); the retry
policy that acts on it lives in ``_retry``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import time
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

from ansible_collections.magrathea.secure.plugins.module_utils._text import check_text, is_decimal, shown_value

SERVICES = {
    # service: (default host, default port)
    'NTSAPI': ('secure.magrathea-telecom.co.uk', 777),
    'CDR': ('cdr.magrathea-telecom.co.uk', 21),
    'REST': ('restapi.magrathea.net', 8443),
}
DEFAULT_REST_URL = 'https://restapi.magrathea.net:8443/v1/'
DEFAULT_TIMEOUT = 30.0
CA_FILE_ENV = 'MAGRATHEA_CA_FILE'
# What an HTTP proxy may answer to CONNECT before the tunnel is open.
MAX_PROXY_REPLY = 16 * 1024
HOST_RE = re.compile(r'[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?')


class MagratheaError(Exception):
    """Base of every error raised by this collection's clients.

    The message names the endpoint (host:port) and says what to do next.
    ``transient`` says whether a new attempt, on a new connection, can succeed.
    """

    transient = False


class MagratheaConnectionError(MagratheaError):
    """The TCP connection could not be made or was lost."""

    transient = True


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


class LocalStorageError(MagratheaError):
    """This host could not store what arrived (disk full, permissions, read-only file system).

    Never a network error and never retried: another attempt would fail the same way, after another login.
    """

    def __init__(self, message, path=None, errno=None):
        super().__init__(message)
        self.path = path
        self.errno = errno


def normalize_fingerprint(value):
    """Return (algorithm, lower-case hex) for a SHA-1 or SHA-256 fingerprint.

    Accepts hex with or without colons (or spaces), in any case, optionally
    prefixed with ``sha1:`` / ``sha256:``.
    """
    if not isinstance(value, str):
        raise ValueError('fingerprint must be text (hex digits, colons optional), got %s' % type(value).__name__)
    text = value.strip()
    prefix = re.match(r'(sha-?1|sha-?256)[:=\s]', text, re.IGNORECASE)
    if prefix:
        text = text[prefix.end():]
    digits = re.sub(r'[\s:]', '', text).lower()
    if not re.fullmatch(r'[0-9a-f]+', digits or 'x'):
        raise ValueError('fingerprint %s is not hexadecimal; give the SHA-1 (40 hex digits) or SHA-256 (64 hex digits) '
                         'of the server certificate, colons optional' % shown_value(value))
    algorithm = {40: 'sha1', 64: 'sha256'}.get(len(digits))
    if algorithm is None:
        raise ValueError('fingerprint %s has %d hex digits; a SHA-1 has 40 and a SHA-256 has 64' % (shown_value(value), len(digits)))
    return algorithm, digits


def normalize_fingerprints(value):
    """A tuple of (algorithm, hex) pins from None, one fingerprint or a list of them (the current and the next certificate)."""
    if value is None or value == '':
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(normalize_fingerprint(item) for item in values))


def format_fingerprint(digits):
    """Colon-separated upper-case hex, the way browsers and openssl print it."""
    return ':'.join(digits[i:i + 2] for i in range(0, len(digits), 2)).upper()


def certificate_fingerprint(der, algorithm='sha256'):
    """Hex fingerprint of a DER certificate."""
    return hashlib.new(algorithm, der).hexdigest()


class Deadline:
    """The moment by which a whole exchange must be over: one reply, a request with its retries, a session.

    A socket's timeout bounds each wait for the next bytes; a server that sends one byte a second never trips it.
    Sockets made by ``Endpoint`` also honour a Deadline (``sock.deadline``), so a slow reply ends when it expires.
    """

    def __init__(self, seconds, clock=time.monotonic):
        if seconds is None or not seconds > 0:
            raise ValueError('a deadline must be a positive number of seconds, got %r' % (seconds,))
        self.seconds = float(seconds)
        self._clock = clock
        self.at = clock() + self.seconds

    def remaining(self):
        """Seconds left (0 or less once passed)."""
        return self.at - self._clock()

    @property
    def expired(self):
        return self.remaining() <= 0

    def within(self, seconds):
        """A deadline ``seconds`` from now that never ends after this one (a reply's deadline inside a session's)."""
        inner = Deadline(seconds, self._clock)
        if inner.at > self.at:
            inner.at = self.at
            inner.seconds = max(0.0, self.remaining())
        return inner

    def __repr__(self):
        return 'Deadline(%gs, %.3fs left)' % (self.seconds, self.remaining())


class _DeadlineMixin:
    """Bounds every blocking call of a socket by the socket's timeout and by ``self.deadline`` when one is set.

    Expiry raises ``socket.timeout``, which the clients already turn into MagratheaTimeout.
    """

    deadline = None
    _wait = None  # the timeout the caller set: the bound of one wait

    def settimeout(self, value):
        self._wait = value
        super().settimeout(value)

    def _arm(self):
        deadline = self.deadline
        if deadline is None:
            return
        left = deadline.remaining()
        if left <= 0:
            raise self._expired()
        super().settimeout(left if self._wait is None else min(self._wait, left))

    def _expired(self):
        return socket.timeout('timed out: the whole exchange did not end within %gs' % self.deadline.seconds)

    def _bounded(self, call, *args, **kwargs):
        self._arm()
        try:
            return call(*args, **kwargs)
        except socket.timeout:
            if self.deadline is not None and self.deadline.expired:
                raise self._expired() from None
            raise

    def recv(self, *args, **kwargs):
        return self._bounded(super().recv, *args, **kwargs)

    def recv_into(self, *args, **kwargs):
        return self._bounded(super().recv_into, *args, **kwargs)

    def send(self, *args, **kwargs):
        return self._bounded(super().send, *args, **kwargs)

    def sendall(self, *args, **kwargs):
        return self._bounded(super().sendall, *args, **kwargs)


class DeadlineSocket(_DeadlineMixin, socket.socket):
    """A TCP socket bounded by a Deadline."""


class DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    """A TLS socket bounded by a Deadline (the class every Endpoint context makes)."""


def proxy_for(host, proxy=None, use_proxy=True):
    """The HTTP proxy URL to tunnel through for ``host``, or None for a direct connection.

    ``proxy`` wins when given; otherwise ``https_proxy`` / ``HTTPS_PROXY`` of this host's environment, unless
    ``no_proxy`` names ``host``: what curl, ``get_url`` and ``uri`` do.
    """
    if not use_proxy:
        return None
    if proxy:
        return proxy
    if proxy_bypass_environment(host):
        return None
    return getproxies_environment().get('https') or None


class HttpProxy:
    """An HTTP proxy that opens a CONNECT tunnel; the TLS session runs end to end through it."""

    def __init__(self, url):
        parts = urlsplit(url.strip() if isinstance(url, str) else '')
        if parts.scheme.lower() not in ('http', 'https') or not parts.hostname:
            # Never repeat the URL: it may hold the proxy's password.
            raise ValueError('proxy must be an http://[user:password@]host:port URL')
        try:
            self.port = parts.port or (443 if parts.scheme.lower() == 'https' else 80)
        except ValueError:
            raise ValueError('proxy %s has an invalid port' % parts.hostname) from None
        if parts.scheme.lower() == 'https':
            raise ValueError('proxy %s: only http:// proxies are supported (the tunnel carries TLS end to end anyway)' % parts.hostname)
        self.host = parts.hostname
        self._authorization = None
        if parts.username is not None:
            credentials = '%s:%s' % (unquote(parts.username), unquote(parts.password or ''))
            self._authorization = 'Basic ' + base64.b64encode(credentials.encode('latin-1', 'strict')).decode('ascii')

    def describe(self):
        return 'proxy %s:%d' % (self.host, self.port)

    def tunnel(self, sock, host, port):
        """Ask for a tunnel to host:port over ``sock`` (connected to the proxy); raise MagratheaConnectionError if refused."""
        target = '[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port)
        request = 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n' % (target, target)
        if self._authorization:
            request += 'Proxy-Authorization: %s\r\n' % self._authorization
        sock.sendall((request + '\r\n').encode('ascii'))
        reply = b''
        while b'\r\n\r\n' not in reply:
            data = sock.recv(4096)
            if not data:
                raise MagratheaConnectionError('%s closed the connection instead of opening a tunnel to %s; check the proxy settings'
                                               % (self.describe(), target))
            reply += data
            if len(reply) > MAX_PROXY_REPLY:
                raise MagratheaConnectionError('%s answered CONNECT %s with more than %d bytes of headers; check the proxy settings'
                                               % (self.describe(), target, MAX_PROXY_REPLY))
        head, dummy, rest = reply.partition(b'\r\n\r\n')
        status = head.split(b'\r\n', 1)[0].decode('latin-1')
        match = re.fullmatch(r'HTTP/1\.[01] (\d{3})(?: (.*))?', status)
        if not match or match.group(1) != '200' or rest:
            shown = ''.join(char if char.isprintable() else '?' for char in status)[:120]
            hint = ('it needs credentials: give them in the proxy URL' if match and match.group(1) == '407'
                    else 'check that the proxy allows CONNECT to port %d' % port)
            raise MagratheaConnectionError('%s refused a tunnel to %s (%s); %s' % (self.describe(), target, shown, hint))


class Endpoint:
    """One TLS endpoint and every decision about how to trust it and reach it."""

    def __init__(self, host, port, ca_path=None, validate_certs=True, fingerprint=None, timeout=DEFAULT_TIMEOUT, context=None, proxy=None):
        check_host(host)
        self.host = host
        self.port = check_port(port)
        self.ca_path = ca_path
        self.validate_certs = validate_certs
        self.pins = normalize_fingerprints(fingerprint)
        self.timeout = check_timeout(timeout)
        self.proxy = HttpProxy(proxy) if proxy else None
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
        context.sslsocket_class = DeadlineSSLSocket
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

    def connect(self, deadline=None):
        """A connected, verified and pin-checked TLS socket, bounded by ``deadline`` when given."""
        return self.wrap(self.open_tcp(deadline))

    def open_tcp(self, deadline=None):
        """A plain TCP connection (FTPS upgrades it with AUTH TLS, then calls wrap), through the proxy if there is one."""
        host, port = (self.proxy.host, self.proxy.port) if self.proxy else (self.host, self.port)
        where = self.proxy.describe() if self.proxy else self.describe()
        try:
            sock = _create_connection(host, port, self.timeout, deadline)
        except socket.timeout:
            raise MagratheaTimeout('no answer from %s within %ss; check the host, port and firewall, or raise timeout'
                                   % (where, _seconds(self.timeout, deadline))) from None
        except OSError as exc:
            raise MagratheaConnectionError('cannot connect to %s: %s; check the host and port, and that the service is reachable from here'
                                           % (where, exc.strerror or exc)) from None
        if self.proxy:
            try:
                self.proxy.tunnel(sock, self.host, self.port)
            except socket.timeout:
                sock.close()
                raise MagratheaTimeout('%s did not open a tunnel to %s within %ss; check the proxy settings'
                                       % (where, self.describe(), _seconds(self.timeout, deadline))) from None
            except OSError as exc:
                sock.close()
                raise MagratheaConnectionError('%s dropped the tunnel to %s: %s' % (where, self.describe(), exc)) from None
            except MagratheaError:
                sock.close()
                raise
        return sock

    def wrap(self, sock, session=None, check_pin=True):
        """Run the TLS handshake over ``sock`` and check the pins before returning; the socket's deadline carries over."""
        deadline = getattr(sock, 'deadline', None)
        try:
            if deadline is not None:
                sock._arm()  # pylint: disable=protected-access
            tls = self.context().wrap_socket(sock, server_hostname=self.host, session=session)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise TLSVerifyError('certificate of %s did not verify: %s; install the Magrathea root CA or give ca_path'
                                 % (self.describe(), exc.verify_message or exc.reason)) from None
        except socket.timeout:
            sock.close()
            raise MagratheaTimeout('TLS handshake with %s timed out after %ss; check that the port speaks TLS'
                                   % (self.describe(), _seconds(self.timeout, deadline))) from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise MagratheaConnectionError('TLS handshake with %s failed: %s; check that the port speaks TLS 1.2 or newer'
                                           % (self.describe(), exc)) from None
        if isinstance(tls, DeadlineSSLSocket):
            tls.settimeout(self.timeout)
            tls.deadline = deadline
        if check_pin:
            self.check_pin(tls)
        return tls

    def pin_problem(self, der):
        """None when the DER certificate matches a pin (or nothing is pinned), else what was pinned and what was got."""
        if not self.pins:
            return None
        got = {}
        for algorithm, expected in self.pins:
            got.setdefault(algorithm, certificate_fingerprint(der, algorithm) if der else '')
            if got[algorithm] == expected:
                return None
        pinned = ' or '.join('%s %s' % (algorithm.upper(), format_fingerprint(expected)) for algorithm, expected in self.pins)
        seen = ', '.join('%s %s' % (algorithm.upper(), format_fingerprint(value)) for algorithm, value in got.items())
        return 'does not match pinned %s; got %s' % (pinned, seen)

    def check_pin(self, tls, sent='Nothing was sent'):
        """Raise PinMismatchError (and close) when the peer certificate matches none of the pins."""
        problem = self.pin_problem(tls.getpeercert(binary_form=True))
        if problem is None:
            return
        tls.close()
        raise PinMismatchError('certificate for %s %s. %s. If Magrathea renewed the certificate, add the new fingerprint '
                               'from their notice to fingerprint' % (self.describe(), problem, sent))

    def peer_fingerprints(self, tls):
        der = tls.getpeercert(binary_form=True)
        return {'sha1': format_fingerprint(certificate_fingerprint(der, 'sha1')),
                'sha256': format_fingerprint(certificate_fingerprint(der, 'sha256'))}


def _create_connection(host, port, timeout, deadline):
    """socket.create_connection, with DeadlineSockets."""
    error = None
    for family, kind, proto, dummy, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = DeadlineSocket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.deadline = deadline
            sock._arm()  # pylint: disable=protected-access
            sock.connect(address)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
            if isinstance(exc, socket.timeout):
                raise
    raise error or OSError('no address for %s' % host)


def _seconds(timeout, deadline):
    """The bound that applied: the deadline when it was shorter than the timeout."""
    if deadline is not None and (timeout is None or deadline.seconds < timeout):
        return '%g' % deadline.seconds
    return '%g' % timeout


def check_host(host):
    """Raise ValueError unless ``host`` is an ASCII host name or IP address."""
    if not isinstance(host, str) or not HOST_RE.fullmatch(host):
        raise ValueError('host %s is not a host name or IP address (ASCII letters, digits, dots and hyphens; '
                         'write an international name in its xn-- form)' % shown_value(host))
    return host


def check_port(port):
    if isinstance(port, bool) or not isinstance(port, (int, str)) or not is_decimal(str(port)) or not 0 < int(port) < 65536:
        raise ValueError('port %s must be a number from 1 to 65535' % shown_value(port))
    return int(port)


def check_timeout(timeout):
    """Seconds as a float; refuses 0 and negative values, which would mean waiting forever or failing at once."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise ValueError('timeout must be a number of seconds, got %s' % shown_value(timeout)) from None
    if not 0 < value < float('inf'):
        raise ValueError('timeout must be more than 0 seconds, got %s; it bounds every wait, so 0 would mean waiting forever' % shown_value(timeout))
    return value


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
        fingerprint=dict(type='list', elements='str'),
        timeout=dict(type='float', default=DEFAULT_TIMEOUT),
    )


def check_credentials(username, password, service):
    """Refuse, before any connection, a user name or password that no Magrathea service can carry: printable ASCII only.

    Never repeats the password; the messages name the option and its environment variable.
    """
    prefix = 'MAGRATHEA_%s_' % service
    if username is not None:
        check_text('username (%sUSERNAME)' % prefix, username, printable=True, max_length=256)
    if password is not None:
        check_text('password (%sPASSWORD)' % prefix, password, printable=True, max_length=256, secret=True)


def endpoint_from_module(module, service):
    """Build the Endpoint from a module's shared connection options; fail the module on bad input."""
    params = module.params
    host, port = params['host'], params['port']
    try:
        check_credentials(params.get('username'), params.get('password'), service)
        endpoint = Endpoint(host, port, ca_path=params['ca_path'], validate_certs=params['validate_certs'],
                            fingerprint=params['fingerprint'], timeout=params['timeout'])
        endpoint.context()  # a missing or unreadable CA file is found here, before any connection
    except (ValueError, TLSVerifyError) as exc:
        module.fail_json(msg='%s: %s' % (service, exc))
    if not params['validate_certs']:
        module.warn('validate_certs is false: the certificate of %s is not verified and a third party can read the session. '
                    'Use ca_path with the Magrathea root CA instead.' % endpoint.describe())
    return endpoint


def url_secrets(url):
    """What of ``url`` no output may repeat: when it holds an '@', the whole URL, its user:password part and the password
    as written and decoded (however the URL parses); nothing otherwise. For ``module.no_log_values``."""
    if not isinstance(url, str) or '@' not in url:
        return []
    text = url.strip()
    userinfo = text.split('://', 1)[-1].rsplit('@', 1)[0]
    password = userinfo.split(':', 1)[1] if ':' in userinfo else ''
    return sorted({form for form in (url, text, userinfo, password, unquote(password)) if form}, key=len, reverse=True)


def split_https_url(url, service='REST'):
    """(host, port, path) of an ``https://host[:port]/path`` URL naming ``service``.

    Raises ValueError with the next step when the URL is not plain HTTPS (credentials, a query or a fragment included).
    Never repeats a URL that holds credentials, however it parses.
    """
    example = ', e.g. %s' % DEFAULT_REST_URL if service == 'REST' else ''
    text = url.strip() if isinstance(url, str) else ''
    if '@' in text:
        hint = ': give them in username and password, so that they are never logged' if service == 'REST' else ' (they would be logged)'
        raise ValueError('the url holds credentials (an "@"); a url must not carry them%s' % hint)
    parts = urlsplit(text)
    shown = shown_value(text)
    if not text.isascii() or not text.isprintable():
        raise ValueError('url %s holds control or non-ASCII characters; write an international host name in its xn-- form' % shown)
    if parts.scheme.lower() != 'https':
        raise ValueError('url %s must start with https:// (%s is only reached over TLS)%s' % (shown, service, example))
    if parts.query or parts.fragment or text.endswith(('?', '#')):
        raise ValueError('url %s must be a base URL without ?query or #fragment%s' % (shown, example))
    if not parts.hostname:
        raise ValueError('url %s has no host name%s' % (shown, example))
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError('url %s has an invalid port' % shown) from None
    return parts.hostname, port, parts.path or '/'


def endpoint_from_url(url, ca_path=None, validate_certs=True, fingerprint=None, timeout=DEFAULT_TIMEOUT, service='REST', proxy=None):
    """(Endpoint, base path ending in /) for an ``https://host[:port]/path/`` base URL, such as the REST API's."""
    host, port, path = split_https_url(url, service)
    if not path.endswith('/'):
        path += '/'
    endpoint = Endpoint(host, port, ca_path=ca_path, validate_certs=validate_certs, fingerprint=fingerprint,
                        timeout=timeout, proxy=proxy)
    return endpoint, path
