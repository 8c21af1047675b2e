# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The FTPS client: listing parsers, and real explicit-FTPS sessions on loopback.

The embedded sandbox server (pyftpdlib) gives the happy paths and the faults;
a scripted server that records every byte it receives shows that no credential
leaves the client when AUTH TLS, the certificate or the pin is not right.
"""

from __future__ import annotations

import calendar
import os
import socket
import ssl
import threading
import time

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _ftps, _tls
from ansible_collections.magrathea.secure.sandbox import pki
from ansible_collections.magrathea.secure.sandbox.ftps import EmbeddedFtpsServer

USER, PASSWORD = 'cdr-user', 'not-a-real-secret-42'
JAN_5_2025 = calendar.timegm((2025, 1, 5, 12, 0, 0, 0, 0, 0))


# -- parsers --------------------------------------------------------------------------------

@pytest.mark.parametrize('line, name, size, mtime, uncertainty', [
    ('-rw-r--r--    1 0        0          102400 Jan 02 10:22 MAG000001_20250101.zip',
     'MAG000001_20250101.zip', 102400, calendar.timegm((2025, 1, 2, 10, 22, 0, 0, 0, 0)), 60),
    ('-rw-r--r--   1 owner    group          42 Dec 31 23:59 late.zip',
     'late.zip', 42, calendar.timegm((2024, 12, 31, 23, 59, 0, 0, 0, 0)), 60),
    ('-rw-r--r--    1 ftp      ftp            7 Mar  3  2023 old file.csv',
     'old file.csv', 7, calendar.timegm((2023, 3, 3, 0, 0, 0, 0, 0, 0)), 86400),
    ('-rw-------    1 1000         55 Jan  4 09:00  leading space.zip',
     ' leading space.zip', 55, calendar.timegm((2025, 1, 4, 9, 0, 0, 0, 0, 0)), 60),
    ('-rw-r--r--+   1 a b 0 Jan 01 00:00 empty',
     'empty', 0, calendar.timegm((2025, 1, 1, 0, 0, 0, 0, 0, 0)), 60),
])
def test_list_line_file(line, name, size, mtime, uncertainty):
    kind, entry = _ftps.parse_list_line(line, now=JAN_5_2025)
    assert kind == 'file'
    assert (entry.name, entry.size, entry.mtime, entry.uncertainty) == (name, size, mtime, uncertainty)
    assert entry.listed_time


def test_list_line_with_a_line_break_in_its_name_keeps_it_for_the_caller_to_refuse():
    kind, remote = _ftps.parse_list_line('-rw-r--r--   1 ftp ftp  42 Jan 05 10:20 abc\n')
    assert kind == 'file' and remote.name == 'abc\n'


@pytest.mark.parametrize('line', [
    '-rw-r--r--   1 ftp ftp  \u0664\u0662 Jan 05 10:20 arabic-indic-size.zip',
    '-rw-r--r--   1 ftp ftp  42 Jan \uff10\uff15 10:20 fullwidth-day.zip',
])
def test_list_line_with_digits_beyond_ascii_is_unreadable(line):
    assert _ftps.parse_list_line(line) == (None, None)


def test_mlsd_size_beyond_ascii_is_unreadable():
    assert _ftps.parse_mlsd_line('modify=20250101000000;size=\u00b2;type=file; x.zip') == (None, None)


@pytest.mark.parametrize('line, kind', [
    ('drwxr-xr-x    2 0        0            4096 Jan 02 10:22 archive', 'dir'),
    ('lrwxrwxrwx    1 0        0              10 Jan 02 10:22 latest.zip -> a.zip', 'link'),
    ('total 123', 'total'),
    ('this is not a listing line', None),
    ('-rw-r--r--    1 0        0          102400 Foo 02 10:22 bad-month.zip', None),
])
def test_list_line_other(line, kind):
    got_kind, entry = _ftps.parse_list_line(line, now=JAN_5_2025)
    assert got_kind == kind and entry is None


@pytest.mark.parametrize('line, name, size, mtime', [
    ('type=file;size=1024;modify=20250102102233;perm=r; MAG000001_20250101.zip', 'MAG000001_20250101.zip', 1024,
     calendar.timegm((2025, 1, 2, 10, 22, 33, 0, 0, 0))),
    ('modify=20250102102233.123;perm=r;size=5;type=file;unix.mode=0644; name; with semicolons.zip', 'name; with semicolons.zip', 5,
     calendar.timegm((2025, 1, 2, 10, 22, 33, 0, 0, 0))),
    ('Type=File;Size=9;Modify=20250102000000; ../x', '../x', 9, calendar.timegm((2025, 1, 2, 0, 0, 0, 0, 0, 0))),
])
def test_mlsd_line_file(line, name, size, mtime):
    kind, entry = _ftps.parse_mlsd_line(line)
    assert kind == 'file' and (entry.name, entry.size, entry.mtime, entry.uncertainty) == (name, size, mtime, 1)


@pytest.mark.parametrize('line, kind', [
    ('type=cdir;modify=20250102102233; .', 'cdir'),
    ('type=dir;modify=20250102102233; archive', 'dir'),
    ('type=file;modify=20250102102233; no-size.zip', None),
    ('type=file;size=1;modify=yesterday; bad-time.zip', None),
    ('no facts here', None),
])
def test_mlsd_line_other(line, kind):
    got_kind, entry = _ftps.parse_mlsd_line(line)
    assert got_kind == kind and entry is None


def lines_of(*chunks):
    lines = _ftps.ListingLines()
    got = []
    for chunk in chunks:
        got.extend(lines.feed(chunk))
    return got + lines.close()


@pytest.mark.parametrize('chunks, expected', [
    # CRLF servers: a bare LF stays inside a name, wherever the chunks are cut.
    ([b'type=file; new\nline\r\ntype=file; ok\r\n'], [b'type=file; new\nline', b'type=file; ok']),
    ([b'a\nb\r', b'\nc\r\n'], [b'a\nb', b'c']),
    ([b'a', b'\r', b'\n', b'b\r\n'], [b'a', b'b']),
    # LF servers, and a last line without its line end.
    ([b'a\nb\n'], [b'a', b'b']),
    ([b'a\r\nb'], [b'a', b'b']),
    ([b''], []),
])
def test_listing_lines(chunks, expected):
    assert lines_of(*chunks) == expected


def test_listing_lines_decide_lf_after_the_probe_and_bound_a_line():
    lines = _ftps.ListingLines()
    first = lines.feed(b'x\n' * (_ftps.LISTING_PROBE // 2))
    assert len(first) == _ftps.LISTING_PROBE // 2 and lines.feed(b'y\r\n') == [b'y\r']
    long_line = b'z' * (_ftps.MAX_LISTING_LINE + 10)
    assert lines.feed(long_line) == [b'z' * _ftps.MAX_LISTING_LINE] and lines.close() == [b'z' * 10]


@pytest.mark.parametrize('text, expected', [
    ('20250102030405', calendar.timegm((2025, 1, 2, 3, 4, 5, 0, 0, 0))),
    (' 20250102030405.999', calendar.timegm((2025, 1, 2, 3, 4, 5, 0, 0, 0))),
    ('2025010203', None),
    ('20251302030405', None),
])
def test_parse_modify(text, expected):
    assert _ftps.parse_modify(text) == expected


# -- real sessions against the embedded server ---------------------------------------------

@pytest.fixture(name='pki_paths', scope='module')
def pki_paths_fixture(tmp_path_factory):
    return pki.write_server_pki(str(tmp_path_factory.mktemp('pki')))


@pytest.fixture(name='cdr_root', scope='module')
def cdr_root_fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp('ftp')
    (root / 'cdr').mkdir()
    for index in range(3):
        path = root / 'cdr' / ('MAG_2025010%d.zip' % index)
        path.write_bytes(os.urandom(50_000 + index))
        os.utime(path, (1735689600 + index * 86400, 1735689600 + index * 86400))
    return root


def embedded(pki_paths, root, **kwargs):
    return EmbeddedFtpsServer(host='127.0.0.1', certfile=pki_paths['cert_file'], keyfile=pki_paths['key_file'],
                              username=USER, password=PASSWORD, root=str(root), failed_login_delay=0, **kwargs).start()


def endpoint(port, pki_paths, **kwargs):
    kwargs.setdefault('ca_path', pki_paths['ca_file'])
    kwargs.setdefault('timeout', 5)
    return _tls.Endpoint('localhost', port, **kwargs)


@pytest.mark.parametrize('tls_max', ['1.2', None])
def test_session_lists_and_retrieves_with_session_reuse(pki_paths, cdr_root, tls_max):
    server = embedded(pki_paths, cdr_root, tls_max_version=tls_max)
    try:
        with _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD) as client:
            assert client._ftp.sock.version() == ('TLSv1.2' if tls_max else 'TLSv1.3')
            assert client.has_mlsd
            client.cwd('/cdr')
            listed = list(client.listing())
            assert [kind for kind, entry, line in listed] == ['file'] * 3
            files = [entry for kind, entry, line in listed]
            assert sorted(entry.name for entry in files) == ['MAG_20250100.zip', 'MAG_20250101.zip', 'MAG_20250102.zip']
            for entry in files:
                local = cdr_root / 'cdr' / entry.name
                assert entry.size == local.stat().st_size and entry.mtime == int(local.stat().st_mtime) and entry.uncertainty == 1
                chunks = []
                assert client.retrieve(entry.name, lambda chunk: chunks.append(bytes(chunk))) == entry.size
                assert b''.join(chunks) == local.read_bytes()
                assert client.size(entry.name) == entry.size and client.mdtm(entry.name) == entry.mtime
            tail = []
            client.retrieve('MAG_20250101.zip', lambda chunk: tail.append(bytes(chunk)), offset=50_000)
            assert b''.join(tail) == (cdr_root / 'cdr' / 'MAG_20250101.zip').read_bytes()[50_000:]
            assert client.data_connections == 5
            # Every data connection after the first resumed the control connection's session.
            assert client.sessions_reused >= client.data_connections - 1
        assert not client.connected
    finally:
        server.stop()


def test_correct_pin_logs_in(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root)
    try:
        with open(pki_paths['cert_file'], 'rb') as handle:
            der = ssl.PEM_cert_to_DER_cert(handle.read().decode())
        pin = _tls.format_fingerprint(_tls.certificate_fingerprint(der, 'sha1'))
        with _ftps.FtpsClient(endpoint(server.port, pki_paths, fingerprint=pin), USER, PASSWORD) as client:
            client.cwd('/cdr')
            assert len([entry for kind, entry, line in client.listing() if entry]) == 3
    finally:
        server.stop()


def test_wrong_password_is_an_authentication_error(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root)
    try:
        with pytest.raises(_tls.AuthenticationError, match='refused the login of %s' % USER) as caught:
            _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, 'wrong').connect()
        assert 'wrong' not in str(caught.value)
    finally:
        server.stop()


def test_server_without_auth_tls_is_refused(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root, tls_required=False)
    try:
        with pytest.raises(_tls.ProtocolError, match='does not offer explicit TLS'):
            _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD).connect()
    finally:
        server.stop()


def test_dropped_data_connection_is_transient_and_resumable(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root, drop_after_bytes=20_000)
    name = 'MAG_20250100.zip'
    expected = (cdr_root / 'cdr' / name).read_bytes()
    received = bytearray()
    try:
        for attempt in range(5):
            with _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD) as client:
                client.cwd('/cdr')
                try:
                    client.retrieve(name, received.extend, offset=len(received))
                except _tls.MagratheaError as exc:
                    assert isinstance(exc, _tls.MagratheaConnectionError) or getattr(exc, 'code', None) == 426, exc
                    continue
            if len(received) == len(expected):
                break
        assert bytes(received) == expected and attempt == 2
    finally:
        server.stop()


def test_cut_listing_yields_its_whole_lines_then_is_incomplete(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root, cut_listing_after_bytes=150)
    try:
        with _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD) as client:
            client.cwd('/cdr')
            seen = []
            with pytest.raises(_ftps.ListingIncomplete, match='MLSD listing from localhost:%d is incomplete: the data connection '
                                                              'was closed without a TLS close_notify' % server.port) as caught:
                for kind, entry, line in client.listing():
                    seen.append(line)
            assert caught.value.transient and client.connected  # the server answered 226: the connection goes on
            assert len(seen) == 1 and seen[0].endswith(' MAG_20250100.zip')
            with pytest.raises(_ftps.ListingIncomplete):
                list(client.listing())  # cut again, on the same control connection
    finally:
        server.stop()


@pytest.mark.parametrize('offset', [0, 10_000])
def test_retrieve_stops_at_the_expected_size(pki_paths, cdr_root, offset):
    server = embedded(pki_paths, cdr_root, overlong_bytes=5_000_000)
    name = 'MAG_20250101.zip'
    expected = (cdr_root / 'cdr' / name).read_bytes()
    received = bytearray()
    try:
        with _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD) as client:
            client.cwd('/cdr')
            with pytest.raises(_ftps.LongerThanExpected, match='more than the %d bytes expected of %s' % (len(expected), name)):
                client.retrieve(name, received.extend, offset=offset, size=len(expected))
            assert bytes(received) == expected[offset:]
            assert client.size(name) == len(expected)  # the control connection is still in step
    finally:
        server.stop()


def test_what_the_sink_raises_passes_through_untouched(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root)
    disk_full = _tls.LocalStorageError('cannot write /x: No space left on device (ENOSPC)', path='/x', errno=28)

    def sink(chunk):
        raise disk_full
    try:
        client = _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD).connect()
        client.cwd('/cdr')
        with pytest.raises(_tls.LocalStorageError) as caught:
            client.retrieve('MAG_20250100.zip', sink, size=50_000)
        assert caught.value is disk_full and not client.connected
    finally:
        server.stop()


@pytest.mark.parametrize('what', ['RETR', 'listing'])
def test_a_data_connection_that_trickles_is_ended(pki_paths, cdr_root, what):
    # About 100 bytes a second, in bursts 2 s apart, never trips a 3 s wait but stays under 1 KiB in any 3 s.
    server = embedded(pki_paths, cdr_root, data_bytes_per_second=100, listing_padding=300)
    name = 'MAG_20250100.zip'
    received = bytearray()
    try:
        with _ftps.FtpsClient(endpoint(server.port, pki_paths, timeout=3), USER, PASSWORD) as client:
            client.cwd('/cdr')
            if what == 'RETR':
                with pytest.raises(_tls.MagratheaTimeout, match='sent less than 1024 bytes in 3s during RETR %s' % name) as caught:
                    client.retrieve(name, received.extend, size=50_000)
                assert caught.value.transient and len(received) < 10_000
            else:
                with pytest.raises(_ftps.ListingIncomplete, match='is incomplete: less than 1024 bytes arrived in 3s'):
                    for dummy in client.listing():
                        received.extend(b'.')
                assert len(received) < 300
    finally:
        server.stop()


def test_retrieve_without_a_size_needs_a_clean_end(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root, drop_after_bytes=1000)
    try:
        with _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD) as client:
            client.cwd('/cdr')
            with pytest.raises(_ftps.TransferIncomplete, match='no TLS close_notify'):
                client.retrieve('MAG_20250100.zip', lambda chunk: None)
    finally:
        server.stop()


@pytest.mark.parametrize('code, transient', [(421, True), (425, True), (426, True), (450, True), (451, True), (550, False), (530, False)])
def test_reply_codes_say_whether_a_retry_can_help(code, transient):
    assert _ftps.FtpReplyError('x', code).transient is transient


def test_connection_limit_answers_421_as_transient(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root, max_connections=1)
    try:
        with _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD):
            with pytest.raises(_ftps.FtpReplyError) as caught:
                _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD).connect()
        assert caught.value.code == 421 and caught.value.transient
    finally:
        server.stop()


def test_hostile_names_are_listed_as_sent(pki_paths, cdr_root):
    server = embedded(pki_paths, cdr_root, hostile_names=True)
    try:
        with _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD) as client:
            client.cwd('/cdr')
            names = {entry.name for kind, entry, line in client.listing() if entry}
        assert {'../x', 'a/b', 'back\\slash', 'new\nline'} <= names
    finally:
        server.stop()


# -- a scripted server that records what the client sends ------------------------------------

class RecordingFtpServer:
    """Greets, answers AUTH TLS as told, then (if 234) runs TLS and accepts everything; records all bytes."""

    def __init__(self, cert_file, key_file, greeting=b'220 ready\r\n', auth_reply=b'234 AUTH TLS ok\r\n'):
        self.context = pki.server_context(cert_file, key_file)
        self.greeting, self.auth_reply = greeting, auth_reply
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.received = b''
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_line(self, sock):
        line = b''
        while not line.endswith(b'\n'):
            data = sock.recv(1)
            if not data:
                break
            line += data
        self.received += line
        return line

    def _serve(self):
        raw, dummy = self.listener.accept()
        raw.settimeout(5)
        try:
            raw.sendall(self.greeting)
            if not self.greeting.startswith(b'220'):
                return
            self._read_line(raw)
            raw.sendall(self.auth_reply)
            while not self.auth_reply.startswith(b'234'):
                if not self._read_line(raw):
                    return
                raw.sendall(b'530 Please login with USER and PASS.\r\n')
            with self.context.wrap_socket(raw, server_side=True) as tls:
                while True:
                    line = self._read_line(tls)
                    if not line:
                        break
                    tls.sendall(b'331 Password please\r\n' if line.startswith(b'USER') else b'230 OK\r\n')
        except (ssl.SSLError, OSError):
            pass
        finally:
            raw.close()

    def join(self):
        self.thread.join(5)
        self.listener.close()


@pytest.fixture(name='other_ca_paths', scope='module')
def other_ca_paths_fixture(tmp_path_factory):
    return pki.write_server_pki(str(tmp_path_factory.mktemp('other-pki')))


def test_pin_mismatch_sends_no_user(pki_paths):
    server = RecordingFtpServer(pki_paths['cert_file'], pki_paths['key_file'])
    client = _ftps.FtpsClient(endpoint(server.port, pki_paths, fingerprint='00' * 20), USER, PASSWORD)
    with pytest.raises(_tls.PinMismatchError, match='Nothing was sent'):
        client.connect()
    server.join()
    assert server.received == b'AUTH TLS\r\n'


def test_untrusted_ca_sends_no_user(pki_paths, other_ca_paths):
    server = RecordingFtpServer(other_ca_paths['cert_file'], other_ca_paths['key_file'])
    with pytest.raises(_tls.TLSVerifyError, match='did not verify'):
        _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD).connect()
    server.join()
    assert server.received == b'AUTH TLS\r\n'


def test_refused_auth_tls_sends_no_user(pki_paths):
    server = RecordingFtpServer(pki_paths['cert_file'], pki_paths['key_file'], auth_reply=b'500 AUTH not understood\r\n')
    with pytest.raises(_tls.ProtocolError, match='nothing was sent'):
        _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD).connect()
    server.join()
    assert server.received == b'AUTH TLS\r\n'
    assert PASSWORD.encode() not in server.received


def test_421_greeting_is_transient(pki_paths):
    server = RecordingFtpServer(pki_paths['cert_file'], pki_paths['key_file'], greeting=b'421 Too many connections\r\n')
    with pytest.raises(_ftps.FtpReplyError) as caught:
        _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD).connect()
    server.join()
    assert caught.value.code == 421 and caught.value.transient and 'lower parallel' in str(caught.value)
    assert server.received == b''


def test_commands_after_good_handshake_go_inside_tls(pki_paths):
    server = RecordingFtpServer(pki_paths['cert_file'], pki_paths['key_file'])
    client = _ftps.FtpsClient(endpoint(server.port, pki_paths), USER, PASSWORD)
    client.connect()
    client.close()
    server.join()
    # The recorder decrypts: USER/PASS came after AUTH TLS and PBSZ/PROT P, all inside the TLS session.
    lines = server.received.split(b'\r\n')
    assert lines[:5] == [b'AUTH TLS', b'PBSZ 0', b'PROT P', b'USER ' + USER.encode(), b'PASS ' + PASSWORD.encode()]


class TricklingFtpServer:
    """Greets with a multi-line 220 reply that never ends, a few bytes at a time: every wait is short, the reply endless."""

    def __init__(self, seconds=10.0):
        self.seconds = seconds
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, dummy = self.listener.accept()
        deadline = time.monotonic() + self.seconds
        try:
            conn.sendall(b'220-Welcome\r\n')
            while time.monotonic() < deadline:
                conn.sendall(b'220-')
                time.sleep(0.05)
                conn.sendall(b'still greeting\r\n')
                time.sleep(0.05)
        except OSError:
            pass  # the client gave up
        finally:
            conn.close()

    def join(self):
        self.thread.join(15)
        self.listener.close()


def test_a_reply_that_never_ends_meets_its_deadline(pki_paths):
    server = TricklingFtpServer()
    client = _ftps.FtpsClient(endpoint(server.port, pki_paths, timeout=1), USER, PASSWORD)
    try:
        with pytest.raises(_tls.MagratheaTimeout, match='whole exchange did not end within 1s'):
            client.connect()
    finally:
        server.join()
