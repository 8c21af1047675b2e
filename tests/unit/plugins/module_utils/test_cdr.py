# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A whole CDR sync run against the embedded FTPS server: the real client, the real retrieve, real files.

The server's fault modes give the faults (drops, cut listings, overlong downloads, vanishing files, 421, another
certificate on data connections); what the server saw (logins, commands) is counted on its side.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _cdr, _cdr_store, _ftps, _retry, _tls
from ansible_collections.magrathea.secure.sandbox import pki
from ansible_collections.magrathea.secure.sandbox.cdr import generate_cdr_files
from ansible_collections.magrathea.secure.sandbox.ftps import EmbeddedFtpsServer

USER, PASSWORD = 'cdr-user', 'not-a-real-secret-42'
T0 = 1_700_000_000  # a whole-second remote mtime, long past


@pytest.fixture(name='pki_paths', scope='module')
def pki_paths_fixture(tmp_path_factory):
    return pki.write_server_pki(str(tmp_path_factory.mktemp('pki')))


@pytest.fixture(name='serve')
def serve_fixture(pki_paths):
    """serve(root, **faults): an embedded FTPS server over root (CDR files in root/cdr), stopped after the test."""
    started = []

    def serve(root, cert_file=None, key_file=None, ca_file=None, **faults):
        server = EmbeddedFtpsServer(host='127.0.0.1', certfile=cert_file or pki_paths['cert_file'], keyfile=key_file or pki_paths['key_file'],
                                    username=USER, password=PASSWORD, root=str(root), failed_login_delay=0, **faults).start()
        server.ca_file = ca_file or pki_paths['ca_file']
        started.append(server)
        return server
    yield serve
    for server in started:
        server.stop()


def cdr_tree(root, count=4, size=None):
    """``count`` daily CDR ZIPs in root/cdr, as the sandbox serves them; their names, oldest first."""
    return [os.path.basename(path) for path in generate_cdr_files(str(root / 'cdr'), count=count, size=size)]


def put(root, name, data, mtime=T0):
    path = root / 'cdr' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def make_zip(text='calldate,duration\n2025-01-01,10\n', stored=False):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as archive:
        archive.writestr('cdr.csv', text * 50)
    return buffer.getvalue()


def mirror(server, dest, fingerprint=None, **kwargs):
    kwargs.setdefault('retry_delay', 0.0)
    endpoint = _tls.Endpoint('localhost', server.port, ca_path=server.ca_file, timeout=5, fingerprint=fingerprint)
    return _cdr.CdrMirror(endpoint, USER, PASSWORD, '/cdr', str(dest), **kwargs)


def sync(server, dest, **kwargs):
    return mirror(server, dest, **kwargs).run()


def visible(dest):
    return sorted(name for name in os.listdir(dest) if not name.startswith('.'))


def partials(dest):
    return sorted(name for name in os.listdir(dest) if name.startswith(_cdr_store.PARTIAL_PREFIX))


def assert_identical(root, dest):
    served = sorted(os.listdir(root / 'cdr'))
    assert visible(dest) == served
    for name in served:
        assert (dest / name).read_bytes() == (root / 'cdr' / name).read_bytes(), name
        assert int(os.stat(dest / name).st_mtime) == int(os.stat(root / 'cdr' / name).st_mtime), name


def chmod_to(mode, check_mode=False):
    """An ``attributes`` callback as the module's, for a numeric mode only."""
    def attributes(path):
        if os.lstat(path).st_mode & 0o7777 == mode:
            return False
        if not check_mode:
            os.chmod(path, mode)
        return True
    return attributes


# -- sync, idempotence, incremental -------------------------------------------------------

@pytest.mark.parametrize('mlsd', [True, False])
def test_full_sync_then_noop(serve, tmp_path, mlsd):
    names = cdr_tree(tmp_path / 'ftp', count=5)
    server = serve(tmp_path / 'ftp', mlsd=mlsd)
    dest = tmp_path / 'dest'
    first = sync(server, dest, attributes=chmod_to(0o640))
    assert first['changed'] is True and first['fetched'] == names and first['listing'] == ('MLSD' if mlsd else 'LIST')
    assert first['counts']['fetched'] == 5 and first['bytes'] == sum(os.path.getsize(tmp_path / 'ftp' / 'cdr' / name) for name in names)
    assert first['data_connections'] == 6 and first['tls_sessions_reused'] == 6 and first['listing_complete'] is True
    assert_identical(tmp_path / 'ftp', dest)
    assert partials(dest) == [] and all(os.stat(dest / name).st_mode & 0o7777 == 0o640 for name in names)
    manifest = json.loads((dest / _cdr_store.MANIFEST_NAME).read_text())
    assert manifest['version'] == 2
    for name in names:
        entry, data = manifest['files'][name], (dest / name).read_bytes()
        assert entry['sha256'] == hashlib.sha256(data).hexdigest() and entry['size'] == len(data)
        assert entry['fetched'] and entry['checked'] == entry['fetched'] and entry['listed_time']

    commands = dict(server.events.commands)
    second = sync(server, dest, attributes=chmod_to(0o640))
    assert second['changed'] is False and second['fetched'] == [] and second['counts']['up_to_date'] == 5
    assert second['connections'] == 1 and second['data_connections'] == 1 and second['bytes'] == 0
    assert server.events.commands['RETR'] == commands['RETR'] and server.events.commands['MDTM'] == commands.get('MDTM', 0)


def test_changed_and_new_files_are_fetched_only(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=3)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest)
    put(tmp_path / 'ftp', names[1], make_zip('changed'), T0 + 10)
    put(tmp_path / 'ftp', 'MAG000001_new.zip', make_zip('new'), T0)
    retrievals = server.events.commands['RETR']
    result = sync(server, dest)
    assert result['fetched'] == sorted([names[1], 'MAG000001_new.zip'])
    assert server.events.commands['RETR'] == retrievals + 2
    assert result['diff']['before'] == '%s changed\n' % names[1]
    assert_identical(tmp_path / 'ftp', dest)


def test_same_size_new_mtime_is_fetched(serve, tmp_path):
    put(tmp_path / 'ftp', 'a.csv', b'1234')
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest)
    put(tmp_path / 'ftp', 'a.csv', b'5678', T0 + 60)
    assert sync(server, dest)['fetched'] == ['a.csv'] and (dest / 'a.csv').read_bytes() == b'5678'


def test_list_server_without_manifest_asks_mdtm_and_backfills(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp', mlsd=False)
    dest = tmp_path / 'dest'
    sync(server, dest)
    os.unlink(dest / _cdr_store.MANIFEST_NAME)
    asked = server.events.commands['MDTM']
    result = sync(server, dest)
    assert result['fetched'] == [] and server.events.commands['MDTM'] == asked + 2
    assert result['changed'] is True  # the manifest was rebuilt
    manifest = json.loads((dest / _cdr_store.MANIFEST_NAME).read_text())
    assert sorted(manifest['files']) == names and all(entry['fetched'] is None for entry in manifest['files'].values())
    assert sync(server, dest)['changed'] is False and server.events.commands['MDTM'] == asked + 2


def test_same_size_regeneration_within_the_listed_minute_is_fetched(serve, tmp_path):
    """A LIST-only server (as vsftpd) shows minutes: the exact time (MDTM) decides within the minute."""
    minute = int(time.time()) // 60 * 60 - 60
    put(tmp_path / 'ftp', 'MAG000001_today.csv', b'first version, 30 bytes long..', minute + 5)
    server = serve(tmp_path / 'ftp', mlsd=False)
    dest = tmp_path / 'dest'
    assert sync(server, dest)['fetched'] == ['MAG000001_today.csv']
    put(tmp_path / 'ftp', 'MAG000001_today.csv', b'regenerated, also 30 bytes....', minute + 50)
    result = sync(server, dest)
    assert result['fetched'] == ['MAG000001_today.csv']
    assert (dest / 'MAG000001_today.csv').read_bytes() == b'regenerated, also 30 bytes....'
    assert int(os.stat(dest / 'MAG000001_today.csv').st_mtime) == minute + 50


def test_patterns_and_newer_than(serve, tmp_path):
    for index in range(1, 5):
        put(tmp_path / 'ftp', 'MAG_2025010%d.zip' % index, make_zip('x' * index), T0 + index * 86400)
    put(tmp_path / 'ftp', 'README.txt', b'hello')
    result = sync(serve(tmp_path / 'ftp'), tmp_path / 'dest', patterns=['*.zip'], newer_than=T0 + 3 * 86400)
    assert result['fetched'] == ['MAG_20250103.zip', 'MAG_20250104.zip']
    assert result['counts']['listed'] == 5 and result['counts']['matched'] == 2


def test_check_mode_writes_nothing(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=3)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    result = sync(server, dest, check_mode=True)
    assert result['changed'] is True and result['fetched'] == names and result['bytes'] > 0
    assert not dest.exists() and server.events.commands['RETR'] == 0

    dest.mkdir()
    (dest / 'old.zip').write_bytes(b'gone from the server')
    result = sync(server, dest, check_mode=True, delete=True)
    assert result['deleted'] == ['old.zip'] and result['fetched'] == names
    assert os.listdir(dest) == ['old.zip']


# -- names and local paths ----------------------------------------------------------------

def test_hostile_names_are_refused_and_nothing_leaves_dest(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp', hostile_names=True)
    dest = tmp_path / 'deep' / 'dest'
    result = sync(server, dest)
    refused = {entry['name'] for entry in result['refused']}
    assert {'../x', 'a/b', '..', '.', 'back\\slash'} <= refused and result['fetched'] == names
    assert server.events.commands['RETR'] == 2
    assert sorted(os.listdir(tmp_path)) == ['deep', 'ftp'] and os.listdir(tmp_path / 'deep') == ['dest']


def test_local_symlink_is_refused_not_followed(serve, tmp_path):
    put(tmp_path / 'ftp', 'a.zip', make_zip())
    dest = tmp_path / 'dest'
    dest.mkdir()
    outside = tmp_path / 'outside'
    outside.write_bytes(b'precious')
    os.symlink(outside, dest / 'a.zip')
    result = sync(serve(tmp_path / 'ftp'), dest)
    assert [entry['name'] for entry in result['refused']] == ['a.zip'] and result['fetched'] == []
    assert outside.read_bytes() == b'precious'


# -- drops, resumes, temporary files ------------------------------------------------------

def test_drop_resumes_with_rest_and_final_name_never_partial(serve, tmp_path):
    data = make_zip('resume me ' * 10, stored=True)
    put(tmp_path / 'ftp', 'big.zip', data)
    server = serve(tmp_path / 'ftp', drop_after_bytes=700)
    dest = tmp_path / 'dest'
    first = sync(server, dest, retries=0)
    assert [entry['name'] for entry in first['errors']] == ['big.zip'] and first['bytes'] == 700
    assert not (dest / 'big.zip').exists()
    (partial,) = partials(dest)
    assert os.path.getsize(dest / partial) == 700 and os.stat(dest / partial).st_mode & 0o777 == 0o600

    second = sync(server, dest, retries=len(data) // 700 + 1)
    assert second['fetched'] == ['big.zip'] and second['errors'] == []
    assert second['retried'] == len(data) // 700 - 1 and second['bytes'] == len(data) - 700
    assert (dest / 'big.zip').read_bytes() == data and partials(dest) == []
    manifest = json.loads((dest / _cdr_store.MANIFEST_NAME).read_text())
    assert manifest['files']['big.zip']['sha256'] == hashlib.sha256(data).hexdigest()


class MdtmDropsOnce(_ftps.FtpsClient):
    """The real client, whose control connection is cut once as it asks MDTM (a network drop at that moment)."""

    dropped = []

    def mdtm(self, name):
        if not self.dropped:
            self.dropped.append(name)
            self._ftp.sock.shutdown(2)
        return super().mdtm(name)


def test_partial_survives_a_run_that_fails_before_its_exact_time_is_known(serve, tmp_path):
    data = make_zip('list server ' * 10, stored=True)
    put(tmp_path / 'ftp', 'a.zip', data, T0 + 7)  # the listing shows the minute, MDTM the second
    dest = tmp_path / 'dest'
    sync(serve(tmp_path / 'ftp', mlsd=False, drop_after_bytes=500), dest, retries=0)
    kept = partials(dest)
    assert len(kept) == 1
    server = serve(tmp_path / 'ftp', mlsd=False)
    MdtmDropsOnce.dropped = []
    failed = sync(server, dest, retries=0, client_factory=MdtmDropsOnce)
    assert failed['errors'] and MdtmDropsOnce.dropped == ['a.zip'] and partials(dest) == kept
    done = sync(server, dest)
    assert done['fetched'] == ['a.zip'] and done['bytes'] == len(data) - 500
    assert (dest / 'a.zip').read_bytes() == data


def test_long_name_resumes_through_a_hashed_temporary_name(serve, tmp_path):
    name = 'MAG_' + 'x' * 240 + '.zip'
    data = make_zip('long ' * 20, stored=True)
    put(tmp_path / 'ftp', name, data)
    dest = tmp_path / 'dest'
    sync(serve(tmp_path / 'ftp', drop_after_bytes=300), dest, retries=0)
    (partial,) = partials(dest)
    assert len(partial) < 100
    result = sync(serve(tmp_path / 'ftp'), dest)
    assert result['fetched'] == [name] and result['bytes'] == len(data) - 300 and (dest / name).read_bytes() == data


def test_partial_of_an_older_version_is_not_resumed(serve, tmp_path):
    put(tmp_path / 'ftp', 'a.zip', make_zip('old'))
    dest = tmp_path / 'dest'
    sync(serve(tmp_path / 'ftp', drop_after_bytes=100), dest, retries=0)
    new = make_zip('new version')
    put(tmp_path / 'ftp', 'a.zip', new, T0 + 5)
    result = sync(serve(tmp_path / 'ftp'), dest)
    assert result['fetched'] == ['a.zip'] and result['bytes'] == len(new)
    assert (dest / 'a.zip').read_bytes() == new and partials(dest) == []


# -- integrity -----------------------------------------------------------------------------

def test_corrupt_zip_is_kept_out_and_reported(serve, tmp_path):
    bad = bytearray(make_zip('corrupt me ', stored=True))
    bad[200] ^= 0xFF  # inside the stored member: only the CRC check can see it
    put(tmp_path / 'ftp', 'good.zip', make_zip())
    put(tmp_path / 'ftp', 'bad.zip', bytes(bad))
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    result = sync(server, dest)
    assert [entry['name'] for entry in result['corrupt']] == ['bad.zip'] and result['fetched'] == ['good.zip']
    assert not (dest / 'bad.zip').exists() and partials(dest) == []
    assert 'bad.zip' not in json.loads((dest / _cdr_store.MANIFEST_NAME).read_text())['files']
    assert sync(server, tmp_path / 'unchecked', zip_check=False)['fetched'] == ['bad.zip', 'good.zip']


def test_truncated_zip_with_valid_name_is_corrupt(serve, tmp_path):
    put(tmp_path / 'ftp', 'short.zip', make_zip()[:-30])
    assert [entry['name'] for entry in sync(serve(tmp_path / 'ftp'), tmp_path / 'dest')['corrupt']] == ['short.zip']


def test_download_stops_at_the_listed_size(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2, size=20_000)
    listed = sum(os.path.getsize(tmp_path / 'ftp' / 'cdr' / name) for name in names)
    server = serve(tmp_path / 'ftp', overlong_bytes=3_000_000)
    dest = tmp_path / 'dest'
    result = sync(server, dest, retries=2)
    assert result['bytes'] < listed + 64 * 1024
    assert result['fetched'] == [] and sorted(entry['name'] for entry in result['errors']) == sorted(names)
    assert all('more than' in entry['error'] and 'not stored' in entry['error'] for entry in result['errors'])
    assert partials(dest) == [] and visible(dest) == []
    assert server.events.logins == 2 and result['retried'] == 0  # the connection stays usable: no retry, no new login


class GrowsBeforeRetr(_ftps.FtpsClient):
    """The real client; the first RETR of each file in ``grow`` finds it grown (appended to on the server)."""

    grow = {}

    def retrieve(self, name, sink, offset=0, size=None):
        path = self.grow.pop(name, None)
        if path is not None:
            with open(path, 'ab') as handle:
                handle.write(b'; a late record appended\n')
        return super().retrieve(name, sink, offset, size)


def test_a_file_that_grew_after_listing_is_fetched_whole(serve, tmp_path):
    path = put(tmp_path / 'ftp', 'today.csv', b'calldate,duration\n2025-01-01,10\n')
    server = serve(tmp_path / 'ftp')
    GrowsBeforeRetr.grow = {'today.csv': path}
    result = sync(server, tmp_path / 'dest', client_factory=GrowsBeforeRetr)
    assert result['fetched'] == ['today.csv'] and result['errors'] == []
    assert (tmp_path / 'dest' / 'today.csv').read_bytes() == path.read_bytes()
    assert server.events.commands['SIZE'] == 1 and server.events.logins == 1


# -- connections, retries, the budget --------------------------------------------------------

class WaitsForARefusal(_ftps.FtpsClient):
    """The real client; a download waits until the server has refused a connection (so that every worker has tried one)."""

    server = None

    def retrieve(self, name, sink, offset=0, size=None):
        deadline = time.monotonic() + 30
        while not self.server.events.refused and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().retrieve(name, sink, offset, size)


def test_421_on_secondary_connections_all_files_still_arrive(serve, tmp_path):
    """The other workers carry on when the account's limit refuses one (this used to race with fast downloads)."""
    cdr_tree(tmp_path / 'ftp', count=8)
    server = serve(tmp_path / 'ftp', max_connections=2)
    WaitsForARefusal.server = server
    result = sync(server, tmp_path / 'dest', parallel=4, retries=2, client_factory=WaitsForARefusal)
    assert result['fetched'] == sorted(os.listdir(tmp_path / 'ftp' / 'cdr')) and result['errors'] == []
    assert server.events.refused >= 1 and result['connections'] == 2
    assert_identical(tmp_path / 'ftp', tmp_path / 'dest')


def test_421_at_first_connect_is_retried_within_the_budget(serve, tmp_path):
    cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp', max_connections=1)
    held = socket.create_connection(('127.0.0.1', server.port))
    try:
        assert held.recv(100).startswith(b'220')
        with pytest.raises(_ftps.FtpReplyError) as caught:
            sync(server, tmp_path / 'dest', parallel=1, retries=3)
    finally:
        held.close()
    assert caught.value.code == 421 and server.events.refused == 4 and server.events.logins == 0


def test_a_run_never_opens_more_connections_than_its_budget(serve, tmp_path):
    """Every download drops: each retry is a new login, until the run's budget (parallel x (retries + 2)) is spent."""
    cdr_tree(tmp_path / 'ftp', count=6, size=5000)
    server = serve(tmp_path / 'ftp', drop_after_bytes=100)
    with pytest.raises(_retry.BudgetExhausted, match='Run the task again later'):
        sync(server, tmp_path / 'dest', parallel=1, retries=1)
    assert server.events.logins == _cdr.connection_budget(1, 1) == 3


def test_retries_stop_at_the_run_deadline(serve, tmp_path):
    put(tmp_path / 'ftp', 'a.zip', make_zip())
    result = sync(serve(tmp_path / 'ftp', drop_after_bytes=10), tmp_path / 'dest', retries=10, retry_delay=0.2, retry_max_time=0.5)
    assert result['errors'] and result['retried'] < 3


def test_authentication_error_is_not_retried(serve, tmp_path):
    cdr_tree(tmp_path / 'ftp', count=1)
    server = serve(tmp_path / 'ftp')
    endpoint = _tls.Endpoint('localhost', server.port, ca_path=server.ca_file, timeout=5)
    with pytest.raises(_tls.AuthenticationError):
        _cdr.CdrMirror(endpoint, USER, 'wrong', '/cdr', str(tmp_path / 'dest'), retries=5, retry_delay=0).run()
    assert server.events.connections == 1 and server.events.logins == 0


def test_pin_mismatch_on_a_data_connection_says_what_was_sent(serve, tmp_path, authority):
    cdr_tree(tmp_path / 'ftp', count=1)
    files = {}
    for name in ('control', 'data'):
        certificate, key = authority.issue()
        files[name] = (tmp_path / (name + '.pem'), tmp_path / (name + '.key'))
        files[name][0].write_bytes(pki.certificate_pem(certificate))
        files[name][1].write_bytes(pki.key_pem(key))
        files[name + '_pin'] = pki.fingerprints(certificate)['sha256']
    ca_file = tmp_path / 'ca.pem'
    ca_file.write_bytes(pki.certificate_pem(authority.certificate))
    server = serve(tmp_path / 'ftp', cert_file=str(files['control'][0]), key_file=str(files['control'][1]), ca_file=str(ca_file),
                   data_certfile=str(files['data'][0]), data_keyfile=str(files['data'][1]))
    with pytest.raises(_tls.PinMismatchError) as caught:
        sync(server, tmp_path / 'dest', fingerprint=files['control_pin'])
    message = str(caught.value)
    assert 'Nothing was sent' not in message and files['data_pin'] in message
    assert 'USER %s and its password had been sent on the control connection' % USER in message and 'then MLSD' in message
    assert PASSWORD not in message
    assert server.events.logins == 1


# -- what the server no longer has -----------------------------------------------------------

@pytest.mark.parametrize('mlsd', [True, False])
def test_cut_listing_deletes_nothing(serve, tmp_path, mlsd):
    names = cdr_tree(tmp_path / 'ftp', count=6)
    dest = tmp_path / 'dest'
    assert sync(serve(tmp_path / 'ftp', mlsd=mlsd), dest)['counts']['fetched'] == 6
    os.unlink(dest / names[-1])
    cut = serve(tmp_path / 'ftp', mlsd=mlsd, cut_listing_after_bytes=150)
    mirror_run = mirror(cut, dest, delete=True, retries=1)
    result = mirror_run.run()
    assert visible(dest) == sorted(names[:-1])  # the local copies the cut listing did not name are all still there
    assert result['deleted'] == [] and result['missing_on_server'] == [] and result['listing_complete'] is False
    assert 'without a TLS close_notify' in result['listing_problem']
    assert cut.events.commands['MLSD' if mlsd else 'LIST'] == 2 and result['retried'] == 1 and cut.events.logins == 1
    assert any('nothing was deleted' in warning for warning in mirror_run.warnings)


def test_delete_removes_only_missing_matching_files(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest)
    (dest / 'MAG_old.zip').write_bytes(b'x')
    (dest / 'notes.txt').write_bytes(b'keep me')
    kept = sync(server, dest)
    assert kept['deleted'] == [] and kept['missing_on_server'] == ['MAG_old.zip', 'notes.txt'] and (dest / 'MAG_old.zip').exists()
    result = sync(server, dest, delete=True, patterns=['*.zip'])
    assert result['deleted'] == ['MAG_old.zip'] and result['changed'] is True and result['diff']['before'] == 'MAG_old.zip\n'
    assert visible(dest) == sorted(names + ['notes.txt'])


def test_delete_is_bounded_by_max_delete(serve, tmp_path):
    cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest)
    strays = ['MAG000001_199901%02d.zip' % day for day in range(1, 13)]
    for name in strays:
        (dest / name).write_bytes(b'gone from the server')
    result = sync(server, dest, delete=True)
    assert all((dest / name).exists() for name in strays)
    assert result['deleted'] == [] and result['would_delete'] == strays and result['changed'] is False
    result = sync(server, dest, delete=True, max_delete=12)
    assert result['deleted'] == strays and not any((dest / name).exists() for name in strays)


def test_unparsed_listing_line_spares_the_local_copy(serve, tmp_path):
    """Regression: an unread line was refused under its whole text, so delete removed the file it named."""
    names = cdr_tree(tmp_path / 'ftp', count=2)
    odd = '-rw-r--r--    1 ftp      ftp          1234 2024-01-02 10:22 MAG000001_20240101.zip'  # ISO times: not read
    server = serve(tmp_path / 'ftp', mlsd=False, raw_listing_lines=(odd,))
    dest = tmp_path / 'dest'
    dest.mkdir()
    (dest / 'MAG000001_20240101.zip').write_bytes(b'billing record still on the server')
    result = sync(server, dest, delete=True)
    assert (dest / 'MAG000001_20240101.zip').exists()
    assert result['deleted'] == [] and result['fetched'] == names
    assert result['refused'] == [{'name': odd, 'reason': 'listing line not understood', 'line': True}]


def test_empty_listing_never_deletes(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest)
    for name in names:
        os.unlink(tmp_path / 'ftp' / 'cdr' / name)
    run = mirror(server, dest, delete=True)
    result = run.run()
    assert result['deleted'] == [] and visible(dest) == names and result['missing_on_server'] == names
    assert any('named no file' in warning for warning in run.warnings)


def test_file_gone_from_the_server_is_kept_and_reported_once(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=3)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest)
    os.unlink(tmp_path / 'ftp' / 'cdr' / names[0])
    run = mirror(server, dest)
    result = run.run()
    assert (dest / names[0]).exists() and result['changed'] is False
    assert result['missing_on_server'] == [names[0]] and result['counts']['missing_on_server'] == 1
    assert len([warning for warning in run.warnings if names[0] in warning]) == 1


def test_file_that_vanishes_before_it_is_fetched_is_missing_not_an_error(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp', vanishing_names=('MAG000001_gone.zip',))
    result = sync(server, tmp_path / 'dest')
    assert result['errors'] == [] and result['fetched'] == names
    assert result['missing_on_server'] == ['MAG000001_gone.zip'] and server.events.commands['SIZE'] == 1


# -- local storage ---------------------------------------------------------------------------

FULL_DISK_CHILD = r'''
import json, subprocess, sys
dest, port, ca_file, parallel, user, password = sys.argv[1:7]
subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16k,mode=0755', 'cdr-full-disk-test', dest], check=True)
from ansible_collections.magrathea.secure.plugins.module_utils import _cdr, _tls
endpoint = _tls.Endpoint('localhost', int(port), ca_path=ca_file, timeout=5)
mirror = _cdr.CdrMirror(endpoint, user, password, '/cdr', dest, parallel=int(parallel), retries=5, retry_delay=0.0)
try:
    print(json.dumps({'result': mirror.run()}))
except Exception as exc:
    print(json.dumps({'error': type(exc).__name__, 'message': str(exc), 'path': getattr(exc, 'path', None),
                      'errno': getattr(exc, 'errno', None), 'retried': mirror.retried}))
'''


def sync_onto_full_disk(server, dest, parallel):
    """A sync in a private mount namespace whose dest is a 16 KiB tmpfs (needs root, as make test runs)."""
    dest.mkdir()
    done = subprocess.run(['unshare', '--mount', '--propagation', 'private', sys.executable, '-c', FULL_DISK_CHILD,
                           str(dest), str(server.port), server.ca_file, str(parallel), USER, PASSWORD],
                          capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize('parallel', [1, 4])
def test_full_disk_stops_the_run_at_once_without_retries_or_new_logins(serve, tmp_path, parallel):
    """Regression: ENOSPC was taken for a dropped connection, each file retried with a new login (36 logins here)."""
    cdr_tree(tmp_path / 'ftp', count=6, size=60_000)
    server = serve(tmp_path / 'ftp')
    outcome = sync_onto_full_disk(server, tmp_path / 'dest', parallel)
    assert outcome.get('error') == 'LocalStorageError', outcome
    assert outcome['errno'] == errno.ENOSPC and outcome['path'].startswith(str(tmp_path / 'dest') + '/.cdr_sync.part.')
    assert 'cannot write %s: No space left on device (ENOSPC)' % outcome['path'] in outcome['message']
    assert 'without retrying' in outcome['message'] and 'dropped' not in outcome['message']
    assert outcome['retried'] == 0
    assert server.events.logins == 1 if parallel == 1 else 1 <= server.events.logins <= parallel


def test_lock_keeps_a_second_run_out(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    with _cdr_store.DestLock(str(dest), 5):
        with pytest.raises(_cdr_store.LockTimeout, match='another cdr_sync run'):
            with _cdr_store.DestLock(str(dest), 0.3):
                pass
    with _cdr_store.DestLock(str(dest), 0.3):
        pass


def test_concurrent_runs_on_one_dest_serialise(serve, tmp_path):
    cdr_tree(tmp_path / 'ftp', count=6)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    results = []
    threads = [threading.Thread(target=lambda: results.append(sync(server, dest))) for dummy in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(result['fetched']) for result in results) == [0, 0, 6]
    assert_identical(tmp_path / 'ftp', dest)


def test_corrupt_manifest_is_rebuilt_with_warning(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest)
    (dest / _cdr_store.MANIFEST_NAME).write_text('{not json')
    run = mirror(server, dest)
    result = run.run()
    assert result['changed'] is True and any('could not be read' in warning for warning in run.warnings)
    assert sorted(json.loads((dest / _cdr_store.MANIFEST_NAME).read_text())['files']) == names


def test_version_1_manifest_is_read_and_rewritten_on_change(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp', mlsd=False)
    dest = tmp_path / 'dest'
    sync(server, dest)
    path = dest / _cdr_store.MANIFEST_NAME
    current = json.loads(path.read_text())
    old = {name: {'size': entry['size'], 'mtime': entry['mtime'], 'sha256': entry['sha256'], 'fetched': entry['fetched'],
                  'listed': entry['listed_time']} for name, entry in current['files'].items()}
    path.write_text(json.dumps({'version': 1, 'source': current['source'], 'files': old}))
    asked = server.events.commands['MDTM']
    assert sync(server, dest)['changed'] is False and server.events.commands['MDTM'] == asked
    put(tmp_path / 'ftp', 'MAG000001_new.zip', make_zip())
    assert sync(server, dest)['fetched'] == ['MAG000001_new.zip']
    files = json.loads(path.read_text())['files']
    assert sorted(files) == sorted(names + ['MAG000001_new.zip']) and files[names[0]]['listed'] == old[names[0]]['listed']


def test_mode_is_corrected_on_up_to_date_files(serve, tmp_path):
    names = cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp')
    dest = tmp_path / 'dest'
    sync(server, dest, attributes=chmod_to(0o640))
    os.chmod(dest / names[0], 0o666)
    assert sync(server, dest, attributes=chmod_to(0o640, check_mode=True), check_mode=True)['attributes_changed'] == [names[0]]
    assert os.stat(dest / names[0]).st_mode & 0o777 == 0o666
    result = sync(server, dest, attributes=chmod_to(0o640))
    assert result['attributes_changed'] == [names[0]] and result['changed'] is True
    assert os.stat(dest / names[0]).st_mode & 0o777 == 0o640
    assert os.stat(dest / _cdr_store.MANIFEST_NAME).st_mode & 0o777 == 0o640
    assert sync(server, dest, attributes=chmod_to(0o640))['changed'] is False


def test_dest_that_is_a_file_is_refused(serve, tmp_path):
    cdr_tree(tmp_path / 'ftp', count=1)
    target = tmp_path / 'file'
    target.write_text('x')
    with pytest.raises(_cdr_store.DestinationError, match='not a directory'):
        sync(serve(tmp_path / 'ftp'), target)


def test_listing_memory_is_bounded_by_what_is_kept(serve, tmp_path):
    """Regression: the listing was read whole, then split and parsed whole (about 46 MB for 6 MB of listing)."""
    cdr_tree(tmp_path / 'ftp', count=2)
    server = serve(tmp_path / 'ftp', listing_padding=50_000)
    tracemalloc.start()
    try:
        result = sync(server, tmp_path / 'dest', patterns=['*.zip'])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result['counts']['listed'] == 50_002 and result['counts']['fetched'] == 2
    assert peak < 2_000_000, peak
