# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Behaviour of the sandbox NTSAPI over real TLS sockets on loopback."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from sandbox.ntsapi import GOODBYE, GREETING, INVENTED, REFUSABLE, NtsapiServer
from sandbox.registry import NumberRegistry, expand_pool_entry

PASSWORD = "s3cret pass phrase"
REPLY_GRAMMAR = re.compile(r"^(\d)\s+(.*)$")
TAKEN = "01792000001"
PORTED = "01632960001"


@pytest.fixture(name="log_path")
def log_path_fixture(tmp_path):
    return tmp_path / "ntsapi.jsonl"


@pytest.fixture(name="start")
def start_fixture(server_context, log_path):
    """start(**options) -> a running NtsapiServer with the test PKI, stopped after the test."""
    servers = []

    def start(**options):
        options.setdefault("registry", NumberRegistry())
        server = NtsapiServer(ssl_context=server_context, password=PASSWORD, log_path=str(log_path), **options)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(name="server")
def server_fixture(start):
    return start()


class WireClient:
    """A minimal NTSAPI client that shows the wire as it is."""

    def __init__(self, port, context, eol="\n"):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.reader = self.sock.makefile("rb")
        self.eol = eol

    def raw_line(self):
        return self.reader.readline()

    def read_line(self):
        raw = self.raw_line()
        if not raw:
            raise EOFError("server closed the connection")
        return raw.decode("utf-8").rstrip("\r\n")

    def send(self, *lines):
        self.sock.sendall("".join(line + self.eol for line in lines).encode("utf-8"))

    def command(self, line):
        self.send(line)
        return self.read_line()

    def multi(self, line):
        """Reply lines up to and including the first non-zero one."""
        self.send(line)
        lines = [self.read_line()]
        while lines[-1].startswith("0"):
            lines.append(self.read_line())
        return lines

    def login(self):
        assert self.read_line() == GREETING
        assert self.command("AUTH sandbox " + PASSWORD) == "0 Access granted. Welcome (cl=500)"
        return self

    def closed_by_server(self):
        try:
            return self.raw_line() == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self):
        self.reader.close()
        self.sock.close()


@pytest.fixture(name="connect")
def connect_fixture(client_context):
    clients = []

    def connect(server, eol="\n"):
        client = WireClient(server.port, client_context, eol)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture(name="client")
def client_fixture(server, connect):
    return connect(server).login()


def failure(reply):
    """The digit of a reply that must be a failure, checked against the grammar."""
    match = REPLY_GRAMMAR.match(reply)
    assert match, reply
    assert match.group(1) != "0", reply
    return int(match.group(1))


def log_entries(log_path):
    return [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]


# -- registry configuration -------------------------------------------------------


@pytest.mark.parametrize("entry,expected", [
    ("01792100000-01792100002", ["01792100000", "01792100001", "01792100002"]),
    ("01792100005", ["01792100005"]),
    ("017921000", ["017921000%02d" % last for last in range(100)]),
    ("0169770000", ["0169770000"]),  # 10 digits is a whole (short) UK number, not a prefix
])
def test_pool_entries(entry, expected):
    assert expand_pool_entry(entry) == expected


@pytest.mark.parametrize("entry", ["01792100002-01792100000", "0179-01792100000", "+4412345", "0179", "abc"])
def test_bad_pool_entries(entry):
    with pytest.raises(ValueError):
        expand_pool_entry(entry)


def test_custom_pool_taken_and_ported(start, connect):
    registry = NumberRegistry(pool=["02079460000-02079460009"], taken=["02079460000"], ported=["01134960000"])
    client = connect(start(registry=registry)).login()
    assert client.command("ALLO 020794600__") == "0 02079460001 Allocated"
    assert client.command("ALLO 01792______") == "1 No number found for allocation"
    assert client.command("STAT P1134960000").startswith("0 P1134960000 Y ")


# -- session ----------------------------------------------------------------------


def test_greeting_is_the_published_line(server, connect):
    greeting = connect(server).read_line()
    assert greeting == "0 Magrathea NTS GW (ntsapi.c(V0.1))"
    assert REPLY_GRAMMAR.match(greeting)


def test_session_is_tls_from_the_first_byte(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
        plain.settimeout(0.5)
        with pytest.raises(socket.timeout):
            plain.recv(100)


def test_auth_with_right_credentials_is_welcomed(server, connect):
    client = connect(server)
    client.read_line()
    assert client.command("AUTH sandbox " + PASSWORD) == "0 Access granted. Welcome (cl=500)"
    assert client.command("STAT P" + PORTED[1:]).startswith("0 ")


def test_wrong_auth_gets_one_attempt_and_stays_unauthenticated(server, connect):
    client = connect(server)
    client.read_line()
    failure(client.command("AUTH sandbox wrong"))
    failure(client.command("AUTH sandbox " + PASSWORD))
    failure(client.command("STAT " + PORTED))


@pytest.mark.parametrize("line", ["STAT 01632960001", "ALLO 01792______", "ALIST 01792 3", "NOPE"])
def test_commands_before_auth_are_refused(server, connect, line):
    client = connect(server)
    client.read_line()
    failure(client.command(line))


def test_quit_says_goodbye_and_closes(server, connect):
    client = connect(server)
    client.read_line()
    assert client.command("QUIT") == "0 Many thanks. Goodbye"
    assert client.closed_by_server()


def test_unknown_command_is_a_failure(client):
    failure(client.command("FROB 01792100000"))


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_client_line_endings_are_both_accepted(server, connect, eol):
    client = connect(server, eol=eol).login()
    assert client.command("STAT P" + PORTED[1:]).startswith("0 P" + PORTED[1:] + " Y ")


@pytest.mark.parametrize("line_ending", ["\r\n", "\n"])
def test_reply_line_ending_is_configurable(start, connect, line_ending):
    client = connect(start(line_ending=line_ending))
    assert client.raw_line() == (GREETING + line_ending).encode("ascii")


def test_over_long_line_is_refused_and_closed(client):
    failure(client.command("STAT " + "0" * 5000))
    assert client.closed_by_server()


def test_stop_closes_open_sessions(server, client):
    server.stop()
    assert client.closed_by_server()


# -- allocation ------------------------------------------------------------------


def test_allocate_activate_deactivate_reactivate(client):
    allocated = client.command("ALLO 01792______")
    number = re.match(r"^0 (\d{11}) Allocated$", allocated).group(1)
    assert number.startswith("01792")
    assert client.command("ACTI " + number) == "0 Number activated OK"
    assert client.command("STAT " + number).startswith("0 %s Y " % number)
    assert client.command("ALLO " + number) == "1 No number found for allocation"
    assert client.command("DEAC " + number) == "0 Number deactivated OK"
    assert client.command("STAT " + number).startswith("0 %s N " % number)
    assert client.command("REAC " + number) == "0 Number reactivated OK"
    assert client.command("STAT " + number).startswith("0 %s Y " % number)


def test_allocation_of_an_exact_number(client):
    assert client.command("ALLO 02012300500") == "0 02012300500 Allocated"


def test_allocation_skips_numbers_of_other_accounts(client):
    assert client.command("ALLO " + TAKEN) == "1 No number found for allocation"
    assert client.command("ALLO 0179210000_") == "0 01792100000 Allocated"
    assert client.command("ALLO 0179210000_") == "0 01792100000 Allocated"  # ALLO reserves nothing
    assert client.command("ALLO 01792100007") == "1 No number found for allocation"


def test_allocation_with_nothing_matching(client):
    assert client.command("ALLO 09999______") == "1 No number found for allocation"


def test_allocation_pattern_must_be_padded_to_eleven(client):
    failure(client.command("ALLO 01792"))


def test_activation_refused_for_numbers_not_free(client):
    assert client.command("ACTI " + TAKEN) == "1 Number not activated"
    assert client.command("ACTI 01792100001") == "0 Number activated OK"
    assert client.command("ACTI 01792100001") == "1 Number not activated"


@pytest.mark.parametrize("configured", ["on the command line", "while running"])
def test_lost_race_between_allo_and_acti(start, connect, configured):
    server = start(registry=NumberRegistry(lost_allocations=1 if configured == "on the command line" else 0))
    client = connect(server).login()
    if configured == "while running":
        server.registry.lose_next_allocations(1)
    first = client.command("ALLO 01792______").split()[1]
    assert client.command("ACTI " + first) == "1 Number not activated"
    second = client.command("ALLO 01792______").split()[1]
    assert second != first
    assert client.command("ACTI " + second) == "0 Number activated OK"


def test_reactivation_fails_once_someone_else_took_the_number(server, client):
    client.command("ACTI 01792100002")
    client.command("DEAC 01792100002")
    server.registry.take_by_other_account("01792100002")
    failure(client.command("REAC 01792100002"))
    failure(client.command("STAT 01792100002"))


@pytest.mark.parametrize("line", [
    "STAT " + TAKEN, "SET %s 1 441234567890" % TAKEN, "DEAC " + TAKEN, "REAC " + TAKEN,
    "STAT 01792100003", "SET 01792100003 1 441234567890", "DEAC 01792100003", "REAC 01792100003",
    "SPIN 01792100003 1234", "FEAT 01792100003 D", "ORDE 01792100003 1 0000", "INFO 01792100003 GEN text",
    "INFO 01792100003 999 CREATE", "BLKINFO 01792100003", "BLKDEAC 01792100003",
])
def test_numbers_not_on_the_account_are_refused(client, line):
    failure(client.command(line))


@pytest.mark.parametrize("line", ["STAT 1234", "ACTI 0179210000x", "DEAC 01792_00000", "SET notanumber 1 441234567890"])
def test_malformed_numbers_are_refused(client, line):
    failure(client.command(line))


# -- STAT and SET ----------------------------------------------------------------


def test_stat_shows_three_slots_even_when_empty(client):
    client.command("ACTI 01792100004")
    empty = client.command("STAT 01792100004")
    assert re.match(r"^0 01792100004 Y \d{4}-\d{2}-\d{2} \|\|$", empty), empty
    assert client.command("SET 01792100004 2 V:box@example.com") == "0 Number updated OK"
    assert client.command("STAT 01792100004").endswith(" |V:box@example.com|")


@pytest.mark.parametrize("target", [
    "441792123456", "S:441792123456@sip.example.com", "s:441792123456@10.0.0.1:5060", "I:user:pa55@iax.example.com",
    "F:fax@example.com", "V:voicemail@example.co.uk", "E:441792123456@tls.example.com",
])
def test_set_accepts_each_target_form(client, target):
    client.command("ACTI 01792100005")
    for index in (1, 2, 3):
        assert client.command("SET 01792100005 %d %s" % (index, target)) == "0 Number updated OK"
    assert client.command("STAT 01792100005").endswith(" %s|%s|%s" % (target, target, target))


@pytest.mark.parametrize("args", [
    "1 +441792123456", "1 01792123456", "1 S:nohost", "1 S:user@", "1 I:user@iax.example.com", "1 F:not-an-email",
    "1 V:a@b", "1 X:user@example.com", "1 S:a|b@example.com", "0 441792123456", "4 441792123456", "x 441792123456",
    "1", "1 441792123456 extra",
])
def test_set_refuses_bad_targets_and_indexes(client, args):
    client.command("ACTI 01792100006")
    failure(client.command("SET 01792100006 " + args))
    assert client.command("STAT 01792100006").endswith(" ||")


def test_ported_numbers_use_the_p_form(client):
    ported = "P" + PORTED[1:]
    assert client.command("SET %s 1 S:44%s@sip.example.com" % (ported, PORTED[1:])) == "0 Number updated OK"
    assert client.command("ORDE %s 1 0000" % ported).startswith("0 ")
    assert re.match(r"^0 %s Y \d{4}-\d\d-\d\d S:44%s@sip.example.com\|\|$" % (ported, PORTED[1:]), client.command("STAT " + ported))
    failure(client.command("STAT " + PORTED))
    failure(client.command("SET %s 1 441234567890" % PORTED))
    failure(client.command("ACTI " + ported))
    failure(client.command("DEAC " + ported))
    failure(client.command("STAT P1792100000"))


# -- ORDE, SPIN, FEAT, INFO GEN ----------------------------------------------------


def test_orde_spin_feat_on_an_own_number(server, client):
    client.command("ACTI 01792100008")
    assert client.command("ORDE 01792100008 2 0900-1730,1800").startswith("0 ")
    failure(client.command("ORDE 01792100008 2 2500"))
    failure(client.command("ORDE 01792100008 4 0000"))
    assert client.command("SPIN 01792100008 4321").startswith("0 ")
    failure(client.command("SPIN 01792100008 12"))
    assert client.command("FEAT 01792100008 D").startswith("0 ")
    assert client.command("FEAT 01792100008 J").startswith("0 ")
    assert client.command("FEAT 01792100008 -D").startswith("0 ")
    failure(client.command("FEAT 01792100008 DD"))
    assert client.command("FEAT 01792100008") == "0 Features J"
    assert client.command("SPIN 01792100008").startswith("0 ")
    configured = server.registry.configuration("01792100008")
    assert configured["order"] == {2: "0900-1730,1800"}
    assert configured["pin"] == ""
    assert configured["features"] == {"J"}


def test_info_gen_keeps_the_whole_text(server, client):
    client.command("ACTI 01792100009")
    assert client.command("INFO 01792100009 GEN Magrathea, 14 Shute End, RG40 1BJ") == "0 Information updated"
    assert server.registry.configuration("01792100009")["general_info"] == "Magrathea, 14 Shute End, RG40 1BJ"
    failure(client.command("INFO 01792100009 GEN"))
    failure(client.command("INFO 01792100009 OTHER text"))


# -- INFO 999 ----------------------------------------------------------------------

FIELD_LIMITS = {"TITLE": 20, "FORENAME": 20, "NAME": 50, "HONOURS": 30, "BUSSUFFIX": 50, "PREMISES": 60, "THOROUGHFARE": 55, "LOCALITY": 30}


@pytest.fixture(name="emergency_number")
def emergency_number_fixture(client):
    client.command("ACTI 01792100010")
    assert client.command("INFO 01792100010 999 CREATE").startswith("0 ")
    return "01792100010"


def test_999_status_without_a_record(client):
    client.command("ACTI 01792100011")
    assert client.command("INFO 01792100011 999 STATUS") == "9 No record found"
    assert failure(client.command("INFO 01792100011 999 NAME Dent")) >= 2
    assert client.multi("INFO 01792100011 999 DATA") == ["9 No record found"]


@pytest.mark.parametrize("field,limit", sorted(FIELD_LIMITS.items()))
def test_999_field_length_limits(client, emergency_number, field, limit):
    assert client.command("INFO %s 999 %s %s" % (emergency_number, field, "x" * limit)).startswith("0 ")
    assert failure(client.command("INFO %s 999 %s %s" % (emergency_number, field, "y" * (limit + 1)))) >= 2
    assert "0 %s %s" % (field, "x" * limit) in client.multi("INFO %s 999 DATA" % emergency_number)


@pytest.mark.parametrize("postcode,stored", [("RG40 1BJ", "RG40 1BJ"), ("rg401bj", "RG40 1BJ"), ("EC1A 1BB", "EC1A 1BB"), ("M1 1AE", "M1 1AE")])
def test_999_uk_postcodes_accepted(client, emergency_number, postcode, stored):
    assert client.command("INFO %s 999 POSTCODE %s" % (emergency_number, postcode)).startswith("0 ")
    assert "0 POSTCODE " + stored in client.multi("INFO %s 999 DATA" % emergency_number)


@pytest.mark.parametrize("postcode", ["12345", "RG40", "QQ1 1AA", "SW1A 1BBB", "90210-1234"])
def test_999_non_uk_postcodes_refused(client, emergency_number, postcode):
    assert failure(client.command("INFO %s 999 POSTCODE %s" % (emergency_number, postcode))) >= 2


def test_999_validate_needs_name_and_postcode(client, emergency_number):
    assert failure(client.command("INFO %s 999 VALIDATE" % emergency_number)) >= 2
    client.command("INFO %s 999 NAME Arthur Dent" % emergency_number)
    assert failure(client.command("INFO %s 999 VALIDATE" % emergency_number)) >= 2
    client.command("INFO %s 999 POSTCODE RG40 1BJ" % emergency_number)
    assert client.command("INFO %s 999 STATUS" % emergency_number) == "1 Info received"
    assert client.command("INFO %s 999 VALIDATE" % emergency_number) == "0 Information Valid"
    assert client.command("INFO %s 999 STATUS" % emergency_number) == "0 Accepted"


def test_999_data_is_multi_line_in_field_order(client, emergency_number):
    client.command("INFO %s 999 POSTCODE RG40 1BJ" % emergency_number)
    client.command("INFO %s 999 TITLE Mr" % emergency_number)
    client.command("INFO %s 999 PREMISES 14 Shute End" % emergency_number)
    lines = client.multi("INFO %s 999 DATA" % emergency_number)
    assert lines[:-1] == ["0 TITLE Mr", "0 PREMISES 14 Shute End", "0 POSTCODE RG40 1BJ"]
    failure(lines[-1])
    assert client.command("STAT " + emergency_number).startswith("0 ")  # the stream is still in step


def test_999_deferred_validation(start, connect):
    client = connect(start(registry=NumberRegistry(deferred_999=True))).login()
    client.command("ACTI 01792100012")
    for line in ("CREATE", "NAME Arthur Dent", "POSTCODE RG40 1BJ"):
        client.command("INFO 01792100012 999 " + line)
    assert client.command("INFO 01792100012 999 VALIDATE") == "1 Parsed OK. Check later for status."
    assert client.command("INFO 01792100012 999 STATUS") == "3 Info submitted"
    assert client.command("INFO 01792100012 999 STATUS") == "0 Accepted"


def test_999_unknown_subcommand(client, emergency_number):
    assert failure(client.command("INFO %s 999 SHOESIZE 9" % emergency_number)) >= 2


def test_999_on_a_ported_number(client):
    ported = "P" + PORTED[1:]
    assert client.command("INFO %s 999 CREATE" % ported).startswith("0 ")
    assert client.command("INFO %s 999 STATUS" % ported) == "1 Info received"


# -- ALIST and blocks ---------------------------------------------------------------


def test_alist_lists_free_numbers_and_allocates_nothing(client):
    lines = client.multi("ALIST 01792 5")
    assert len(lines) == 6
    failure(lines[-1])
    numbers = [line.split()[1] for line in lines[:-1]]
    assert all(re.match(r"^0 01792\d{6}$", line) for line in lines[:-1])
    assert len(set(numbers)) == 5
    assert TAKEN not in numbers
    assert client.command("ACTI " + numbers[0]) == "0 Number activated OK"


def test_alist_with_nothing_available(client):
    assert client.multi("ALIST 09999 5") == ["1 No range found for allocation"]


def test_block_lifecycle(client):
    assert client.command("BLKACTI 02012 10") == "0 02012300010 02012300019"  # 02012300002 is taken
    assert client.command("BLKINFO 02012300015") == "0 02012300010 10"
    assert client.command("STAT 02012300019").startswith("0 02012300019 Y ")
    failure(client.command("DEAC 02012300015"))
    failure(client.command("BLKDEAC 02012300015"))
    assert client.command("BLKDEAC 02012300010").startswith("0 ")
    assert client.command("STAT 02012300015").startswith("0 02012300015 N ")
    assert client.command("BLKINFO 02012300015") == "1 Account not ACTIve"
    assert client.command("BLKREAC 02012300010").startswith("0 ")
    assert client.command("BLKINFO 02012300011") == "0 02012300010 10"


def test_block_not_found(client):
    assert client.command("BLKINFO 01632960001") == "1 Account not ACTIve"
    assert client.command("BLKACTI 09999 10") == "1 No range found for allocation"
    failure(client.command("BLKACTI 01792 7"))


def test_block_reactivation_fails_when_a_member_was_taken(server, client):
    first = client.command("BLKACTI 01792 10").split()[1]
    client.command("BLKDEAC " + first)
    server.registry.take_by_other_account(first[:-1] + "5")
    failure(client.command("BLKREAC " + first))


# -- pipelining --------------------------------------------------------------------


def test_pipelined_stats_are_answered_in_order(client):
    first = client.command("BLKACTI 01792 100").split()[1]
    numbers = ["%011d" % (int(first) + offset) for offset in range(100)]
    random.Random(7).shuffle(numbers)
    client.send(*("STAT " + number for number in numbers))
    replies = [client.read_line() for number in numbers]
    assert [reply.split()[1] for reply in replies] == numbers
    assert all(reply.split()[2] == "Y" for reply in replies)


def test_pipelined_session_from_greeting_to_quit(server, connect):
    client = connect(server, eol="\r\n")
    client.send("AUTH sandbox " + PASSWORD, "ALLO 0201230050_", "ALIST 0201230060 2", "STAT " + TAKEN, "QUIT")
    lines = []
    while True:
        raw = client.raw_line()
        if not raw:
            break
        lines.append(raw.decode("ascii").rstrip("\r\n"))
    assert lines[:3] == [GREETING, "0 Access granted. Welcome (cl=500)", "0 02012300500 Allocated"]
    assert all(line.startswith("0 0201230060") for line in lines[3:5])
    assert lines[5].startswith("1 ")
    assert lines[6].startswith("1 ")
    assert lines[7:] == ["0 Many thanks. Goodbye"]


# -- command log -----------------------------------------------------------------


def test_log_records_commands_and_redacts_the_password(server, connect, log_path):
    first = connect(server).login()
    first.command("STAT " + TAKEN)
    second = connect(server)
    second.read_line()
    second.command("AUTH sandbox wrong-" + PASSWORD)
    entries = log_entries(log_path)  # read while the server runs: flushed per line
    assert PASSWORD not in log_path.read_text(encoding="utf-8")
    assert [entry["command"] for entry in entries] == ["AUTH sandbox ********", "STAT " + TAKEN, "AUTH sandbox ********"]
    assert entries[0]["reply"] == "0 Access granted. Welcome (cl=500)"
    assert entries[1]["reply"].startswith("1 ")
    assert entries[0]["conn"] == entries[1]["conn"] != entries[2]["conn"]
    assert all(set(entry) == {"time", "conn", "command", "reply"} for entry in entries)


def test_log_of_a_multi_line_reply_keeps_the_first_line(client, log_path):
    lines = client.multi("ALIST 01792 3")
    last = log_entries(log_path)[-1]
    assert (last["command"], last["reply"]) == ("ALIST 01792 3", lines[0])


# -- fault modes -----------------------------------------------------------------


def test_delay_before_each_reply(start, connect):
    client = connect(start(delay=0.3))
    began = time.monotonic()
    client.login()
    assert time.monotonic() - began >= 0.6


def test_max_connections_refuses_extra_sessions(start, connect, log_path):
    server = start(max_connections=1)
    first = connect(server)
    assert first.read_line() == GREETING
    extra = connect(server)
    failure(extra.read_line())
    assert extra.closed_by_server()
    assert log_entries(log_path)[-1]["command"] is None
    first.close()
    deadline = time.monotonic() + 5
    while True:
        later = connect(server)
        line = later.read_line()
        if line == GREETING or time.monotonic() > deadline:
            break
    assert line == GREETING


def test_drop_after_closes_without_reply(start, connect, log_path):
    client = connect(start(drop_after=2)).login()
    assert client.command("STAT " + "P" + PORTED[1:]).startswith("0 ")
    client.send("STAT " + "P" + PORTED[1:])
    assert client.closed_by_server()
    assert log_entries(log_path)[-1]["reply"] is None


def test_garbage_after_breaks_the_grammar(start, connect):
    client = connect(start(garbage_after=1)).login()
    reply = client.command("STAT " + "P" + PORTED[1:])
    assert reply and not REPLY_GRAMMAR.match(reply)


# -- following the public clients ---------------------------------------------------


def test_alten_names_ten_free_numbers_and_reserves_nothing(server, client):
    reply = client.command("ALTEN 01792______")
    match = re.fullmatch(r"0 (\d{10}_) Range found", reply)
    assert match, reply
    stem = match.group(1)[:-1]
    for digit in "0123456789":  # as Magrathea::API 0.9 does: ALLO and ACTI for each of the ten
        assert client.command("ALLO %s%s" % (stem, digit)) == "0 %s%s Allocated" % (stem, digit)
        assert client.command("ACTI %s%s" % (stem, digit)) == "0 Number activated OK"
    assert client.command("ALTEN %s_" % stem) == "1 No range found for allocation"
    assert client.command("ALTEN 09999______") == "1 No range found for allocation"
    failure(client.command("ALTEN 01792"))


def test_ten_digit_national_numbers_are_allocated(client):
    assert client.command("ALLO 0169770005") == "0 0169770005 Allocated"
    assert client.command("ACTI 0169770005") == "0 Number activated OK"
    assert client.command("STAT 0169770005").startswith("0 0169770005 Y ")
    assert client.command("ALTEN 016977001_") == "0 016977001_ Range found"
    assert "0 0169770006" in client.multi("ALIST 016977000 10")


def test_stat_per_target_as_magrathea_api_reads_it(start, connect):
    client = connect(start(stat_format="per-target")).login()
    client.command("ACTI 01792100004")
    client.command("SET 01792100004 1 S:441792100004@sip.example.com")
    client.command("SET 01792100004 3 F:fax@example.com")
    reply = client.command("STAT 01792100004")
    assert re.fullmatch(r"0 01792100004 Y (\d{4}-\d\d-\d\d) S:441792100004@sip\.example\.com\|\|01792100004 Y \1 F:fax@example\.com", reply), reply


def test_framing_per_read_takes_a_command_without_a_line_ending(start, connect, log_path):
    client = connect(start(framing="read"))
    assert client.read_line() == GREETING
    client.sock.sendall(("AUTH sandbox " + PASSWORD).encode())
    assert client.read_line() == "0 Access granted. Welcome (cl=500)"
    client.sock.sendall(b"STAT P1632960001")
    assert client.read_line().startswith("0 P1632960001 Y ")
    client.sock.sendall(b"STAT P1632960001\r\nSTAT P1632960002\r\n")  # one read: the second line is never seen
    assert client.read_line().startswith("0 P1632960001 Y ")
    client.sock.sendall(b"QUIT\r\n")
    assert client.read_line() == GOODBYE
    assert [entry["command"] for entry in log_entries(log_path)] == ["AUTH sandbox ********", "STAT P1632960001", "STAT P1632960001", "QUIT"]


@pytest.mark.parametrize("refused, line", [
    ("feat-list", "FEAT 01792100008"), ("feat-off", "FEAT 01792100008 -D"), ("orde-periods", "ORDE 01792100008 1 0800-1800"),
])
def test_invented_behaviours_can_be_refused(start, connect, refused, line):
    client = connect(start(refuse=[refused])).login()
    client.command("ACTI 01792100008")
    failure(client.command(line))
    assert client.command("FEAT 01792100008 D") == "0 Feature D enabled"


def test_every_invented_behaviour_says_why_and_only_those_can_be_refused():
    assert set(REFUSABLE) <= set(INVENTED)
    assert all(what and why for what, why in INVENTED.values())
    with pytest.raises(ValueError, match="cannot refuse"):
        NtsapiServer(refuse=["stat-format"])


def test_the_log_masks_iax2_secrets(client, log_path):
    client.command("ACTI 01792100009")
    assert client.command("SET 01792100009 1 I:pbx:hunter2secret@iax.example.com") == "0 Number updated OK"
    assert "hunter2secret" in client.command("STAT 01792100009")
    text = log_path.read_text(encoding="utf-8")
    assert "hunter2secret" not in text and "I:pbx:********@iax.example.com" in text


# -- clients nobody here wrote --------------------------------------------------------

PHP_CLIENT = r"""<?php
// The guide's client: fsockopen("ssl://...") and one command per line.
$fp = fsockopen("ssl://localhost", (int)getenv("NTSAPI_PORT"), $errno, $errstr, 10);
if (!$fp) { fwrite(STDERR, "connect: $errstr\n"); exit(2); }
echo fgets($fp);
fwrite($fp, "AUTH " . getenv("NTSAPI_USER") . " " . getenv("NTSAPI_PASSWORD") . "\r\n");
echo fgets($fp);
fwrite($fp, "STAT P1632960001\r\n");
echo fgets($fp);
fwrite($fp, "QUIT\r\n");
echo fgets($fp);
fclose($fp);
"""


def _client_env(server, **extra):
    return dict(os.environ, NTSAPI_PORT=str(server.port), NTSAPI_USER="sandbox", NTSAPI_PASSWORD=PASSWORD, **extra)


def test_the_guides_php_client(server, pki, tmp_path):
    script = tmp_path / "client.php"
    script.write_text(PHP_CLIENT)
    done = subprocess.run(["php", "-d", "openssl.cafile=" + pki["ca_file"], str(script)], env=_client_env(server),
                          capture_output=True, text=True, timeout=60, check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == GREETING and lines[1] == "0 Access granted. Welcome (cl=500)"
    assert lines[2].startswith("0 P1632960001 Y ") and lines[3] == GOODBYE
    untrusted = subprocess.run(["php", str(script)], env=_client_env(server), capture_output=True, text=True, timeout=60, check=False)
    assert untrusted.returncode != 0 and "certificate verify failed" in untrusted.stderr + untrusted.stdout


def test_openssl_s_client(server, pki):
    done = subprocess.run(["openssl", "s_client", "-quiet", "-verify_return_error", "-verify_hostname", "localhost", "-CAfile", pki["ca_file"],
                           "-connect", "127.0.0.1:%d" % server.port],
                          input="AUTH sandbox %s\nSTAT P1632960001\nQUIT\n" % PASSWORD, capture_output=True, text=True, timeout=60, check=False)
    lines = done.stdout.splitlines()
    assert lines[:2] == [GREETING, "0 Access granted. Welcome (cl=500)"] and lines[2].startswith("0 P1632960001 Y ")
    assert lines[3] == GOODBYE


# A client written the way Net::Magrathea 0.03 talks (Net::Telnet without telnet mode, waitfor on the published
# replies, a plain TCP connection that a TLS tunnel carries): Net::Magrathea itself is on CPAN only, which this
# machine cannot reach, so this script follows its exchange with Debian's Net::Telnet.
NET_TELNET_CLIENT = r"""
use strict; use warnings; use Net::Telnet;
my $t = Net::Telnet->new(Host => '127.0.0.1', Port => $ENV{TUNNEL_PORT}, Telnetmode => 0, Timeout => 10);
$t->waitfor('/0 Magrathea NTS GW \(ntsapi.c\(V0.1\)\)/') or die "no greeting\n";
$t->print("AUTH $ENV{NTSAPI_USER} $ENV{NTSAPI_PASSWORD}");
$t->getline;
$t->getline =~ m{0 Access granted. Welcome \(cl=500\)} or die 'AUTH: ' . $t->lastline;
$t->print('ALLO 02012300___');
my (undef, $match) = $t->waitfor('/0\s+\d+\s+Allocated/');
my ($number) = $match =~ m{(\d\d+)};
print "allocated $number\n";
for my $step (["ACTI $number", '0 Number activated OK'], ["SET $number 1 S:44" . substr($number, 1) . '@sip.example.com', '0 Number updated OK'],
              ["STAT $number", '0\s+\d+\s+.*'], ["INFO $number GEN Example Widgets, Swansea", '0 Information updated'],
              ["DEAC $number", '0 Number deactivated OK']) {
    $t->print($step->[0]);
    my (undef, $got) = $t->waitfor("/$step->[1]/") or die "$step->[0]: " . $t->lastline;
    print "$got\n";
}
$t->print('QUIT');
$t->getline;
print $t->getline;
"""


class TlsTunnel:
    """Plain TCP on 127.0.0.1 carried over TLS to ``port``, one connection at a time (what stunnel or socat would do)."""

    def __init__(self, port, context):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target, self.context = port, context
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        plain, dummy = self.listener.accept()
        upstream = self.context.wrap_socket(socket.create_connection(("127.0.0.1", self.target), timeout=10), server_hostname="localhost")
        pump = threading.Thread(target=self._pump, args=(upstream, plain), daemon=True)
        pump.start()
        self._pump(plain, upstream)
        pump.join(10)

    @staticmethod
    def _pump(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def test_a_net_magrathea_style_perl_client_through_a_tls_tunnel(server, client_context, tmp_path):
    tunnel = TlsTunnel(server.port, client_context)
    try:
        script = tmp_path / "client.pl"
        script.write_text(NET_TELNET_CLIENT)
        done = subprocess.run(["perl", str(script)], env=_client_env(server, TUNNEL_PORT=str(tunnel.port)),
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        tunnel.close()
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    number = lines[0].split()[1]
    assert re.fullmatch(r"020123\d{5}", number)
    assert lines[1:] == ["0 Number activated OK", "0 Number updated OK", lines[3], "0 Information updated", "0 Number deactivated OK", GOODBYE]
    assert re.fullmatch(r"0 %s Y \d{4}-\d\d-\d\d S:44%s@sip\.example\.com\|\|" % (number, number[1:]), lines[3]), lines[3]
