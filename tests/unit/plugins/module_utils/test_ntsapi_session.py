# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The NTSAPI session over real TLS: greeting, one AUTH, deadlines, pipelining, framing, its fall-back, faults, raw command runs."""

from __future__ import annotations

import re
import socket
import ssl
import threading

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _ntsapi_reads, _ntsapi_session, _tls
from ansible_collections.magrathea.secure.sandbox import pki

PASSWORD = 'Sandbox-Secret-42'


# -- a scripted NTSAPI server over TLS --------------------------------------------------------


class ScriptedServer:
    """NTSAPI over TLS on 127.0.0.1 that records what arrives in each recv() and misbehaves on request.

    Faults apply to the first connection only, so a client's fall-back session is served normally.
    ``close_after``/``garbage_after``/``out_of_step_at``: command count (AUTH included) after which the
    server closes, answers garbage, or answers a STAT about another number. ``first_line_only``: each
    recv() is answered for its first line only (a server that frames a command per read). ``silent``: no reply after AUTH.
    ``trickle``: seconds between the bytes of every line sent after the first ``trickle_after`` lines (greeting included).
    ``busy_connections``: indexes of connections greeted with a refusal; ``auth_refused_from``: the first connection whose AUTH fails.
    """

    def __init__(self, tmp_path, authority, numbers=(), close_after=0, garbage_after=0, out_of_step_at=0,
                 first_line_only=False, silent=False, every_connection=False, greeting='0 Magrathea NTS GW (ntsapi.c(V0.1))',
                 trickle=0.0, trickle_after=0, busy_connections=(), auth_refused_from=None):
        certificate, key = authority.issue()
        self.certificate = certificate
        self.context = pki.issued_server_context(certificate, key, str(tmp_path))
        self.numbers = dict(numbers)
        self.close_after = close_after
        self.garbage_after = garbage_after
        self.out_of_step_at = out_of_step_at
        self.first_line_only = first_line_only
        self.silent = silent
        self.every_connection = every_connection
        self.greeting = greeting
        self.trickle = trickle
        self.trickle_after = trickle_after
        self.busy_connections = busy_connections
        self.auth_refused_from = auth_refused_from
        self.connections = []  # per connection: list of recv() chunks, each a list of lines
        self.handshakes = 0
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def lines(self, connection=None):
        chunks = self.connections if connection is None else [self.connections[connection]]
        return [line for conn in chunks for chunk in conn for line in chunk]

    def _accept(self):
        while not self.stopping.is_set():
            try:
                raw, dummy = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.handshakes += 1
        chunks = []
        index = len(self.connections)
        self.connections.append(chunks)
        faulty = index == 0 or self.every_connection
        try:
            if index in self.busy_connections:
                tls.sendall(b'1 Too many connections: try again later\r\n')
                return
            self._session(tls, chunks, faulty, index)
        except (ssl.SSLError, OSError):
            pass
        finally:
            tls.close()

    def _send(self, tls, lines, sent):
        data = ''.join(text + '\r\n' for text in lines).encode()
        if not self.trickle or sent < self.trickle_after:
            tls.sendall(data)
            return
        for index in range(len(data)):
            if self.stopping.wait(self.trickle):
                return
            tls.sendall(data[index:index + 1])

    def _session(self, tls, chunks, faulty, index):
        self._send(tls, [self.greeting], 0)
        buffer, count = b'', 0
        while True:
            data = tls.recv(65536)
            if not data:
                return
            buffer += data
            *complete, buffer = buffer.split(b'\n')
            lines = [line.rstrip(b'\r').decode() for line in complete]
            if not lines:
                continue
            chunks.append(lines)
            if faulty and self.first_line_only and count >= 1:
                lines = lines[:1]
            for line in lines:
                count += 1
                if faulty and self.close_after and count > self.close_after:
                    return
                if faulty and self.silent and count > 1:
                    continue
                if faulty and self.garbage_after and count > self.garbage_after:
                    reply = ['Magrathea gateway hiccup']
                else:
                    reply = self.respond(line, out_of_step=faulty and count == self.out_of_step_at)
                    if line.startswith('AUTH') and self.auth_refused_from is not None and index >= self.auth_refused_from:
                        reply = ['1 Access denied']
                self._send(tls, reply, count)
                if line == 'QUIT':
                    return

    def respond(self, line, out_of_step=False):
        words = line.split()
        verb = words[0] if words else ''
        if verb == 'AUTH':
            return ['0 Access granted. Welcome (cl=500)' if len(words) == 3 and words[2] == PASSWORD else '1 Access denied']
        if verb == 'QUIT':
            return ['0 Many thanks. Goodbye']
        if verb == 'STAT':
            number = words[1]
            if out_of_step:
                number = number[:-1] + ('0' if number[-1] != '0' else '1')
            if words[1] in self.numbers:
                return ['0 %s Y 2030-01-31 %s' % (number, self.numbers[words[1]])]
            return ['1 Number %s is not allocated to this account' % words[1]]
        if verb == 'ALIST':
            return ['0 %s%s' % (words[1], suffix) for suffix in ('01', '02', '03')] + ['1 End of list']
        if verb == 'INFO' and words[-1] == 'DATA':
            return ['0 NAME Example Widgets', '0 POSTCODE SA1 1AA', '1 End of data']
        return ['0 OK %s' % verb]

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture(name='serve')
def serve_fixture(authority, tmp_path):
    servers = []

    def start(**options):
        server = ScriptedServer(tmp_path, authority, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def session_for(server, ca_file, depth=32, timeout=5, password=PASSWORD, fingerprint=None):
    endpoint = _tls.Endpoint('localhost', server.port, ca_path=ca_file, timeout=timeout, fingerprint=fingerprint)
    return _ntsapi_session.NtsapiSession(endpoint, 'acct', password, pipeline_depth=depth)


NUMBERS = {'0179210%04d' % index: 'S:44179210%04d@sip.example.com||' % index for index in range(200)}


def test_credentials_that_cannot_travel_on_the_auth_line_are_refused():
    endpoint = _tls.Endpoint('localhost', 777)
    with pytest.raises(ValueError) as info:
        _ntsapi_session.NtsapiSession(endpoint, 'acct', 'two words')
    assert 'two words' not in str(info.value)
    with pytest.raises(ValueError):
        _ntsapi_session.NtsapiSession(endpoint, '', PASSWORD)


# -- the session on the wire --------------------------------------------------------------------


def test_session_greets_authenticates_once_reads_and_quits(serve, ca_file):
    server = serve(numbers=NUMBERS)
    with session_for(server, ca_file) as session:
        assert session.greeting == 'Magrathea NTS GW (ntsapi.c(V0.1))'
        reply = session.run('STAT 01792100001')
        alist = session.query(['ALIST 01792 3'])[0]
        data = session.run('INFO 01792100001 999 DATA')
    assert (reply.code, reply.message) == (0, '01792100001 Y 2030-01-31 S:441792100001@sip.example.com||')
    assert (alist.code, alist.lines, alist.message) == (0, ['0179201', '0179202', '0179203'], 'End of list')
    assert data.lines == ['NAME Example Widgets', 'POSTCODE SA1 1AA']
    lines = server.lines()
    assert [line.split()[0] for line in lines] == ['AUTH', 'STAT', 'ALIST', 'INFO', 'QUIT']
    assert lines[0] == 'AUTH acct ' + PASSWORD


def test_wrong_password_is_one_auth_and_a_clear_error(serve, ca_file):
    server = serve()
    with pytest.raises(_tls.AuthenticationError) as info:
        session_for(server, ca_file, password='Wrong-Password-1').open()
    message = str(info.value)
    assert 'localhost:%d' % server.port in message and 'Not retried' in message
    assert 'Wrong-Password-1' not in message
    assert [line.split()[0] for line in server.lines()] == ['AUTH']
    assert len(server.connections) == 1


def test_pin_mismatch_sends_nothing(serve, ca_file):
    server = serve()
    with pytest.raises(_tls.PinMismatchError):
        session_for(server, ca_file, fingerprint='00' * 32).open()
    assert server.lines() == []


def test_pin_match_connects(serve, ca_file):
    server = serve(numbers=NUMBERS)
    pin = pki.fingerprints(server.certificate)['sha256']
    with session_for(server, ca_file, fingerprint=pin) as session:
        assert session.run('STAT 01792100001').ok


def test_pipelined_reads_come_back_in_order_and_travel_together(serve, ca_file):
    server = serve(numbers=NUMBERS)
    commands = ['STAT 0179210%04d' % index for index in range(200)] + ['STAT 01792999999']
    with session_for(server, ca_file, depth=32) as session:
        replies = session.query(commands)
        assert session.warnings == []
    assert [reply.command for reply in replies] == commands
    assert all(reply.message.startswith(command.split()[1]) for reply, command in zip(replies[:200], commands))
    assert replies[-1].code == 1
    largest_burst = max(len(chunk) for chunk in server.connections[0])
    assert 8 <= largest_burst <= 32


def test_lock_step_depth_one_sends_one_command_per_reply(serve, ca_file):
    server = serve(numbers=NUMBERS)
    with session_for(server, ca_file, depth=1) as session:
        replies = session.query(['STAT 0179210%04d' % index for index in range(20)])
    assert all(reply.ok for reply in replies)
    assert max(len(chunk) for chunk in server.connections[0]) == 1


def test_mutating_commands_are_never_pipelined(serve, ca_file):
    server = serve(numbers=NUMBERS)
    with session_for(server, ca_file) as session:
        with pytest.raises(ValueError, match='never pipelined'):
            session.query(['STAT 01792100001', 'SET 01792100001 1 441234567890'])
        for index in range(5):
            assert session.run('SET 0179210%04d 1 441234567890' % index).ok
    assert max(len(chunk) for chunk in server.connections[0]) == 1
    assert not any(line.startswith('SET') for chunk in server.connections[0] for line in chunk if len(chunk) > 1)


@pytest.mark.parametrize('fault, reason', [
    (dict(close_after=10), 'closed the connection'),
    (dict(garbage_after=10), 'outside the NTSAPI grammar'),
    (dict(out_of_step_at=10), 'out of step'),
])
def test_pipelining_falls_back_to_lock_step_with_a_warning(serve, ca_file, monkeypatch, fault, reason):
    monkeypatch.setattr(_ntsapi_session, 'PIPELINE_STALL', 0.5)
    server = serve(numbers=NUMBERS, **fault)
    commands = ['STAT 0179210%04d' % index for index in range(60)]
    with session_for(server, ca_file) as session:
        replies = session.query(commands)
        later = session.query(commands[:5])
        assert len(session.warnings) == 1
        assert reason in session.warnings[0] and 'one command at a time' in session.warnings[0]
        assert 'localhost:%d' % server.port in session.warnings[0]
    assert [reply.message.split()[0] for reply in replies] == [command.split()[1] for command in commands]
    assert all(reply.ok for reply in later)
    assert len(server.connections) == 2
    assert [line.split()[0] for line in server.lines(1)][0] == 'AUTH'
    assert max(len(chunk) for chunk in server.connections[1]) == 1


@pytest.mark.parametrize('fault, error, text', [
    (dict(close_after=3), _tls.MagratheaConnectionError, 'closed the connection while we waited for the reply to STAT 01792100002'),
    (dict(garbage_after=3), _tls.ProtocolError, 'answered STAT 01792100002 with a line outside the NTSAPI grammar'),
    (dict(silent=True), _tls.MagratheaTimeout, 'sent no reply to STAT 01792100000'),
])
def test_lock_step_faults_are_clear_errors(serve, ca_file, fault, error, text):
    server = serve(numbers=NUMBERS, every_connection=True, **fault)
    session = session_for(server, ca_file, depth=1, timeout=0.5)
    with pytest.raises(error) as info:
        with session:
            for index in range(5):
                session.run('STAT 0179210%04d' % index)
    message = str(info.value)
    assert text in message and 'localhost:%d' % server.port in message
    assert PASSWORD not in message


def test_a_fall_back_that_fails_again_is_an_error_naming_the_command(serve, ca_file):
    server = serve(numbers=NUMBERS, every_connection=True, close_after=5)
    with pytest.raises(_tls.MagratheaConnectionError, match=r'localhost:\d+ closed the connection while we waited for the reply to STAT 0179210000[4-9]'):
        with session_for(server, ca_file) as session:
            session.query(['STAT 0179210%04d' % index for index in range(20)])
    assert len(server.connections) == 2


def test_a_lost_mutating_reply_says_it_may_have_taken_effect(serve, ca_file):
    server = serve(numbers=NUMBERS, close_after=1)
    with pytest.raises(_tls.MagratheaConnectionError, match='may or may not have taken effect'):
        with session_for(server, ca_file) as session:
            session.run('SET 01792100001 1 441234567890')
    assert len(server.connections) == 1


# -- running a user's raw command list ------------------------------------------------------------


def test_raw_commands_stop_at_the_first_refusal(serve, ca_file):
    server = serve(numbers=NUMBERS)
    with session_for(server, ca_file) as session:
        outcome = _ntsapi_reads.run_raw_commands(session, ['STAT 01792100001', 'STAT 01792999999', 'DEAC 01792100001'])
    assert outcome.failed['command'] == 'STAT 01792999999' and outcome.failed['code'] == 1
    assert len(outcome.results) == 2 and not outcome.changed
    assert not any(line.startswith('DEAC') for line in server.lines())


def test_raw_commands_accept_codes_and_messages(serve, ca_file):
    server = serve(numbers=NUMBERS)
    with session_for(server, ca_file) as session:
        by_code = _ntsapi_reads.run_raw_commands(session, ['STAT 01792999999', 'DEAC 01792100001'], accept_codes=[1])
        by_text = _ntsapi_reads.run_raw_commands(session, ['STAT 01792999999', 'STAT 01792100001'], accept_messages=['not allocated'])
    assert by_code.failed is None and by_code.changed and by_code.results[1]['message'] == 'OK DEAC'
    assert by_text.failed is None and not by_text.changed


def test_raw_commands_in_check_mode_send_only_reads(serve, ca_file):
    server = serve(numbers=NUMBERS)
    commands = ['STAT 01792100001', 'SET 01792100001 1 441234567890', 'ALIST 01792 2', 'DEAC 01792100001', 'INFO 01792100001 999 DATA']
    with session_for(server, ca_file) as session:
        outcome = _ntsapi_reads.run_raw_commands(session, commands, check_mode=True)
    assert [result['skipped'] for result in outcome.results] == [False, True, False, True, False]
    assert outcome.changed and outcome.failed is None
    assert [line.split()[0] for line in server.lines()] == ['AUTH', 'STAT', 'ALIST', 'INFO', 'QUIT']


@pytest.mark.parametrize('greeting, error, text', [
    ('1 Too many connections: try again later', _tls.MagratheaConnectionError, 'refused the session: 1 Too many connections'),
    ('Welcome to something else', _tls.ProtocolError, 'answered (greeting) with a line outside the NTSAPI grammar'),
])
def test_a_bad_greeting_sends_no_auth_and_closes(serve, ca_file, greeting, error, text):
    server = serve(greeting=greeting)
    session = session_for(server, ca_file)
    with pytest.raises(error, match=re.escape(text)):
        session.open()
    assert session._sock is None  # pylint: disable=protected-access
    with pytest.raises(_tls.MagratheaConnectionError, match='session is closed'):
        session.query(['STAT 01792100001', 'STAT 01792100002'])
    assert server.lines() == []


# -- regressions (issue 12) -------------------------------------------------------------------------


def test_a_trickled_greeting_is_bounded_by_the_reply_deadline(serve, ca_file):
    server = serve(trickle=0.05)
    with pytest.raises(_tls.MagratheaTimeout, match='within 0.5s'):
        session_for(server, ca_file, timeout=0.5).open()
    assert server.lines() == []


def test_a_trickled_stat_reply_is_bounded_by_the_reply_deadline(serve, ca_file):
    server = serve(numbers=NUMBERS, trickle=0.05, trickle_after=2)
    with pytest.raises(_tls.MagratheaTimeout, match='STAT 01792100001 within 0.5s'):
        with session_for(server, ca_file, timeout=0.5) as session:
            session.run('STAT 01792100001')


def test_a_server_that_frames_per_read_is_detected_without_a_second_login(serve, ca_file, monkeypatch):
    monkeypatch.setattr(_ntsapi_session, 'PIPELINE_STALL', 0.5)
    server = serve(numbers=NUMBERS, first_line_only=True, every_connection=True)
    commands = ['STAT 0179210%04d' % index for index in range(20)]
    with session_for(server, ca_file) as session:
        replies = session.query(commands)
        assert session.framing == 'read' and len(session.warnings) == 1 and 'one command per read' in session.warnings[0]
    assert max(len(chunk) for chunk in server.connections[0][2:]) == 1
    assert [reply.message.split()[0] for reply in replies] == [command.split()[1] for command in commands]
    assert len(server.connections) == 1
    assert [line.split()[0] for line in server.lines()].count('AUTH') == 1


def test_a_busy_server_is_reconnected_to_under_the_retry_policy(serve, ca_file, monkeypatch):
    monkeypatch.setattr(_ntsapi_session, 'PIPELINE_STALL', 0.5)
    server = serve(numbers=NUMBERS, close_after=10, busy_connections=(1, 2))
    commands = ['STAT 0179210%04d' % index for index in range(30)]
    with session_for(server, ca_file) as session:
        replies = session.query(commands)
    assert [reply.message.split()[0] for reply in replies] == [command.split()[1] for command in commands]
    assert len(server.connections) == 4 and session.connections == 4
    assert len(session.warnings) == 1


def test_a_server_that_stays_busy_ends_the_run_within_the_login_budget(serve, ca_file):
    server = serve(numbers=NUMBERS, close_after=10, busy_connections=range(1, 100))
    with pytest.raises(_tls.MagratheaConnectionError, match='refused the session'):
        with session_for(server, ca_file) as session:
            session.query(['STAT 0179210%04d' % index for index in range(30)])
    assert len(server.connections) == _ntsapi_session.MAX_LOGINS


def test_auth_refused_on_the_reconnect_is_never_retried(serve, ca_file):
    server = serve(numbers=NUMBERS, close_after=10, auth_refused_from=1)
    with pytest.raises(_tls.AuthenticationError, match='Not retried'):
        with session_for(server, ca_file) as session:
            session.query(['STAT 0179210%04d' % index for index in range(30)])
    assert len(server.connections) == 2
    assert [line.split()[0] for line in server.lines()].count('AUTH') == 2


def test_a_late_reply_after_a_per_read_verdict_stops_before_a_change(serve, ca_file, monkeypatch):
    monkeypatch.setattr(_ntsapi_session, 'PIPELINE_STALL', 0.2)
    server = serve(numbers=NUMBERS, first_line_only=True, every_connection=True)
    with session_for(server, ca_file) as session:
        session.query(['STAT 01792100001', 'STAT 01792100002'])
        assert session.framing == 'read'
        session._buffer += b'0 01792100002 Y 2030-01-31 S:441792100002@sip.example.com||\r\n'  # pylint: disable=protected-access
        with pytest.raises(_tls.ProtocolError, match='nobody asked for'):
            session.run('SET 01792100001 1 441234567890')
    assert not any(line.startswith('SET') for line in server.lines())
