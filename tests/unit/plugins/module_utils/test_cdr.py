# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CDR mirror logic against a scripted FTPS client: decisions, safe writes, manifest, lock, retries."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import zipfile

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _cdr
from ansible_collections.magrathea.secure.plugins.module_utils._ftps import FtpReplyError, RemoteFile, TransferIncomplete
from ansible_collections.magrathea.secure.plugins.module_utils._tls import AuthenticationError, MagratheaConnectionError

DAY = 86400
T0 = 1_700_000_000  # a fixed, whole-second remote mtime


def make_zip(text='calldate,duration\n2025-01-01,10\n', stored=False):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as archive:
        archive.writestr('cdr.csv', text * 50)
    return buffer.getvalue()


class FakeServer:
    """What the fake clients see: files, listing style and scripted faults."""

    def __init__(self, files, mlsd=True):
        self.files = dict(files)  # name -> (bytes, mtime)
        self.mlsd = mlsd
        self.extra_listing = []   # RemoteFile entries listed but not retrievable
        self.unparsed = []
        self.refuse_connects = 0  # the next N connects answer 421
        self.max_clients = 0      # 421 when more clients are connected at once
        self.drop_after = {}      # name -> bytes sent before every RETR of it drops
        self.mdtm_fails = set()   # names whose MDTM drops the connection
        self.fail_auth = False
        self.lock = threading.Lock()
        self.connected = 0
        self.peak = 0
        self.connects = 0
        self.retrievals = []      # (name, offset)
        self.mdtm_calls = 0

    def listing(self):
        entries = []
        for name, (data, mtime) in sorted(self.files.items()):
            if self.mlsd:
                entries.append(RemoteFile(name, len(data), mtime, 1, str(mtime)))
            else:
                minute = mtime - mtime % 60
                entries.append(RemoteFile(name, len(data), minute, 60, 'tok-%d' % minute))
        return entries + list(self.extra_listing), list(self.unparsed)


class FakeClient:
    def __init__(self, server):
        self.server = server
        self.data_connections = 0
        self.sessions_reused = 0
        self.open = False

    def connect(self):
        server = self.server
        with server.lock:
            server.connects += 1
            if server.fail_auth:
                raise AuthenticationError('fake refused the login')
            if server.refuse_connects:
                server.refuse_connects -= 1
                raise FtpReplyError('fake: 421 too many connections', 421)
            if server.max_clients and server.connected >= server.max_clients:
                raise FtpReplyError('fake: 421 too many connections', 421)
            server.connected += 1
            server.peak = max(server.peak, server.connected)
        self.open = True
        return self

    def close(self):
        if self.open:
            with self.server.lock:
                self.server.connected -= 1
            self.open = False

    tls_version = 'TLSv1.3'

    @property
    def has_mlsd(self):
        return self.server.mlsd

    def cwd(self, path):
        assert path == '/cdr'

    def list_dir(self):
        self.data_connections += 1
        self.sessions_reused += 1
        return self.server.listing()

    def mdtm(self, name):
        self.server.mdtm_calls += 1
        if name in self.server.mdtm_fails:
            raise MagratheaConnectionError('fake: connection lost during MDTM %s' % name)
        return self.server.files[name][1]

    def size(self, name):
        return len(self.server.files[name][0])

    def retrieve(self, name, sink, offset=0):
        if name not in self.server.files:
            raise FtpReplyError('fake: 550 %s: no such file' % name, 550)
        self.data_connections += 1
        self.sessions_reused += 1
        with self.server.lock:
            self.server.retrievals.append((name, offset))
        data = self.server.files[name][0][offset:]
        limit = self.server.drop_after.get(name)
        if limit is not None and len(data) > limit:
            sink(memoryview(data[:limit]))
            raise TransferIncomplete('fake: dropped %s after %d bytes' % (name, limit))
        for start in range(0, len(data), 1000):
            sink(memoryview(data[start:start + 1000]))
        return len(data)


class FakeEndpoint:
    def describe(self):
        return 'fake:21'


def mirror(server, dest, **kwargs):
    kwargs.setdefault('retry_delay', 0.0)
    return _cdr.CdrMirror(FakeEndpoint(), 'user', 'secret', '/cdr', str(dest),
                          client_factory=lambda endpoint, user, password: FakeClient(server), **kwargs)


def cdr_files(count=5, size_text='x'):
    return {'MAG_2025010%d.zip' % index: (make_zip(size_text * index), T0 + index * DAY) for index in range(1, count + 1)}


def visible(dest):
    return sorted(name for name in os.listdir(dest) if not name.startswith('.'))


def assert_identical(server, dest):
    for name, (data, mtime) in server.files.items():
        path = os.path.join(dest, name)
        with open(path, 'rb') as handle:
            assert handle.read() == data, name
        assert int(os.stat(path).st_mtime) == mtime, name


# -- names and small parsers ----------------------------------------------------------------

@pytest.mark.parametrize('name, refused', [
    ('MAG000001_20250101.zip', False),
    ('cdr 2025-01-01.csv', False),
    ('.hidden.zip', False),
    ('é.zip', False),
    ('..', True),
    ('.', True),
    ('', True),
    ('../x', True),
    ('a/b', True),
    ('/etc/passwd', True),
    ('back\\slash', True),
    ('nul\x00byte', True),
    ('new\nline', True),
    ('carriage\rreturn', True),
    ('tab\tname', True),
    ('.cdr_sync.manifest.json', True),
    ('.cdr_sync.part.1.2.x', True),
    ('x' * 256, True),
    ('x' * 255, False),
])
def test_unsafe_names(name, refused):
    assert (_cdr.unsafe_name_reason(name) is not None) is refused


@pytest.mark.parametrize('text, expected', [
    ('2025-01-02', 1735776000),
    ('2025-01-02T03:04:05', 1735776000 + 3 * 3600 + 4 * 60 + 5),
    ('2025-01-02 03:04', 1735776000 + 3 * 3600 + 4 * 60),
    ('2025-01-02T03:04:05Z', 1735776000 + 3 * 3600 + 4 * 60 + 5),
])
def test_parse_newer_than(text, expected):
    assert _cdr.parse_newer_than(text) == expected


@pytest.mark.parametrize('text', ['yesterday', '2025-13-01', '02/01/2025'])
def test_parse_newer_than_rejects(text):
    with pytest.raises(ValueError, match='YYYY-MM-DD'):
        _cdr.parse_newer_than(text)


@pytest.mark.parametrize('value, expected', [('0640', 0o640), ('640', 0o640), (0o600, 0o600), ('0o644'[2:], 0o644)])
def test_parse_mode(value, expected):
    assert _cdr.parse_mode(value) == expected


@pytest.mark.parametrize('value', ['u+rw', '0999', '', 0o10000])
def test_parse_mode_rejects(value):
    with pytest.raises(ValueError):
        _cdr.parse_mode(value)


def test_iso_round_trip():
    assert _cdr.epoch_of_iso(_cdr.iso_utc(T0)) == T0
    assert _cdr.epoch_of_iso(None) is None


def test_resolve_ids():
    assert _cdr.resolve_ids(None, None) == (-1, -1)
    assert _cdr.resolve_ids('root', '0') == (0, 0)
    with pytest.raises(ValueError, match='not a user'):
        _cdr.resolve_ids('no-such-user-here', None)


# -- sync -----------------------------------------------------------------------------------

def test_full_sync_then_noop(tmp_path):
    server = FakeServer(cdr_files())
    dest = tmp_path / 'cdr'
    first = mirror(server, dest, mode=0o640).run()
    assert first['changed'] is True
    assert first['fetched'] == sorted(server.files)
    assert first['counts']['fetched'] == 5 and first['bytes'] == sum(len(d) for d, m in server.files.values())
    assert_identical(server, dest)
    assert visible(dest) == sorted(server.files)
    assert not [name for name in os.listdir(dest) if name.startswith(_cdr.PARTIAL_PREFIX)]
    for name in server.files:
        assert os.stat(dest / name).st_mode & 0o7777 == 0o640

    manifest = json.loads((dest / _cdr.MANIFEST_NAME).read_text())
    for name, (data, mtime) in server.files.items():
        entry = manifest['files'][name]
        assert entry['sha256'] == hashlib.sha256(data).hexdigest()
        assert entry['size'] == len(data) and entry['mtime'] == _cdr.iso_utc(mtime) and entry['fetched']

    retrievals = len(server.retrievals)
    second = mirror(server, dest, mode=0o640).run()
    assert second['changed'] is False
    assert second['fetched'] == [] and second['counts']['up_to_date'] == 5
    assert len(server.retrievals) == retrievals
    assert second['connections'] == 1


def test_changed_and_new_files_are_fetched_only(tmp_path):
    server = FakeServer(cdr_files(3))
    dest = tmp_path / 'cdr'
    mirror(server, dest).run()
    server.files['MAG_20250102.zip'] = (make_zip('changed'), T0 + 10 * DAY)
    server.files['MAG_20250109.zip'] = (make_zip('new'), T0 + 9 * DAY)
    server.retrievals.clear()
    result = mirror(server, dest).run()
    assert result['fetched'] == ['MAG_20250102.zip', 'MAG_20250109.zip']
    assert sorted(name for name, offset in server.retrievals) == ['MAG_20250102.zip', 'MAG_20250109.zip']
    assert_identical(server, dest)


def test_same_size_new_mtime_is_fetched(tmp_path):
    server = FakeServer({'a.csv': (b'1234', T0)})
    dest = tmp_path / 'cdr'
    mirror(server, dest).run()
    server.files['a.csv'] = (b'5678', T0 + 60)
    result = mirror(server, dest).run()
    assert result['fetched'] == ['a.csv']
    assert (dest / 'a.csv').read_bytes() == b'5678'


def test_list_server_noop_needs_no_mdtm_after_first_sync(tmp_path):
    server = FakeServer(cdr_files(4), mlsd=False)
    dest = tmp_path / 'cdr'
    mirror(server, dest).run()
    assert_identical(server, dest)  # exact mtime from MDTM, not the listed minute
    server.mdtm_calls = 0
    result = mirror(server, dest).run()
    assert result['changed'] is False and server.mdtm_calls == 0


def test_list_server_without_manifest_asks_mdtm_and_backfills(tmp_path):
    server = FakeServer(cdr_files(2), mlsd=False)
    dest = tmp_path / 'cdr'
    mirror(server, dest).run()
    os.unlink(dest / _cdr.MANIFEST_NAME)
    server.mdtm_calls = 0
    result = mirror(server, dest).run()
    assert result['fetched'] == [] and server.mdtm_calls == 2
    assert result['changed'] is True  # the manifest was rebuilt
    manifest = json.loads((dest / _cdr.MANIFEST_NAME).read_text())
    assert set(manifest['files']) == set(server.files)
    assert all(entry['fetched'] is None for entry in manifest['files'].values())
    assert mirror(server, dest).run()['changed'] is False


def test_patterns_and_newer_than(tmp_path):
    files = cdr_files(4)
    files['README.txt'] = (b'hello', T0)
    server = FakeServer(files)
    dest = tmp_path / 'cdr'
    result = mirror(server, dest, patterns=['*.zip'], newer_than=T0 + 3 * DAY).run()
    assert result['fetched'] == ['MAG_20250103.zip', 'MAG_20250104.zip']
    assert result['counts']['listed'] == 5 and result['counts']['matched'] == 2


def test_check_mode_writes_nothing(tmp_path):
    server = FakeServer(cdr_files(3))
    dest = tmp_path / 'cdr'
    result = mirror(server, dest, check_mode=True).run()
    assert result['changed'] is True and result['fetched'] == sorted(server.files)
    assert not dest.exists() and server.retrievals == []

    dest.mkdir()
    (dest / 'old.zip').write_bytes(b'gone from the server')
    before = sorted(os.listdir(dest))
    result = mirror(server, dest, check_mode=True, delete=True).run()
    assert result['deleted'] == ['old.zip'] and result['fetched'] == sorted(server.files)
    assert sorted(os.listdir(dest)) == before


def test_hostile_names_are_refused_and_nothing_leaves_dest(tmp_path):
    server = FakeServer(cdr_files(2))
    for name in ('../x', 'a/b', '..', '.', 'back\\slash', 'new\nline', '.cdr_sync.lock'):
        server.extra_listing.append(RemoteFile(name, 42, T0))
    server.unparsed.append('garbage line')
    dest = tmp_path / 'deep' / 'cdr'
    result = mirror(server, dest).run()
    refused = {entry['name'] for entry in result['refused']}
    assert refused == {'../x', 'a/b', '..', '.', 'back\\slash', 'new\nline', '.cdr_sync.lock', 'garbage line'}
    assert result['fetched'] == sorted(server.files)
    assert sorted(name for name, offset in server.retrievals) == sorted(server.files)
    assert sorted(os.listdir(tmp_path)) == ['deep'] and sorted(os.listdir(tmp_path / 'deep')) == ['cdr']


def test_local_symlink_is_refused_not_followed(tmp_path):
    server = FakeServer({'a.zip': (make_zip(), T0)})
    dest = tmp_path / 'cdr'
    dest.mkdir()
    outside = tmp_path / 'outside'
    outside.write_bytes(b'precious')
    os.symlink(outside, dest / 'a.zip')
    result = mirror(server, dest).run()
    assert [entry['name'] for entry in result['refused']] == ['a.zip']
    assert outside.read_bytes() == b'precious'
    assert result['fetched'] == []


def test_drop_resumes_with_rest_and_final_name_never_partial(tmp_path):
    data = make_zip('resume me ' * 10, stored=True)
    assert len(data) > 2000
    server = FakeServer({'big.zip': (data, T0)})
    server.drop_after['big.zip'] = 700
    dest = tmp_path / 'cdr'
    first = mirror(server, dest, retries=0).run()
    assert first['errors'] and first['errors'][0]['name'] == 'big.zip'
    assert first['bytes'] == 700  # what crossed the network, though nothing was stored
    assert not (dest / 'big.zip').exists()
    partials = [name for name in os.listdir(dest) if name.startswith(_cdr.PARTIAL_PREFIX)]
    assert len(partials) == 1 and os.path.getsize(dest / partials[0]) == 700
    assert os.stat(dest / partials[0]).st_mode & 0o777 == 0o600

    server.retrievals.clear()
    second = mirror(server, dest, retries=len(data) // 700 + 1).run()
    assert second['fetched'] == ['big.zip'] and not second['errors']
    offsets = [offset for name, offset in server.retrievals]
    assert offsets == list(range(700, len(data), 700))
    assert (dest / 'big.zip').read_bytes() == data
    assert not [name for name in os.listdir(dest) if name.startswith(_cdr.PARTIAL_PREFIX)]
    manifest = json.loads((dest / _cdr.MANIFEST_NAME).read_text())
    assert manifest['files']['big.zip']['sha256'] == hashlib.sha256(data).hexdigest()


def test_partial_survives_a_run_that_fails_before_its_exact_time_is_known(tmp_path):
    data = make_zip('list server ' * 10, stored=True)
    server = FakeServer({'a.zip': (data, T0 + 7)}, mlsd=False)  # the listing shows the minute, MDTM the second
    server.drop_after['a.zip'] = 500
    dest = tmp_path / 'cdr'
    mirror(server, dest, retries=0).run()
    partials = [name for name in os.listdir(dest) if name.startswith(_cdr.PARTIAL_PREFIX)]
    assert len(partials) == 1
    server.drop_after.clear()
    server.mdtm_fails.add('a.zip')
    failed = mirror(server, dest, retries=0).run()
    assert failed['errors'] and [name for name in os.listdir(dest) if name.startswith(_cdr.PARTIAL_PREFIX)] == partials
    server.mdtm_fails.clear()
    server.retrievals.clear()
    done = mirror(server, dest).run()
    assert done['fetched'] == ['a.zip'] and server.retrievals == [('a.zip', 500)]
    assert (dest / 'a.zip').read_bytes() == data


def test_long_name_resumes_through_a_hashed_temporary_name(tmp_path):
    name = 'MAG_' + 'x' * 240 + '.zip'
    data = make_zip('long ' * 20, stored=True)
    server = FakeServer({name: (data, T0)})
    server.drop_after[name] = 300
    dest = tmp_path / 'cdr'
    mirror(server, dest, retries=0).run()
    partials = [entry for entry in os.listdir(dest) if entry.startswith(_cdr.PARTIAL_PREFIX)]
    assert len(partials) == 1 and len(partials[0]) < 100
    server.drop_after.clear()
    server.retrievals.clear()
    assert mirror(server, dest).run()['fetched'] == [name]
    assert server.retrievals == [(name, 300)] and (dest / name).read_bytes() == data


def test_partial_of_an_older_version_is_not_resumed(tmp_path):
    server = FakeServer({'a.zip': (make_zip('old'), T0)})
    server.drop_after['a.zip'] = 100
    dest = tmp_path / 'cdr'
    mirror(server, dest, retries=0).run()
    new = make_zip('new version')
    server.files['a.zip'] = (new, T0 + 5)
    server.drop_after.clear()
    server.retrievals.clear()
    result = mirror(server, dest).run()
    assert result['fetched'] == ['a.zip'] and server.retrievals == [('a.zip', 0)]
    assert (dest / 'a.zip').read_bytes() == new
    assert [name for name in os.listdir(dest) if name.startswith(_cdr.PARTIAL_PREFIX)] == []


def test_corrupt_zip_is_kept_out_and_reported(tmp_path):
    good = make_zip()
    bad = bytearray(make_zip('corrupt me ', stored=True))
    bad[200] ^= 0xFF  # inside the stored member: only the CRC check can see it
    server = FakeServer({'good.zip': (good, T0), 'bad.zip': (bytes(bad), T0)})
    dest = tmp_path / 'cdr'
    result = mirror(server, dest).run()
    assert [entry['name'] for entry in result['corrupt']] == ['bad.zip']
    assert result['fetched'] == ['good.zip']
    assert not (dest / 'bad.zip').exists()
    assert [name for name in os.listdir(dest) if name.startswith(_cdr.PARTIAL_PREFIX)] == []
    assert 'bad.zip' not in json.loads((dest / _cdr.MANIFEST_NAME).read_text())['files']
    unchecked = mirror(server, tmp_path / 'unchecked', zip_check=False).run()
    assert unchecked['fetched'] == ['bad.zip', 'good.zip']


def test_truncated_zip_with_valid_name_is_corrupt(tmp_path):
    server = FakeServer({'short.zip': (make_zip()[:-30], T0)})
    result = mirror(server, tmp_path / 'cdr').run()
    assert [entry['name'] for entry in result['corrupt']] == ['short.zip']


def test_421_on_secondary_connections_all_files_still_arrive(tmp_path):
    server = FakeServer(cdr_files(8))
    server.max_clients = 2
    result = mirror(server, tmp_path / 'cdr', parallel=4, retries=2).run()
    assert result['fetched'] == sorted(server.files) and not result['errors']
    assert server.peak <= 2 and result['retried'] > 0
    assert_identical(server, tmp_path / 'cdr')


def test_421_at_first_connect_is_retried(tmp_path):
    server = FakeServer(cdr_files(2))
    server.refuse_connects = 2
    result = mirror(server, tmp_path / 'cdr', parallel=1, retries=3).run()
    assert result['fetched'] == sorted(server.files) and result['retried'] == 2
    with pytest.raises(FtpReplyError):
        server.refuse_connects = 5
        mirror(server, tmp_path / 'other', parallel=1, retries=2).run()


def test_retries_are_bounded_in_time(tmp_path):
    server = FakeServer({'a.zip': (make_zip(), T0)})
    server.drop_after['a.zip'] = 10
    started = time.monotonic()
    result = mirror(server, tmp_path / 'cdr', retries=1000, retry_delay=0.05, retry_max_time=0.5).run()
    assert result['errors'] and time.monotonic() - started < 3


def test_authentication_error_is_not_retried(tmp_path):
    server = FakeServer(cdr_files(1))
    server.fail_auth = True
    with pytest.raises(AuthenticationError):
        mirror(server, tmp_path / 'cdr', retries=5).run()
    assert server.connects == 1


def test_vanished_file_fails_alone(tmp_path):
    server = FakeServer(cdr_files(2))
    server.extra_listing.append(RemoteFile('ghost.zip', 10, T0))
    result = mirror(server, tmp_path / 'cdr').run()
    assert [entry['name'] for entry in result['errors']] == ['ghost.zip']
    assert result['fetched'] == sorted(server.files)


def test_delete_removes_only_missing_matching_files(tmp_path):
    server = FakeServer(cdr_files(2))
    dest = tmp_path / 'cdr'
    mirror(server, dest).run()
    (dest / 'MAG_old.zip').write_bytes(b'x')
    (dest / 'notes.txt').write_bytes(b'keep me')
    kept = mirror(server, dest).run()
    assert kept['deleted'] == [] and (dest / 'MAG_old.zip').exists()
    result = mirror(server, dest, delete=True, patterns=['*.zip']).run()
    assert result['deleted'] == ['MAG_old.zip'] and result['changed'] is True
    assert (dest / 'notes.txt').exists() and not (dest / 'MAG_old.zip').exists()


def test_empty_listing_never_deletes(tmp_path):
    server = FakeServer(cdr_files(2))
    dest = tmp_path / 'cdr'
    mirror(server, dest).run()
    server.files.clear()
    sync = mirror(server, dest, delete=True)
    result = sync.run()
    assert result['deleted'] == [] and len(visible(dest)) == 2
    assert any('empty' in warning for warning in sync.warnings)


def test_mode_is_corrected_on_up_to_date_files(tmp_path):
    server = FakeServer(cdr_files(2))
    dest = tmp_path / 'cdr'
    mirror(server, dest, mode=0o640).run()
    os.chmod(dest / 'MAG_20250101.zip', 0o666)
    result = mirror(server, dest, mode=0o640).run()
    assert result['attributes_changed'] == ['MAG_20250101.zip'] and result['changed'] is True
    assert os.stat(dest / 'MAG_20250101.zip').st_mode & 0o777 == 0o640
    assert mirror(server, dest, mode=0o640).run()['changed'] is False


def test_lock_keeps_a_second_run_out(tmp_path):
    dest = tmp_path / 'cdr'
    dest.mkdir()
    with _cdr.DestLock(str(dest), 5):
        with pytest.raises(_cdr.LockTimeout, match='another cdr_sync run'):
            with _cdr.DestLock(str(dest), 0.3):
                pass
    with _cdr.DestLock(str(dest), 0.3):
        pass


def test_concurrent_runs_on_one_dest_serialise(tmp_path):
    server = FakeServer(cdr_files(6))
    dest = tmp_path / 'cdr'
    results = []
    threads = [threading.Thread(target=lambda: results.append(mirror(server, dest).run())) for dummy in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(result['fetched']) for result in results) == [0, 0, 6]
    assert_identical(server, dest)


def test_corrupt_manifest_is_rebuilt_with_warning(tmp_path):
    server = FakeServer(cdr_files(2))
    dest = tmp_path / 'cdr'
    mirror(server, dest).run()
    (dest / _cdr.MANIFEST_NAME).write_text('{not json')
    sync = mirror(server, dest)
    result = sync.run()
    assert result['changed'] is True and any('could not be read' in warning for warning in sync.warnings)
    assert set(json.loads((dest / _cdr.MANIFEST_NAME).read_text())['files']) == set(server.files)


def test_dest_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / 'file'
    target.write_text('x')
    with pytest.raises(_cdr.DestinationError, match='not a directory'):
        mirror(FakeServer({}), target).run()


def test_transient_classification():
    assert _cdr.is_transient(FtpReplyError('x', 421))
    assert _cdr.is_transient(FtpReplyError('x', 426))
    assert not _cdr.is_transient(FtpReplyError('x', 550))
    assert _cdr.is_transient(MagratheaConnectionError('dropped'))
    assert _cdr.is_transient(TransferIncomplete('short'))
    assert not _cdr.is_transient(AuthenticationError('no'))
