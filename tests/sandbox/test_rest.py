# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Behaviour of the sandbox REST API over real HTTPS on loopback, and its view of NTSAPI changes."""

from __future__ import annotations

import base64
import decimal
import http.client
import json
import logging
import socket

import pytest

from sandbox.ntsapi import NtsapiServer
from sandbox.registry import NumberRegistry
from sandbox.rest import RestServer

PASSWORD = "rest-pa55word"
ACCOUNT = "MAG000001"
WRONG = {"error": "Wrong username, password or account"}


@pytest.fixture(name="start")
def start_fixture(server_context):
    """start(**options) -> a running RestServer with the test PKI, stopped after the test."""
    servers = []

    def start(**options):
        server = RestServer(ssl_context=server_context, password=PASSWORD, account=ACCOUNT, **options)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(name="server")
def server_fixture(start):
    return start()


def basic(username="sandbox", password=PASSWORD):
    return "Basic " + base64.b64encode(("%s:%s" % (username, password)).encode("utf-8")).decode("ascii")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self, **options):
        return json.loads(self.body, **options)


@pytest.fixture(name="get")
def get_fixture(client_context):
    def get(server, path, authorization=None, method="GET"):
        connection = http.client.HTTPSConnection("localhost", server.port, context=client_context, timeout=10)
        try:
            headers = {"Authorization": basic() if authorization is None else authorization}
            connection.request(method, "/v1/" + path, headers={key: value for key, value in headers.items() if value})
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    return get


def test_balance_as_strings(server, get):
    response = get(server, "account/balance/" + ACCOUNT)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"funds": "125.50", "promofunds": "10.00"}


def test_balance_as_numbers_keeps_every_digit(start, get):
    response = get(start(numeric_money=True, funds="0.10", promofunds="3.00"), "account/balance/" + ACCOUNT)
    assert response.json(parse_float=decimal.Decimal) == {"funds": decimal.Decimal("0.10"), "promofunds": decimal.Decimal("3.00")}
    assert b'"0.10"' not in response.body and b"0.10" in response.body


@pytest.mark.parametrize("authorization", [
    basic(password="wrong"), basic(username="other"), basic(password=""), "Bearer token", "Basic !!notbase64", "",
])
def test_bad_credentials_get_401(server, get, authorization):
    response = get(server, "account/balance/" + ACCOUNT, authorization=authorization)
    assert response.status == 401
    assert response.json() == WRONG


@pytest.mark.parametrize("path", ["account/balance/MAG999999", "account/detail/MAG999999", "account/gettariff/other"])
def test_other_accounts_get_401(server, get, path):
    response = get(server, path)
    assert (response.status, response.json()) == (401, WRONG)


@pytest.mark.parametrize("path", ["account/nothing", "account/balance", "account/transfer/MAG000001/MAG000002/10.00", "v2/x"])
def test_unknown_paths_get_404_json(server, get, path):
    response = get(server, path)
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in response.json()


def test_paths_outside_v1_get_404(server, client_context):
    connection = http.client.HTTPSConnection("localhost", server.port, context=client_context, timeout=10)
    connection.request("GET", "/account/balance/" + ACCOUNT, headers={"Authorization": basic()})
    assert connection.getresponse().status == 404
    connection.close()


def test_only_get_is_served(server, get):
    assert get(server, "account/balance/" + ACCOUNT, method="POST").status == 405


def test_first_requests_fail_with_503_then_succeed(start, get):
    server = start(fail_times=2)
    statuses = [get(server, "account/balance/" + ACCOUNT).status for attempt in range(3)]
    assert statuses == [503, 503, 200]


def test_malformed_balance_is_not_json(start, get):
    response = get(start(malformed=True), "account/balance/" + ACCOUNT)
    assert response.status == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_read_endpoints(server, get):
    services = get(server, "account/services").json()
    assert ACCOUNT in services["accounts"]
    assert get(server, "account/detail/" + ACCOUNT).json()["account"] == ACCOUNT
    assert set(get(server, "account/gettariff/" + ACCOUNT).json()) == {"band", "restriction"}
    cdrs = get(server, "account/cdrs/" + ACCOUNT)
    assert (cdrs.status, cdrs.json()) == (400, {"error": "No CDRS"})


def test_keep_alive_serves_several_requests_on_one_connection(server, client_context):
    connection = http.client.HTTPSConnection("localhost", server.port, context=client_context, timeout=10)
    for request in range(3):
        connection.request("GET", "/v1/account/balance/" + ACCOUNT, headers={"Authorization": basic()})
        response = connection.getresponse()
        assert json.loads(response.read())["funds"] == "125.50"
    connection.close()


def test_requests_are_logged_without_passwords(server, get, caplog):
    with caplog.at_level(logging.INFO, logger="sandbox.rest"):
        get(server, "account/balance/" + ACCOUNT)
    messages = [record.getMessage() for record in caplog.records if record.name == "sandbox.rest"]
    assert any("GET /v1/account/balance/%s 200 user=sandbox" % ACCOUNT in message for message in messages)
    assert not any(PASSWORD in message or basic() in message for message in messages)


def test_plain_http_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
        plain.sendall(b"GET /v1/account/services HTTP/1.0\r\nAuthorization: " + basic().encode("ascii") + b"\r\n\r\n")
        received = b""
        try:
            while chunk := plain.recv(1000):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1" not in received and b"accounts" not in received


# -- the registry shared with NTSAPI ----------------------------------------------------


@pytest.fixture(name="ntsapi_session")
def ntsapi_session_fixture(server_context, client_context):
    """send(*lines) -> reply lines (one per command) from a sandbox NTSAPI sharing ``registry``."""
    registry = NumberRegistry()
    ntsapi = NtsapiServer(ssl_context=server_context, registry=registry, password=PASSWORD).start()
    raw = socket.create_connection(("127.0.0.1", ntsapi.port), timeout=10)
    sock = client_context.wrap_socket(raw, server_hostname="localhost")
    reader = sock.makefile("rb")
    reader.readline()

    def send(*lines):
        sock.sendall("".join(line + "\r\n" for line in lines).encode("ascii"))
        return [reader.readline().decode("ascii").rstrip("\r\n") for line in lines]

    assert send("AUTH sandbox " + PASSWORD) == ["0 Access granted. Welcome (cl=500)"]
    yield registry, send
    reader.close()
    sock.close()
    ntsapi.stop()


def test_number_status_reflects_ntsapi_changes(start, get, ntsapi_session):
    registry, send = ntsapi_session
    server = start(registry=registry)
    assert get(server, "number/status/01792100020").status == 400
    assert send("ACTI 01792100020", "SET 01792100020 2 S:441792100020@sip.example.com") == ["0 Number activated OK", "0 Number updated OK"]
    expiry = send("STAT 01792100020")[0].split()[3]
    status = get(server, "number/status/01792100020")
    assert status.status == 200
    assert status.json() == {"status": "active", "expiry": expiry, "targets": [{"index": 2, "value": "S:441792100020@sip.example.com"}]}
    send("DEAC 01792100020")
    assert get(server, "number/status/01792100020").json()["status"] == "inactive"


def test_number_status_of_other_accounts_numbers(start, get, ntsapi_session):
    server = start(registry=ntsapi_session[0])
    assert get(server, "number/status/01792000001").status == 400
    assert get(server, "number/status/not-a-number").status == 400


def test_number_status_of_a_ported_number_in_either_form(start, get, ntsapi_session):
    registry, send = ntsapi_session
    server = start(registry=registry)
    send("SET P1632960001 1 441792100021")
    for form in ("P1632960001", "01632960001"):
        assert get(server, "number/status/" + form).json()["targets"] == [{"index": 1, "value": "441792100021"}]


def test_block_info_reflects_ntsapi_blocks(start, get, ntsapi_session):
    registry, send = ntsapi_session
    server = start(registry=registry)
    assert get(server, "block/info/01792100030").status == 400
    first = send("BLKACTI 0179210003 10")[0].split()[1]
    assert get(server, "block/info/01792100035").json() == {"first": first, "qty": 10}
