# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The client of Magrathea's REST API (https://restapi.magrathea.net:8443/v1/).

Private to this collection: not for use by other collections.

Owns the HTTPS side of the REST API, on the Python standard library alone (a managed host needs no third-party
package): the allow-list of read-only paths (the API moves money with a GET, so the HTTP method is no safety
signal), HTTP Basic authentication with its inputs checked before any connection, one request per TLS connection
made by ``_tls.Endpoint`` (its CA, host-name check, pins checked before the request is written, and proxy
tunnel), one deadline for a whole call with its retries, bounds on what a reply may hold (headers, body, decoded
body), retries through ``_retry.RetryPolicy`` within a budget of requests, answers turned into messages that say
what to do and never carry the credentials, and money as exact Decimal from plain decimal notation.
"""

from __future__ import annotations

import base64
import decimal
import http.client
import json
import re
import socket
import ssl
import time
import zlib
from decimal import Decimal
from urllib.parse import quote

from ansible_collections.magrathea.secure.plugins.module_utils._retry import (
    MAX_RETRIES,
    ConnectionBudget,
    RetryPolicy,
    is_transient,
)
from ansible_collections.magrathea.secure.plugins.module_utils._text import check_text, secret_forms, server_text, shown_value
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    DEFAULT_REST_URL,
    DEFAULT_TIMEOUT,
    AuthenticationError,
    Deadline,
    MagratheaConnectionError,
    MagratheaError,
    MagratheaTimeout,
    ProtocolError,
    check_credentials,
    connection_argument_spec,
    endpoint_from_url,
    proxy_for,
    split_https_url,
    url_secrets,
)

REST_URL_ENV = 'MAGRATHEA_REST_URL'
ACCOUNT_ENV = 'MAGRATHEA_ACCOUNT'
DEFAULT_RETRIES = 2
# Waits between attempts: 1, 2, 4... seconds, never less than 1 whatever Retry-After says, never more than 10.
RETRY_BASE_DELAY = 1.0
RETRY_MIN_DELAY = 1.0
RETRY_MAX_DELAY = 10.0
# Requests one client (one run of the module) may ever send.
MAX_REQUESTS = 1 + MAX_RETRIES
RETRY_STATUSES = frozenset((500, 502, 503, 504))
# A balance is a few dozen bytes; an error page a few KiB.
MAX_BODY = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = 'magrathea.secure REST client'
# Account names and numbers are letters, digits, '+', '-' and '_': nothing that can add a path segment.
PATH_PARAMETER_RE = re.compile(r'[A-Za-z0-9+][A-Za-z0-9_+-]{0,63}')
# Plain ASCII decimal notation; JSON numbers may carry an exponent.
AMOUNT_RE = re.compile(r'-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?')
MAX_AMOUNT_TEXT = 64
MAX_WHOLE_DIGITS = 12
MAX_PLACES = 20
# Room for the sum of two plausible amounts, so that adding never rounds.
EXACT = decimal.Context(prec=MAX_WHOLE_DIGITS + MAX_PLACES + 4, traps=[decimal.Inexact, decimal.Overflow, decimal.InvalidOperation])

# The only paths this client will ever request, relative to the base URL; all of them only read.
READ_ONLY_PATHS = {
    'account/balance/{account}': re.compile(r'account/balance/[^/]+'),
    'account/services': re.compile(r'account/services'),
    'account/detail/{account}': re.compile(r'account/detail/[^/]+'),
    'account/gettariff/{account}': re.compile(r'account/gettariff/[^/]+'),
    'account/cdrs/{account}': re.compile(r'account/cdrs/[^/]+'),
    'number/status/{number}': re.compile(r'number/status/[^/]+'),
    'block/info/{number}': re.compile(r'block/info/[^/]+'),
}


class RestError(MagratheaError):
    """The REST API answered with an error status (other than 401)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class RestUnavailable(RestError):
    """The REST API answered 500, 502, 503 or 504: worth another attempt, after ``retry_after`` seconds if it said so."""

    transient = True

    def __init__(self, message, status=None, retry_after=None):
        super().__init__(message, status)
        self.retry_after = retry_after


class DisallowedPathError(MagratheaError):
    """A caller asked for a path outside the read-only allow-list; nothing was sent."""


# -- inputs -------------------------------------------------------------------------------------


def check_parameter(name, value):
    """``value`` when it can be a path segment (an account name or a number); ValueError naming ``name`` otherwise."""
    return check_text(name, value, spaces=False, max_length=64, pattern=PATH_PARAMETER_RE,
                      expected='letters, digits, + - _ (for example MAG012345)')


def check_rest_credentials(username, password):
    """Refuse, before any connection, credentials that HTTP Basic authentication cannot carry."""
    if not username or not password:
        raise ValueError('the REST API needs username and password (or MAGRATHEA_REST_USERNAME and MAGRATHEA_REST_PASSWORD)')
    check_credentials(username, password, 'REST')
    if ':' in username:
        raise ValueError('username (MAGRATHEA_REST_USERNAME) %s holds a ":", which HTTP Basic authentication cannot carry; '
                         'use the REST user name Magrathea issued' % shown_value(username))


def rest_path(template, **parameters):
    """The request path for an allow-listed ``template``; raise DisallowedPathError for anything else."""
    pattern = READ_ONLY_PATHS.get(template)
    if pattern is None:
        raise DisallowedPathError('the REST client only reads; %s is not one of the read-only paths it may call (%s). Nothing was sent'
                                  % (template, ', '.join(sorted(READ_ONLY_PATHS))))
    for name, value in parameters.items():
        try:
            check_parameter(name, value)
        except ValueError as exc:
            raise DisallowedPathError('%s; nothing was sent' % exc) from None
    try:
        path = template.format(**{name: quote(value, safe='') for name, value in parameters.items()})
    except KeyError as exc:
        raise DisallowedPathError('path %s needs a value for %s' % (template, exc)) from None
    if not pattern.fullmatch(path):
        raise DisallowedPathError('path %s is not one of the read-only paths; nothing was sent' % path)
    return path


# -- money --------------------------------------------------------------------------------------


def parse_amount(value):
    """Decimal from a plausible amount in plain ASCII decimal notation (a string or a JSON number, never a float).

    Raises ValueError with a phrase that completes "<field> ...".
    """
    if isinstance(value, bool) or value is None:
        raise ValueError('is %s, not an amount of money' % json.dumps(value))
    if isinstance(value, int):
        if abs(value) >= 10 ** MAX_WHOLE_DIGITS:
            raise ValueError('is an implausible amount (more than %d digits before the decimal point)' % MAX_WHOLE_DIGITS)
        text = str(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError('is %s, not a finite amount of money' % value)
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError('is a %s, not an amount of money' % type(value).__name__)
    if len(text) > MAX_AMOUNT_TEXT:
        raise ValueError('is an implausible amount (%d characters)' % len(text))
    if text.lower().lstrip('+-') in ('nan', 'snan', 'inf', 'infinity'):
        raise ValueError('is %s, not a finite amount of money' % shown_value(text))
    if not AMOUNT_RE.fullmatch(text):
        raise ValueError('is %s, not a plain decimal amount (ASCII digits, an optional leading - and decimal point)' % shown_value(text))
    try:
        amount = Decimal(text)
        whole_digits = amount.adjusted() + 1 if amount else 0
    except (ArithmeticError, ValueError):
        raise ValueError('is an implausible amount (%s)' % shown_value(text)) from None
    if whole_digits > MAX_WHOLE_DIGITS:
        raise ValueError('is an implausible amount (%s: more than %d digits before the decimal point)' % (shown_value(text), MAX_WHOLE_DIGITS))
    if -amount.as_tuple().exponent > MAX_PLACES:
        raise ValueError('is an implausible amount (%s: more than %d decimal places)' % (shown_value(text), MAX_PLACES))
    return amount


def parse_money(value, field='funds'):
    """Decimal of a money field of a server's answer; ProtocolError naming the field otherwise."""
    try:
        return parse_amount(value)
    except ValueError as exc:
        raise ProtocolError('%s %s' % (field, exc)) from None


def money_text(amount):
    """Plain decimal notation, keeping the server's precision (1E+3 -> '1000', 125.50 stays '125.50')."""
    return '{0:f}'.format(amount)


def money_number(amount):
    """The amount as a float for templates; exact arithmetic belongs to the text form."""
    return float(amount)


def parse_threshold(value):
    """Decimal threshold from a string or a YAML number (None stays None); ValueError with the fix otherwise."""
    if value is None:
        return None
    if isinstance(value, float):
        # str() of a float is its shortest round-trip form: 0.1 stays 0.1, not 0.1000000000000000055...
        value = str(value)
    try:
        return parse_amount(value)
    except ValueError as exc:
        raise ValueError("min_funds %s; write it like '50.00'" % exc) from None


class Balance:
    """An account balance: funds and promotional funds as Decimal."""

    def __init__(self, account, funds, promofunds):
        self.account = account
        self.funds = funds
        self.promofunds = promofunds

    @classmethod
    def from_document(cls, account, document, secrets=()):
        """The Balance in a decoded ``account/balance`` answer; ``secrets`` never reach a message about it."""
        where = 'the balance of %s' % account
        if not isinstance(document, dict) or 'funds' not in document:
            raise ProtocolError('%s has no "funds" field: funds is missing (got %s)'
                                % (where, server_text(json.dumps(document, default=str), secrets, 120)))
        try:
            funds = parse_money(document['funds'], 'funds')
            promofunds = parse_money(document.get('promofunds', 0), 'promofunds')
        except ProtocolError as exc:
            raise ProtocolError('%s: %s; check that url is the base of the REST API' % (where, exc)) from None
        return cls(account, funds, promofunds)

    @property
    def total(self):
        # Exact: plausible amounts fit the context, which traps any rounding.
        return EXACT.add(self.funds, self.promofunds)

    def available(self, include_promofunds=False):
        return self.total if include_promofunds else self.funds

    def as_dict(self):
        result = {'account': self.account}
        for name, amount in (('funds', self.funds), ('promofunds', self.promofunds), ('total', self.total)):
            result[name] = money_text(amount)
            result[name + '_number'] = money_number(amount)
        return result


class LowFunds:
    """The outcome of comparing a balance with a threshold (Decimal comparison is exact)."""

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


def call_seconds(timeout, retries):
    """The deadline of a whole call: every attempt within ``timeout``, every wait between them within RETRY_MAX_DELAY."""
    return timeout + retries * (timeout + RETRY_MAX_DELAY)


def decode_body(raw, encoding, limit):
    """The body as sent before ``Content-Encoding`` (identity, gzip or deflate), at most ``limit`` bytes; ValueError otherwise."""
    coding = (encoding or 'identity').strip().lower()
    if coding in ('', 'identity'):
        return raw
    if coding in ('gzip', 'x-gzip'):
        formats = (16 + zlib.MAX_WBITS,)
    elif coding == 'deflate':
        # RFC 9110 says zlib format; some servers send raw deflate.
        formats = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        raise ValueError('uses Content-Encoding %s, which this client does not accept (gzip, deflate or none)' % server_text(coding, limit=40))
    for wbits in formats:
        decoder = zlib.decompressobj(wbits)
        try:
            data = decoder.decompress(raw, limit + 1)
        except zlib.error:
            continue
        if len(data) > limit or decoder.unconsumed_tail:
            raise ValueError('unpacks to more than %d bytes' % limit)
        return data
    raise ValueError('is not valid %s' % coding)


def _json_int(text):
    # Python refuses to convert integers of more than 4300 digits; parse_amount refuses them as implausible.
    return int(text) if len(text) <= MAX_AMOUNT_TEXT else Decimal(text)


def parse_json(body):
    """The document in a UTF-8 JSON body, numbers as Decimal (never float); ValueError otherwise."""
    try:
        return json.loads(body.decode('utf-8'), parse_float=Decimal, parse_int=_json_int, parse_constant=Decimal)
    except RecursionError:
        raise ValueError('nested too deeply') from None


def retry_after(value):
    """Seconds from a ``Retry-After: <seconds>`` header, else None (an HTTP date is left to the back-off)."""
    text = (value or '').strip()
    return float(text) if re.fullmatch(r'[0-9]{1,6}', text) else None


class Reply:
    """A REST answer: status, reason, headers and the decoded body (a bounded prefix for an error status)."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class RestClient:
    """Read-only client of the REST API at ``url`` with HTTP Basic authentication.

    Every option is checked here, before any connection. Each attempt of a call (``get``) ends within ``timeout``
    seconds and each wait between attempts within RETRY_MAX_DELAY, so the whole call has one deadline of
    ``timeout + retries * (timeout + RETRY_MAX_DELAY)`` seconds.
    """

    def __init__(self, url, username, password, ca_path=None, validate_certs=True, fingerprint=None, timeout=DEFAULT_TIMEOUT,
                 retries=DEFAULT_RETRIES, sleep=time.sleep, proxy=None, use_proxy=True):
        check_rest_credentials(username, password)
        host = split_https_url(url)[0]
        self.endpoint, self.base_path = endpoint_from_url(url, ca_path=ca_path, validate_certs=validate_certs, fingerprint=fingerprint,
                                                          timeout=timeout, proxy=proxy_for(host, proxy, use_proxy))
        self.retries = RetryPolicy(retries).retries
        self.seconds = call_seconds(self.endpoint.timeout, self.retries)
        self.endpoint.context()  # a CA file that cannot be read is found now, not at the first connection
        self._sleep = sleep
        self._budget = ConnectionBudget(MAX_REQUESTS, 'requests')
        token = base64.b64encode(('%s:%s' % (username, password)).encode('ascii')).decode('ascii')
        self._authorization = 'Basic ' + token
        self.secrets = secret_forms(username, password)

    @property
    def url(self):
        host = '[%s]' % self.endpoint.host if ':' in self.endpoint.host else self.endpoint.host
        return 'https://%s:%d%s' % (host, self.endpoint.port, self.base_path)

    def describe(self, path=''):
        return '%s%s%s' % (self.endpoint.describe(), self.base_path, path)

    def balance(self, account):
        """The Balance of ``account`` (GET account/balance/{account})."""
        return Balance.from_document(account, self.get('account/balance/{account}', account=account), self.secrets)

    def get(self, template, **parameters):
        """The decoded JSON document of ``GET template`` (an allow-listed path), retried while that can help."""
        path = rest_path(template, **parameters)
        deadline = Deadline(self.seconds)
        policy = RetryPolicy(self.retries, base_delay=RETRY_BASE_DELAY, min_delay=RETRY_MIN_DELAY, max_delay=RETRY_MAX_DELAY,
                             deadline=deadline, sleep=self._sleep)
        attempts = []

        def attempt():
            attempts.append(path)
            return self._document(path, self._exchange(path, deadline))
        try:
            return policy.run(attempt)
        except MagratheaError as exc:
            if is_transient(exc):
                exc.args = ('%s (%s)' % (exc, self._tries(len(attempts))),)
            raise

    def _tries(self, count):
        if count == 1:
            return 'the only attempt'
        if count > self.retries:
            return 'all %d attempts' % count
        return '%d attempts; no time was left for another within the deadline of %gs' % (count, self.seconds)

    def _request(self, path):
        target = quote(self.base_path + path, safe="/%:@!$&'()*+,;=-._~")
        host = self.url.split('/')[2]
        if self.endpoint.port == 443:
            host = host.rsplit(':', 1)[0]
        lines = ('GET %s HTTP/1.1' % target, 'Host: %s' % host, 'Authorization: %s' % self._authorization,
                 'Accept: application/json', 'Accept-Encoding: gzip, deflate', 'User-Agent: %s' % USER_AGENT, 'Connection: close')
        return ('\r\n'.join(lines) + '\r\n\r\n').encode('ascii')

    def _exchange(self, path, deadline):
        """One request on a new connection, its reply read within the attempt's deadline and the body bounds."""
        where = self.describe(path)
        self._budget.spend(where)
        limit = self.endpoint.timeout
        tls = self.endpoint.connect(deadline.within(limit))
        response = None
        try:
            tls.sendall(self._request(path))
            response = http.client.HTTPResponse(tls, method='GET')
            response.begin()
            bound = MAX_BODY if 200 <= response.status < 300 else MAX_ERROR_BODY
            raw, complete = _read_at_most(response, bound)
            if not complete and bound == MAX_BODY:
                raise ProtocolError('%s answered HTTP %d with more than %d bytes; a balance is a few bytes, check that url is the base '
                                    'of the REST API (e.g. %s)' % (where, response.status, MAX_BODY, DEFAULT_REST_URL))
            try:
                body = decode_body(raw, response.getheader('Content-Encoding'), bound)
            except ValueError as exc:
                if bound == MAX_BODY:
                    raise ProtocolError('%s answered HTTP %d with a body that %s; check that url is the base of the REST API'
                                        % (where, response.status, exc)) from None
                body = b''
            return Reply(response.status, response.reason, response.headers, body)
        except socket.timeout:
            raise MagratheaTimeout('no complete answer from %s within %gs (each attempt, the whole reply included, must end within '
                                   'timeout); check the host, port and firewall, or raise timeout' % (where, limit)) from None
        except (http.client.IncompleteRead, ConnectionError) as exc:
            raise MagratheaConnectionError('%s closed the connection before the reply was complete (%s)'
                                           % (where, server_text(type(exc).__name__, limit=40))) from None
        except http.client.HTTPException as exc:
            raise ProtocolError('%s did not answer in HTTP/1.1: %s; check that url is the base of the REST API (e.g. %s)'
                                % (where, server_text(str(exc) or type(exc).__name__, self.secrets, 120), DEFAULT_REST_URL)) from None
        except (ssl.SSLError, OSError) as exc:
            raise MagratheaConnectionError('request to %s failed: %s; check that the REST API is reachable from here'
                                           % (where, server_text(str(exc), self.secrets, 120))) from None
        finally:
            if response is not None:
                response.close()
            tls.close()

    def _document(self, path, reply):
        """The JSON document of a successful reply; the error that says what to do for any other."""
        where = self.describe(path)
        status = reply.status
        if status == 401:
            raise AuthenticationError('%s refused the credentials: %s; check username and password (MAGRATHEA_REST_USERNAME, '
                                      'MAGRATHEA_REST_PASSWORD) and that the account belongs to them. Not retried, so that '
                                      'Magrathea does not see repeated failed logins' % (where, self._error_text(reply)))
        if 300 <= status < 400:
            raise ProtocolError('%s redirected to %s; redirects are not followed (they could carry the credentials elsewhere): '
                                'set url to the final address' % (where, server_text(reply.headers.get('Location', '?'), self.secrets, 120)))
        if status in RETRY_STATUSES:
            raise RestUnavailable('%s answered HTTP %d (%s); the REST API is having trouble, try again later'
                                  % (where, status, self._error_text(reply)), status=status,
                                  retry_after=retry_after(reply.headers.get('Retry-After')))
        if status >= 400 or status < 200:
            raise RestError('%s answered HTTP %d: %s%s' % (where, status, self._error_text(reply), _next_step(status, path)), status=status)
        try:
            return parse_json(reply.body)
        except ValueError:
            raise ProtocolError('%s answered HTTP %d with a body that is not JSON (%s, %d bytes: %s); check that url is the base '
                                'of the REST API (e.g. %s) and try again later'
                                % (where, status, server_text(reply.headers.get('Content-Type', 'no content type'), self.secrets, 80),
                                   len(reply.body), server_text(reply.body, self.secrets, 120), DEFAULT_REST_URL)) from None

    def _error_text(self, reply):
        """The ``error`` field of a JSON error body, or the start of the body; without the credentials, bounded."""
        try:
            document = parse_json(reply.body)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get('error'), str):
            return server_text(document['error'], self.secrets)
        if not reply.body:
            return server_text(reply.reason or 'empty body', self.secrets, 80)
        return server_text(reply.body, self.secrets, 120)


def _next_step(status, path):
    """What to do about an error status, in words the user can act on."""
    parameter = path.rsplit('/', 1)[-1]
    if status == 404:
        return ('; check the account number (%s) and that the REST user may read it (GET account/services lists the '
                'accounts and permissions of the user)' % parameter)
    if status == 403:
        what = path.split('/')[1] if path.startswith('account/') else path.split('/')[0]
        return ("; the REST user lacks the '%s' permission for %s: ask Magrathea (or the account's administrator) to grant it "
                '(GET account/services lists the permissions the user has)' % (what, parameter))
    if status == 429:
        return '; Magrathea limits the number of requests: run the check less often'
    return ''


def _read_at_most(response, limit):
    """(body, complete): up to ``limit`` bytes of the body, and whether that was all of it."""
    chunks = []
    size = 0
    while size <= limit:
        data = response.read(min(65536, limit + 1 - size))
        if not data:
            return b''.join(chunks), True
        chunks.append(data)
        size += len(data)
    return b''.join(chunks)[:limit], False


# -- module glue --------------------------------------------------------------------------------


def rest_argument_spec():
    """The shared connection options, with the REST API addressed by ``url`` instead of host and port, and its proxy."""
    from ansible.module_utils.basic import env_fallback

    spec = connection_argument_spec('REST')
    del spec['host'], spec['port']
    spec['url'] = dict(type='str', default=DEFAULT_REST_URL, fallback=(env_fallback, [REST_URL_ENV]))
    spec['retries'] = dict(type='int', default=DEFAULT_RETRIES)
    spec['proxy'] = dict(type='str')
    spec['use_proxy'] = dict(type='bool', default=True)
    return spec


def client_from_module(module):
    """A RestClient from the module's options, every one checked before any connection; fails the module on bad input."""
    params = module.params
    # A password in a URL is not a no_log option: keep it out of every output, the module's arguments included.
    module.no_log_values.update(url_secrets(params['url']) + url_secrets(params['proxy']))
    try:
        client = RestClient(params['url'], params['username'], params['password'], ca_path=params['ca_path'],
                            validate_certs=params['validate_certs'], fingerprint=params['fingerprint'], timeout=params['timeout'],
                            retries=params['retries'], proxy=params['proxy'], use_proxy=params['use_proxy'])
    except (ValueError, MagratheaError) as exc:
        module.fail_json(msg=str(exc))
    # The Basic token is the password in another form.
    module.no_log_values.update(client.secrets)
    if not params['validate_certs']:
        module.warn('validate_certs is false: the certificate of %s is not verified and a third party can read the session, '
                    'password included. Use ca_path with the Magrathea root CA instead.' % client.endpoint.describe())
    return client
