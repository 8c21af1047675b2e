# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The client of Magrathea's REST API (https://restapi.magrathea.net:8443/v1/).

Private to this collection: not for use by other collections.

Owns the HTTPS side of the REST API: the base URL and what it may contain, the
allow-list of read-only paths (the API moves money with a GET, so the HTTP
method is no safety signal), HTTP Basic authentication, bounded retries on
5xx answers and timeouts, turning 401/4xx bodies and malformed JSON into
messages that say what to do, and money as Decimal. Every TLS decision (CA
file or the system store, TLS 1.2+, the fingerprint pin checked before the
Authorization header leaves the host) comes from ``_tls.Endpoint``: requests
is only the HTTP layer and never falls back to its own CA bundle.
"""

from __future__ import annotations

import json
import re
import time
import traceback
import warnings
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    DEFAULT_REST_URL,
    DEFAULT_TIMEOUT,
    AuthenticationError,
    MagratheaConnectionError,
    MagratheaError,
    MagratheaTimeout,
    PinMismatchError,
    ProtocolError,
    TLSVerifyError,
    connection_argument_spec,
    endpoint_from_url,
    format_fingerprint,
)

try:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.exceptions import InsecureRequestWarning
except ImportError:
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
    HTTPAdapter = object
else:
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None

REST_URL_ENV = 'MAGRATHEA_REST_URL'
ACCOUNT_ENV = 'MAGRATHEA_ACCOUNT'
DEFAULT_RETRIES = 2
RETRY_BACKOFF = 0.5
MAX_RETRY_WAIT = 10.0
RETRY_STATUSES = frozenset((500, 502, 503, 504))
USER_AGENT = 'magrathea.secure REST client'
# Account names and numbers are letters, digits, '+', '-' and '_': nothing that can add a path segment.
PATH_PARAMETER_RE = re.compile(r'^[A-Za-z0-9+][A-Za-z0-9_+-]{0,63}$')

# The only paths this client will ever request, relative to the base URL; all of them only read.
READ_ONLY_PATHS = {
    'account/balance/{account}': re.compile(r'^account/balance/[^/]+$'),
    'account/services': re.compile(r'^account/services$'),
    'account/detail/{account}': re.compile(r'^account/detail/[^/]+$'),
    'account/gettariff/{account}': re.compile(r'^account/gettariff/[^/]+$'),
    'account/cdrs/{account}': re.compile(r'^account/cdrs/[^/]+$'),
    'number/status/{number}': re.compile(r'^number/status/[^/]+$'),
    'block/info/{number}': re.compile(r'^block/info/[^/]+$'),
}


class RestError(MagratheaError):
    """The REST API answered with an error status (other than 401) or kept failing."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class DisallowedPathError(MagratheaError):
    """A caller asked for a path outside the read-only allow-list; nothing was sent."""


# -- paths --------------------------------------------------------------------------------------


def rest_path(template, **parameters):
    """The request path for an allow-listed ``template``; raise DisallowedPathError for anything else."""
    pattern = READ_ONLY_PATHS.get(template)
    if pattern is None:
        raise DisallowedPathError('the REST client only reads; %s is not one of the read-only paths it may call (%s). Nothing was sent'
                                  % (template, ', '.join(sorted(READ_ONLY_PATHS))))
    for name, value in parameters.items():
        if not PATH_PARAMETER_RE.match(str(value)):
            raise DisallowedPathError('%s %r is not a valid account name or number (letters, digits, + - _); nothing was sent' % (name, value))
    try:
        path = template.format(**{name: quote(str(value), safe='') for name, value in parameters.items()})
    except KeyError as exc:
        raise DisallowedPathError('path %s needs a value for %s' % (template, exc)) from None
    if not pattern.match(path):
        raise DisallowedPathError('path %s is not one of the read-only paths; nothing was sent' % path)
    return path


# -- money --------------------------------------------------------------------------------------


def parse_money(value, field='funds'):
    """Decimal from a JSON string or number (never through float); raise ProtocolError otherwise."""
    if isinstance(value, bool) or value is None:
        raise ProtocolError('%s is %s, not an amount of money' % (field, json.dumps(value)))
    if isinstance(value, (int, Decimal)):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ProtocolError('%s is %r, not an amount of money' % (field, value)) from None
    else:
        raise ProtocolError('%s is a %s, not an amount of money' % (field, type(value).__name__))
    if not amount.is_finite():
        raise ProtocolError('%s is %r, not an amount of money' % (field, value))
    return amount


def money_text(amount):
    """Plain decimal notation, keeping the server's precision (1E+3 -> '1000', 125.50 stays '125.50')."""
    return '{0:f}'.format(amount)


def money_number(amount):
    """The amount as a JSON number for templates; exact arithmetic belongs to the text form."""
    if amount == amount.to_integral_value():
        return int(amount)
    return float(amount)


def parse_threshold(value):
    """Decimal threshold from a string or a YAML number (None stays None); ValueError with the fix otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError('min_funds %r is not a decimal number; write it like \'50.00\'' % (value,))
    try:
        # str() of a float is its shortest round-trip form: 0.1 stays 0.1, not 0.1000000000000000055...
        threshold = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError('min_funds %r is not a decimal number; write it like \'50.00\'' % (value,)) from None
    if not threshold.is_finite():
        raise ValueError('min_funds %r is not a finite decimal number' % (value,))
    return threshold


class Balance:
    """An account balance: funds and promotional funds as Decimal."""

    def __init__(self, account, funds, promofunds):
        self.account = account
        self.funds = funds
        self.promofunds = promofunds

    @classmethod
    def from_document(cls, account, document):
        if not isinstance(document, dict) or 'funds' not in document:
            raise ProtocolError('the balance of %s has no "funds" field (got %s)' % (account, _preview(json.dumps(document, default=str))))
        funds = parse_money(document['funds'], 'funds')
        promofunds = parse_money(document.get('promofunds', 0), 'promofunds')
        return cls(account, funds, promofunds)

    @property
    def total(self):
        return self.funds + self.promofunds

    def available(self, include_promofunds=False):
        return self.total if include_promofunds else self.funds

    def as_dict(self):
        result = {'account': self.account}
        for name, amount in (('funds', self.funds), ('promofunds', self.promofunds), ('total', self.total)):
            result[name] = money_text(amount)
            result[name + '_number'] = money_number(amount)
        return result


class LowFunds:
    """The outcome of comparing a balance with a threshold."""

    def __init__(self, balance, min_funds, include_promofunds=False):
        self.balance = balance
        self.min_funds = min_funds
        self.include_promofunds = include_promofunds
        self.available = balance.available(include_promofunds)
        self.low = min_funds is not None and self.available < min_funds

    def message(self):
        what = 'funds plus promotional funds' if self.include_promofunds else 'funds'
        return ('account %s is below min_funds: %s %s, threshold %s (promotional funds %s); top up the account before it runs out'
                % (self.balance.account, what, money_text(self.available), money_text(self.min_funds), money_text(self.balance.promofunds)))


# -- HTTP ---------------------------------------------------------------------------------------


class EndpointAdapter(HTTPAdapter):
    """HTTPS through the Endpoint's SSLContext and pin, never requests' (certifi) CA bundle."""

    def __init__(self, endpoint, **kwargs):
        # init_poolmanager runs inside HTTPAdapter.__init__ and needs the endpoint.
        self.endpoint = endpoint
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs['ssl_context'] = self.endpoint.context()
        if self.endpoint.pins:
            # urllib3 compares it right after the handshake, before the request (and its Authorization header) is written.
            pool_kwargs['assert_fingerprint'] = self.endpoint.pins[0][1]
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)

    def cert_verify(self, conn, url, verify, cert):
        # requests would point the pool at certifi's bundle, which urllib3 then loads into our context.
        conn.cert_reqs = 'CERT_REQUIRED' if self.endpoint.validate_certs else 'CERT_NONE'  # insecure-by-request
        conn.ca_certs = None
        conn.ca_cert_dir = None


class RestClient:
    """Read-only client of the REST API at ``url`` with HTTP Basic authentication."""

    def __init__(self, url, username, password, ca_path=None, validate_certs=True, fingerprint=None, timeout=DEFAULT_TIMEOUT,
                 retries=DEFAULT_RETRIES, backoff=RETRY_BACKOFF, sleep=time.sleep):
        if not HAS_REQUESTS:
            raise MagratheaError('the Python library requests is required for the REST API; install it on the managed host')
        if not username or not password:
            raise AuthenticationError('the REST API needs username and password (or MAGRATHEA_REST_USERNAME and MAGRATHEA_REST_PASSWORD)')
        self.endpoint, self.base_path = endpoint_from_url(url, ca_path=ca_path, validate_certs=validate_certs,
                                                          fingerprint=fingerprint, timeout=timeout)
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self._sleep = sleep
        self._origin = 'https://%s' % self._netloc()
        self._session = requests.Session()
        # No REQUESTS_CA_BUNDLE, .netrc or proxy settings from the environment: trust comes from the Endpoint only.
        self._session.trust_env = False
        self._session.auth = (username, password)
        self._session.headers.update({'Accept': 'application/json', 'User-Agent': USER_AGENT})
        self._session.mount('https://', EndpointAdapter(self.endpoint, max_retries=0))

    def _netloc(self):
        host = self.endpoint.host
        if ':' in host:
            host = '[%s]' % host
        return '%s:%d' % (host, self.endpoint.port)

    @property
    def url(self):
        return self._origin + self.base_path

    def describe(self, path=''):
        return '%s%s%s' % (self.endpoint.describe(), self.base_path, path)

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def get(self, template, **parameters):
        """The decoded JSON document of ``GET template`` (an allow-listed path)."""
        path = rest_path(template, **parameters)
        response = self._get_with_retries(path)
        if response.status_code == 401:
            raise AuthenticationError('%s refused the credentials: %s; check username and password (MAGRATHEA_REST_USERNAME, '
                                      'MAGRATHEA_REST_PASSWORD) and that the account belongs to them. Not retried, so that '
                                      'Magrathea does not see repeated failed logins'
                                      % (self.describe(path), _error_text(response)))
        if 300 <= response.status_code < 400:
            raise ProtocolError('%s redirected to %s; redirects are not followed (they could carry the credentials elsewhere): '
                                'set url to the final address' % (self.describe(path), response.headers.get('Location', '?')))
        if response.status_code >= 400:
            raise RestError('%s answered HTTP %d: %s' % (self.describe(path), response.status_code, _error_text(response)),
                            status=response.status_code)
        return self._decode(path, response)

    def balance(self, account):
        """The Balance of ``account`` (GET account/balance/{account})."""
        return Balance.from_document(account, self.get('account/balance/{account}', account=account))

    def _decode(self, path, response):
        try:
            # Money must never pass through float.
            return json.loads(response.content.decode('utf-8'), parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError('%s answered HTTP %d with a body that is not JSON (%s, %d bytes: %s); check that url is the base '
                                'of the REST API (e.g. %s) and try again later'
                                % (self.describe(path), response.status_code, response.headers.get('Content-Type', 'no content type'),
                                   len(response.content), _preview(response.content.decode('utf-8', 'replace')), DEFAULT_REST_URL)) from None

    def _get_with_retries(self, path):
        url = self._origin + self.base_path + path
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = self._send(url)
            except MagratheaTimeout as exc:
                if last:
                    raise MagratheaTimeout('%s (%d attempts)' % (exc, attempts)) from None
                self._sleep(self._delay(attempt))
                continue
            except MagratheaConnectionError as exc:
                if last:
                    raise MagratheaConnectionError('%s (%d attempts)' % (exc, attempts)) from None
                self._sleep(self._delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._sleep(self._delay(attempt, response.headers.get('Retry-After')))
                continue
            if response.status_code in RETRY_STATUSES:
                tries = 'the only attempt' if attempts == 1 else 'all %d attempts' % attempts
                raise RestError('%s answered HTTP %d (%s) to %s; the REST API is having trouble, try again later'
                                % (self.describe(path), response.status_code, _error_text(response), tries), status=response.status_code)
            return response
        raise AssertionError('unreachable')  # pragma: no cover

    def _delay(self, attempt, retry_after=None):
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), MAX_RETRY_WAIT)
        return min(self.backoff * (2 ** (attempt - 1)), MAX_RETRY_WAIT)

    def _send(self, url):
        where = self.endpoint.describe()
        timeout = self.endpoint.timeout
        try:
            with warnings.catch_warnings():
                # The module has already warned about validate_certs=false once, in words the user can act on.
                warnings.simplefilter('ignore', InsecureRequestWarning)
                return self._session.get(url, timeout=(timeout, timeout), allow_redirects=False, verify=self.endpoint.validate_certs)
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from None
        except requests.exceptions.Timeout:
            raise MagratheaTimeout('no answer from %s within %ss; check the host, port and firewall, or raise timeout'
                                   % (where, timeout)) from None
        except requests.exceptions.ConnectionError as exc:
            raise MagratheaConnectionError('cannot connect to %s: %s; check url and that the REST API is reachable from here'
                                           % (where, _root_message(exc))) from None
        except requests.exceptions.RequestException as exc:
            raise MagratheaConnectionError('request to %s failed: %s' % (where, _root_message(exc))) from None

    def _tls_error(self, exc):
        where = self.endpoint.describe()
        message = _root_message(exc)
        mismatch = re.search(r'Fingerprints did not match\. Expected "([0-9a-fA-F:]+)", got "([0-9a-fA-F:]+)"', message)
        if mismatch:
            return PinMismatchError('certificate for %s does not match pinned %s %s; got %s. Nothing was sent. '
                                    'If Magrathea renewed the certificate, update fingerprint from their notice'
                                    % (where, self.endpoint.pins[0][0].upper(), format_fingerprint(mismatch.group(1).replace(':', '')),
                                       format_fingerprint(mismatch.group(2).replace(':', ''))))
        if 'CERTIFICATE_VERIFY_FAILED' in message or 'certificate verify failed' in message:
            return TLSVerifyError('certificate of %s did not verify: %s; install the Magrathea root CA or give ca_path' % (where, message))
        return MagratheaConnectionError('TLS handshake with %s failed: %s; check that the port speaks TLS 1.2 or newer' % (where, message))


def _root_message(exc):
    """The innermost reason of a requests/urllib3 exception chain, as text."""
    seen = set()
    current = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, 'reason', None)
        if isinstance(reason, BaseException):
            current = reason
            continue
        if current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
            continue
        break
    verify_message = getattr(current, 'verify_message', None)
    text = str(current)
    if verify_message and verify_message not in text:
        text = '%s (%s)' % (text, verify_message)
    return text


def _preview(text, limit=120):
    """A short, single-line sample of a body for an error message."""
    flat = ' '.join(str(text).split())
    return repr(flat if len(flat) <= limit else flat[:limit] + '...')


def _error_text(response):
    """The ``error`` field of a JSON error body, or a short preview of the body."""
    try:
        document = json.loads(response.content.decode('utf-8'))
    except (ValueError, UnicodeDecodeError):
        document = None
    if isinstance(document, dict) and isinstance(document.get('error'), str):
        return document['error'][:200]
    if not response.content:
        return response.reason or 'empty body'
    return _preview(response.content.decode('utf-8', 'replace'))


# -- module glue --------------------------------------------------------------------------------


def rest_argument_spec():
    """The shared connection options, with the REST API addressed by ``url`` instead of host and port."""
    from ansible.module_utils.basic import env_fallback

    spec = connection_argument_spec('REST')
    del spec['host'], spec['port']
    spec['url'] = dict(type='str', default=DEFAULT_REST_URL, fallback=(env_fallback, [REST_URL_ENV]))
    spec['retries'] = dict(type='int', default=DEFAULT_RETRIES)
    return spec


def client_from_module(module):
    """A RestClient from the module's options; fails the module on bad input."""
    params = module.params
    if not params['validate_certs']:
        module.warn('validate_certs is false: the certificate of %s is not verified and a third party can read the session, '
                    'password included. Use ca_path with the Magrathea root CA instead.' % params['url'])
    if params['retries'] < 0:
        module.fail_json(msg='retries must be 0 or more, got %d' % params['retries'])
    try:
        return RestClient(params['url'], params['username'], params['password'], ca_path=params['ca_path'],
                          validate_certs=params['validate_certs'], fingerprint=params['fingerprint'], timeout=params['timeout'],
                          retries=params['retries'])
    except ValueError as exc:
        module.fail_json(msg='%s: %s' % (params['url'], exc))
    except MagratheaError as exc:
        module.fail_json(msg=str(exc))
    return None  # pragma: no cover
