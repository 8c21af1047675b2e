# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Imitation of Magrathea's REST API (https://restapi.magrathea.net:8443/v1/) for the sandbox.

Owns the HTTPS listener, HTTP Basic authentication, the read-only endpoints the
product may call (balance, services, detail, tariff, cdrs, number status and
block info, the last two read from the shared NumberRegistry), and the fault
modes the client tests need: the first N requests answer 503, or the balance
body is not JSON. Requests are logged to the ``sandbox.rest`` logger without
credentials.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import hmac
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sandbox.registry import NumberRegistry, NtsError

LOG = logging.getLogger("sandbox.rest")

BASE_PATH = "/v1/"
WRONG_CREDENTIALS = "Wrong username, password or account"
HANDSHAKE_TIMEOUT = 10.0
MALFORMED_BODY = b"<html><body><h1>Service temporarily unavailable</h1></body></html>\n"


class RestApi:
    """Routing and answers, independent of HTTP plumbing: answer() -> (status, content type, body bytes)."""

    ROUTES = (
        (re.compile(r"^account/balance/(?P<account>[^/]+)$"), "balance"),
        (re.compile(r"^account/services$"), "services"),
        (re.compile(r"^account/detail/(?P<account>[^/]+)$"), "detail"),
        (re.compile(r"^account/gettariff/(?P<account>[^/]+)$"), "tariff"),
        (re.compile(r"^account/cdrs/(?P<account>[^/]+)$"), "cdrs"),
        (re.compile(r"^number/status/(?P<number>[^/]+)$"), "number_status"),
        (re.compile(r"^block/info/(?P<number>[^/]+)$"), "block_info"),
    )

    def __init__(self, registry, username, password, account, funds, promofunds, fail_times=0, malformed=False,
                 numeric_money=False, cdrs=None):
        self.registry = registry
        self.account = account
        self.funds = decimal.Decimal(funds)
        self.promofunds = decimal.Decimal(promofunds)
        self.malformed = malformed
        self.numeric_money = numeric_money
        self.recent_cdrs = cdrs
        self._username = username
        self._password = password
        self._failures_left = fail_times
        self._lock = threading.Lock()

    def answer(self, path, authorization):
        """The response to ``GET path`` with the given Authorization header value."""
        with self._lock:
            failing = self._failures_left > 0
            if failing:
                self._failures_left -= 1
        if failing:
            return _json(503, {"error": "Service temporarily unavailable"})
        if not self.authorised(authorization):
            return _json(401, {"error": WRONG_CREDENTIALS})
        path = path.split("?", 1)[0]
        if path.startswith(BASE_PATH):
            for pattern, name in self.ROUTES:
                match = pattern.match(path[len(BASE_PATH):])
                if match:
                    params = match.groupdict()
                    if params.get("account", self.account) != self.account:
                        return _json(401, {"error": WRONG_CREDENTIALS})
                    return getattr(self, name)(**params)
        if "/transfer/" in path:
            LOG.warning("money-moving endpoint requested: %s", path)
        return _json(404, {"error": "Not found"})

    def authorised(self, authorization):
        credentials = basic_credentials(authorization)
        if credentials is None:
            return False
        username, password = credentials
        user_ok = hmac.compare_digest(username.encode("utf-8"), self._username.encode("utf-8"))
        password_ok = hmac.compare_digest(password.encode("utf-8"), self._password.encode("utf-8"))
        return user_ok and password_ok

    def balance(self, account):
        del account
        if self.malformed:
            return 200, "text/html", MALFORMED_BODY
        if self.numeric_money:
            body = '{"funds": %s, "promofunds": %s}' % (self.funds, self.promofunds)
            return 200, "application/json", body.encode("ascii")
        return _json(200, {"funds": str(self.funds), "promofunds": str(self.promofunds)})

    def services(self):
        return _json(200, {"accounts": [self.account], "permissions": ["balance", "cdrs", "detail", "tariff", "numbers", "blocks"]})

    def detail(self, account):
        return _json(200, {"account": account, "name": "Magrathea Sandbox Ltd", "status": "active", "type": "prepay"})

    def tariff(self, account):
        del account
        return _json(200, {"band": "A", "restriction": "none"})

    def cdrs(self, account):
        del account
        if not self.recent_cdrs:
            return _json(400, {"error": "No CDRS"})
        return _json(200, self.recent_cdrs)

    def number_status(self, number):
        status = self.registry.status(number)
        if status is None:
            return _json(400, {"error": "Number %s not found on this account" % number})
        return _json(200, status)

    def block_info(self, number):
        try:
            first, quantity = self.registry.block_info(number)
        except NtsError as error:
            return _json(400, {"error": str(error)})
        return _json(200, {"first": first, "qty": quantity})


def basic_credentials(authorization):
    """(username, password) from an HTTP Basic Authorization header value, or None."""
    words = (authorization or "").split(None, 1)
    if len(words) != 2 or words[0].lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(words[1].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, separator, password = decoded.partition(":")
    return (username, password) if separator else None


def _json(status, document):
    return status, "application/json", json.dumps(document).encode("utf-8")


class _RequestHandler(BaseHTTPRequestHandler):
    """HTTP glue: GET goes to the RestApi, every other method is refused."""

    protocol_version = "HTTP/1.1"
    server_version = "MagratheaSandbox/1.0"
    timeout = 30

    def do_GET(self):  # pylint: disable=invalid-name
        try:
            answer = self.server.api.answer(self.path, self.headers.get("Authorization"))
        except Exception:  # pylint: disable=broad-exception-caught  # a sandbox bug must still answer, as 500
            LOG.exception("GET %s failed", self.path)
            answer = _json(500, {"error": "Internal sandbox error"})
        self.respond(*answer)

    def do_POST(self):  # pylint: disable=invalid-name
        self.respond(*_json(405, {"error": "Method not allowed"}))

    do_PUT = do_DELETE = do_PATCH = do_POST

    def respond(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        credentials = basic_credentials(self.headers.get("Authorization"))
        user = credentials[0] if credentials else "-"
        LOG.info("%s %s %s %s user=%s", self.client_address[0], self.command, self.path, code, user)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        LOG.debug("%s " + format, self.client_address[0], *args)


class _TlsHttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that does the TLS handshake in the request's thread."""

    daemon_threads = True

    def __init__(self, address, ssl_context, api):
        self.ssl_context = ssl_context
        self.api = api
        super().__init__(address, _RequestHandler)

    def finish_request(self, request, client_address):
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        with self.ssl_context.wrap_socket(request, server_side=True) as tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request, client_address):
        LOG.debug("request from %s failed", client_address, exc_info=True)


class RestServer:
    """The REST listener (HTTPS when ``ssl_context`` is given) serving /v1/ in daemon threads.

    ``fail_times`` N: the first N requests answer 503. ``malformed``: the balance
    body is HTML, not JSON. ``numeric_money``: balance values are JSON numbers
    instead of strings. ``cdrs``: the list account/cdrs returns (default: 400 No CDRS).
    """

    def __init__(self, host="127.0.0.1", port=0, ssl_context=None, registry=None, username="sandbox",
                 password="sandbox-password", account="MAG000001", funds="125.50", promofunds="10.00",
                 fail_times=0, malformed=False, numeric_money=False, cdrs=None):
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.registry = registry if registry is not None else NumberRegistry(account=account)
        self.api = RestApi(self.registry, username, password, account, funds, promofunds, fail_times=fail_times,
                           malformed=malformed, numeric_money=numeric_money, cdrs=cdrs)
        self._httpd = None
        self._thread = None

    @property
    def url(self):
        """Base URL as clients configure it (the certificate names localhost)."""
        return "%s://localhost:%d%s" % ("https" if self.ssl_context else "http", self.port, BASE_PATH)

    def start(self):
        self._httpd = _TlsHttpServer((self.host, self.port), self.ssl_context, self.api)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-serve", daemon=True)
        self._thread.start()
        LOG.info("REST listening on %s:%d", self.host, self.port)
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
