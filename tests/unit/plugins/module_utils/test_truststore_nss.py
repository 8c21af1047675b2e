# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""NSS databases and the Firefox policy: discovery on fake home directories, certutil writes on throwaway databases."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_firefox, _truststore_nss, _truststore_users
from ansible_collections.magrathea.secure.plugins.module_utils._certificate import parse_certificates
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import CommandRunner, converge
from ansible_collections.magrathea.secure.sandbox import pki

NOBODY = pwd.getpwnam('nobody')


class RecordingRunner(CommandRunner):
    def __init__(self):
        self.calls = []

    def run(self, argv, data=None, env=None, user=None):
        self.calls.append((list(argv), user))
        return super().run(argv, data=data, env=env, user=user)


def certutil(database, *args, data=None):
    return subprocess.run(['certutil'] + list(args) + ['-d', 'sql:' + database], input=data, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout.decode()


@pytest.fixture(name='world')
def world_fixture():
    """A directory every user can traverse (pytest's own tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix='magrathea-nss-test-')
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def new_database(parent, name='nssdb', owner=None):
    path = os.path.join(parent, name)
    os.makedirs(path)
    certutil(path, '-N', '--empty-password')
    if owner:
        for item in [path] + [os.path.join(path, entry) for entry in os.listdir(path)]:
            os.chown(item, owner.pw_uid, owner.pw_gid)
    return path


@pytest.fixture(name='ca', scope='module')
def ca_fixture():
    authority = pki.CertificateAuthority('Magrathea NSS Test Root')
    return parse_certificates(pki.certificate_pem(authority.certificate))[0], authority


def test_sql_reader_agrees_with_certutil(world, ca):
    database = new_database(world)
    leaf, dummy = ca[1].issue()
    certutil(database, '-A', '-n', 'Mag Root', '-t', 'C,,', '-a', data=ca[0].pem.encode())
    certutil(database, '-A', '-n', 'a server', '-t', ',,', '-a', data=pki.certificate_pem(leaf))
    entries = sorted((entry.nickname, entry.sha256, entry.trusted) for entry in _truststore_nss.read_sql_database(database))
    assert entries == sorted([('Mag Root', ca[0].sha256, True), ('a server', hashlib.sha256(leaf.public_bytes(
        pki.serialization.Encoding.DER)).hexdigest(), False)])
    store = _truststore_nss.NssDatabase(database)
    assert sorted((entry.nickname, entry.trusted) for entry in store._read_with_certutil()) == [('Mag Root', True), ('a server', False)]
    assert _truststore_nss.parse_certutil_list(certutil(database, '-L')) == [('Mag Root', 'C,,'), ('a server', ',,')]


def test_install_is_idempotent_and_the_no_op_runs_nothing(world, ca):
    database = new_database(world)
    runner = RecordingRunner()
    results, changed, diff = converge([_truststore_nss.NssDatabase(database, runner=runner)], [ca[0]], ['Magrathea Root'], 'present')
    assert changed and results[0]['status'] == 'present' and results[0]['database'] == 'sql:' + database
    assert ('Magrathea Root', 'C,,') in _truststore_nss.parse_certutil_list(certutil(database, '-L'))
    assert diff['after']['stores'][database]['Magrathea Root']['trusted'] is True
    runner = RecordingRunner()
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database, runner=runner)], [ca[0]], ['Magrathea Root'], 'present')
    assert not changed and runner.calls == []


def test_present_under_another_nickname_is_present(world, ca):
    database = new_database(world)
    certutil(database, '-A', '-n', 'Added by hand', '-t', 'CT,C,C', '-a', data=ca[0].pem.encode())
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database)], [ca[0]], ['Magrathea Root'], 'present')
    assert not changed


def test_held_but_untrusted_gets_trust_and_keeps_other_flags(world, ca):
    database = new_database(world)
    certutil(database, '-A', '-n', 'Imported', '-t', ',C,', '-a', data=ca[0].pem.encode())
    assert _truststore_nss.NssDatabase(database).state(ca[0], 'Magrathea Root') == 'untrusted'
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database)], [ca[0]], ['Magrathea Root'], 'present')
    assert changed and results[0]['changes'][0]['action'] == 'trust'
    assert ('Imported', 'C,C,') in _truststore_nss.parse_certutil_list(certutil(database, '-L'))


def test_conflict_and_replace(world, ca):
    database = new_database(world)
    other = pki.CertificateAuthority('Other Root')
    certutil(database, '-A', '-n', 'Magrathea Root', '-t', 'C,,', '-a', data=pki.certificate_pem(other.certificate))
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database)], [ca[0]], ['Magrathea Root'], 'present')
    assert results[0]['status'] == 'conflict' and not changed
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database)], [ca[0]], ['Magrathea Root'], 'present', replace=True)
    assert changed and [change['action'] for change in results[0]['changes']] == ['delete', 'add']
    entries = _truststore_nss.read_sql_database(database)
    assert [(entry.nickname, entry.sha256) for entry in entries] == [('Magrathea Root', ca[0].sha256)]


def test_remove_deletes_every_nickname(world, ca):
    database = new_database(world)
    certutil(database, '-A', '-n', 'Magrathea Root', '-t', 'C,,', '-a', data=ca[0].pem.encode())
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database)], [ca[0]], ['Anything'], 'absent')
    assert changed and results[0]['changes'][0]['entry'] == 'Magrathea Root'
    assert _truststore_nss.read_sql_database(database) == []
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database)], [ca[0]], ['Anything'], 'absent')
    assert not changed


def digest(database):
    return hashlib.sha256(open(os.path.join(database, 'cert9.db'), 'rb').read()).hexdigest()


def test_check_mode_and_missing_certutil_write_nothing(world, ca):
    database = new_database(world)
    before = digest(database)
    runner = RecordingRunner()
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database, check_mode=True, runner=runner)], [ca[0]], ['M'], 'present')
    assert changed and runner.calls == []
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database, certutil='/nonexistent/certutil')], [ca[0]], ['M'], 'present')
    assert results[0]['cause'] == 'tool_missing' and 'libnss3-tools' in results[0]['msg']
    assert digest(database) == before


def owners(database):
    return set((entry, os.stat(os.path.join(database, entry)).st_uid) for entry in os.listdir(database))


def test_writes_as_the_owner(world, ca):
    database = new_database(world, owner=NOBODY)
    runner = RecordingRunner()
    results, changed, dummy = converge([_truststore_nss.NssDatabase(database, runner=runner)], [ca[0]], ['M'], 'present')
    assert changed and results[0]['owner'] == 'nobody'
    assert all(user.pw_name == 'nobody' for dummy, user in runner.calls)
    assert set(uid for dummy, uid in owners(database)) == {NOBODY.pw_uid}


def test_read_only_database_names_the_nss_error(world, ca):
    good = new_database(world, 'good', owner=NOBODY)
    bad = new_database(world, 'bad', owner=NOBODY)
    for name in ('cert9.db', 'key4.db'):
        os.chmod(os.path.join(bad, name), 0o400)
    stores = [_truststore_nss.NssDatabase(bad), _truststore_nss.NssDatabase(good)]
    results, changed, dummy = converge(stores, [ca[0]], ['M'], 'present')
    assert results[0]['status'] == 'failed' and results[0]['cause'] == 'SEC_ERROR_READ_ONLY'
    assert 'read-only for its owner nobody' in results[0]['msg'] and bad in results[0]['msg']
    assert results[1]['status'] == 'present' and changed


@pytest.mark.parametrize('make, cause', [
    (lambda world: os.path.join(world, 'missing'), 'missing_database'),
    (lambda world: tempfile.mkdtemp(dir=world), 'not_a_database'),
])
def test_not_a_database(world, ca, make, cause):
    results, dummy, dummy2 = converge([_truststore_nss.NssDatabase(make(world))], [ca[0]], ['M'], 'present')
    assert results[0]['cause'] == cause


def fake_user(name, home, uid=NOBODY.pw_uid, gid=NOBODY.pw_gid):
    return pwd.struct_passwd((name, 'x', uid, gid, '', home, '/bin/sh'))


def test_create_chromium_database_as_the_user(world, ca):
    home = os.path.join(world, 'home')
    os.mkdir(home)
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    stores = _truststore_nss.discover(users=['kiosk'], create_chromium_db=True, passwd=[fake_user('kiosk', home)])
    assert [(store.path, store.create) for store in stores] == [(os.path.join(home, '.pki/nssdb'), True)]
    results, changed, dummy = converge(stores, [ca[0]], ['M'], 'present')
    assert changed and [change['action'] for change in results[0]['changes']] == ['create', 'add']
    for path in (os.path.join(home, '.pki'), os.path.join(home, '.pki/nssdb')):
        assert os.stat(path).st_uid == NOBODY.pw_uid and os.stat(path).st_mode & 0o777 == 0o700
    assert set(uid for dummy, uid in owners(os.path.join(home, '.pki/nssdb'))) == {NOBODY.pw_uid}
    stores = _truststore_nss.discover(users=['kiosk'], create_chromium_db=True, passwd=[fake_user('kiosk', home)])
    assert [store.create for store in stores] == [False]
    assert not converge(stores, [ca[0]], ['M'], 'present')[1]


def test_discovery_finds_every_browser_location(tmp_path):
    home = tmp_path / 'alice'
    for relative in ('.pki/nssdb', '.local/share/pki/nssdb', 'snap/chromium/current/.pki/nssdb'):
        (home / relative).mkdir(parents=True)
        (home / relative / 'cert9.db').write_bytes(b'')
    roots = {
        'firefox': home / '.mozilla/firefox',
        'firefox-xdg': home / '.config/mozilla/firefox',
        'firefox-snap': home / 'snap/firefox/common/.mozilla/firefox',
        'firefox-flatpak': home / '.var/app/org.mozilla.firefox/.mozilla/firefox',
    }
    elsewhere = tmp_path / 'profiles-elsewhere' / 'work'
    elsewhere.mkdir(parents=True)
    (elsewhere / 'cert9.db').write_bytes(b'')
    for source, root in roots.items():
        (root / 'abc.default').mkdir(parents=True)
        (root / 'abc.default' / 'cert9.db').write_bytes(b'')
        (root / 'never-started').mkdir()
        ini = '[General]\nStartWithLastProfile=1\n\n[Profile0]\nName=default\nIsRelative=1\nPath=abc.default\n\n' \
              '[Profile1]\nName=new\nPath=never-started\n\n[Install4F96D1932A9F858E]\nDefault=abc.default\n'
        if source == 'firefox':
            ini += '[Profile2]\nName=work\nIsRelative=0\nPath=%s\n' % elsewhere
        (root / 'profiles.ini').write_text(ini)
    found = _truststore_nss.user_databases(fake_user('alice', str(home)))
    assert found == [
        (str(home / '.pki/nssdb'), 'chromium'),
        (str(home / '.local/share/pki/nssdb'), 'chromium'),
        (str(home / 'snap/chromium/current/.pki/nssdb'), 'chromium-snap'),
        (str(roots['firefox'] / 'abc.default'), 'firefox'),
        (str(elsewhere), 'firefox'),
        (str(roots['firefox-xdg'] / 'abc.default'), 'firefox-xdg'),
        (str(roots['firefox-snap'] / 'abc.default'), 'firefox-snap'),
        (str(roots['firefox-flatpak'] / 'abc.default'), 'firefox-flatpak'),
    ]
    xdg = tmp_path / 'xdg'
    (xdg / 'mozilla/firefox/p').mkdir(parents=True)
    (xdg / 'mozilla/firefox/p/cert9.db').write_bytes(b'')
    (xdg / 'mozilla/firefox/profiles.ini').write_text('[Profile0]\nPath=p\n')
    assert (str(xdg / 'mozilla/firefox/p'), 'firefox-xdg') in _truststore_nss.user_databases(fake_user('alice', str(home)), str(xdg))


def test_symlinked_database_is_listed_once(tmp_path):
    home = tmp_path / 'bob'
    (home / '.local/share/pki/nssdb').mkdir(parents=True)
    (home / '.local/share/pki/nssdb/cert9.db').write_bytes(b'')
    (home / '.pki').mkdir()
    os.symlink(home / '.local/share/pki/nssdb', home / '.pki/nssdb')
    assert len(_truststore_nss.user_databases(fake_user('bob', str(home)))) == 1


def test_local_users_and_selection(tmp_path):
    defs = tmp_path / 'login.defs'
    defs.write_text('UID_MIN  2000\nUID_MAX 3000\n')
    homes = dict((name, tmp_path / name) for name in ('root', 'alice', 'daemon', 'ghost'))
    for name in ('root', 'alice', 'daemon'):
        homes[name].mkdir()
    passwd = [fake_user('root', str(homes['root']), 0, 0), fake_user('alice', str(homes['alice']), 2001, 2001),
              fake_user('daemon', str(homes['daemon']), 1, 1), fake_user('ghost', str(homes['ghost']), 2002, 2002)]
    assert [user.pw_name for user in _truststore_users.local_users(passwd, str(defs))] == ['root', 'alice']
    with pytest.raises(_truststore_nss.TrustStoreError, match='user carol does not exist'):
        _truststore_nss.discover(users=['carol'], passwd=passwd)


def test_explicit_databases_only_when_given(world):
    database = new_database(world)
    stores = _truststore_nss.discover(nssdbs=['sql:' + database, database])
    assert [(store.path, store.source) for store in stores] == [(database, 'given')]


@pytest.fixture(name='policy')
def policy_fixture(tmp_path):
    path = tmp_path / 'policies' / 'policies.json'
    path.parent.mkdir()
    path.write_text(json.dumps({'policies': {'DisableTelemetry': True, 'Certificates': {'Install': ['other.der']}}}))
    return path


def test_firefox_policy_merges_and_removes_only_ours(policy, ca):
    results, changed, dummy = converge([_truststore_firefox.FirefoxPolicy(str(policy))], [ca[0]], ['Magrathea Root'], 'present')
    assert changed
    document = json.loads(policy.read_text())
    ours = str(policy.parent / 'certificates' / 'magrathea-root.pem')
    assert document == {'policies': {'DisableTelemetry': True, 'Certificates': {'Install': ['other.der', ours]}}}
    assert open(ours).read() == ca[0].pem and os.stat(ours).st_mode & 0o777 == 0o644
    assert not converge([_truststore_firefox.FirefoxPolicy(str(policy))], [ca[0]], ['Magrathea Root'], 'present')[1]
    results, changed, dummy = converge([_truststore_firefox.FirefoxPolicy(str(policy))], [ca[0]], ['Magrathea Root'], 'absent')
    assert changed and not os.path.exists(ours)
    assert json.loads(policy.read_text()) == {'policies': {'DisableTelemetry': True, 'Certificates': {'Install': ['other.der']}}}


def test_firefox_policy_created_when_missing(tmp_path, ca):
    path = tmp_path / 'etc' / 'firefox' / 'policies' / 'policies.json'
    converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'present')
    assert json.loads(path.read_text())['policies']['Certificates']['Install'] == [str(path.parent / 'certificates' / 'm.pem')]
    converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'absent')
    assert not os.path.exists(tmp_path / 'etc')  # everything it created, and nothing else was there


@pytest.mark.parametrize('text', ['{"policies": {"DisableTelemetry": true,}}', '["not", "an", "object"]',
                                  '{"policies": {"Certificates": {"Install": "one.pem"}}}'])
def test_broken_firefox_policy_is_left_alone(policy, ca, text):
    policy.write_text(text)
    results, changed, dummy = converge([_truststore_firefox.FirefoxPolicy(str(policy))], [ca[0]], ['M'], 'present')
    assert results[0]['cause'] == 'invalid_policy' and not changed
    assert policy.read_text() == text


def test_flatpak_browsers_are_discovered_like_snaps(tmp_path):
    home = tmp_path / 'carol'
    chromium = home / '.var/app/org.chromium.Chromium/.pki/nssdb'
    chromium_xdg = home / '.var/app/com.google.Chrome/data/pki/nssdb'
    for path in (chromium, chromium_xdg):
        path.mkdir(parents=True)
        (path / 'cert9.db').write_bytes(b'')
    firefox_xdg = home / '.var/app/org.mozilla.firefox/config/mozilla/firefox'
    (firefox_xdg / 'p.default').mkdir(parents=True)
    (firefox_xdg / 'p.default' / 'cert9.db').write_bytes(b'')
    (firefox_xdg / 'profiles.ini').write_text('[Profile0]\nPath=p.default\n')
    (home / '.var/app/org.gnome.Calculator/data').mkdir(parents=True)
    found = _truststore_nss.user_databases(fake_user('carol', str(home)))
    assert found == [
        (str(chromium_xdg), 'chromium-flatpak'),
        (str(chromium), 'chromium-flatpak'),
        (str(firefox_xdg / 'p.default'), 'firefox-flatpak'),
    ]


class SqliteLock:
    """Another process holding an exclusive lock on a database file, as a running program can."""

    def __init__(self, path):
        self.proc = subprocess.Popen(['python3', '-c', 'import sqlite3, sys, time\n'
                                      'c = sqlite3.connect(sys.argv[1], isolation_level=None)\n'
                                      'c.execute("BEGIN EXCLUSIVE"); print("locked", flush=True); time.sleep(60)', path],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == 'locked'

    def release(self):
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize('state', ['present', 'absent'])
def test_a_database_in_use_is_reported_as_in_use_not_corrupt(world, ca, state):
    database = new_database(world)
    if state == 'absent':
        certutil(database, '-A', '-n', 'Magrathea Root', '-t', 'C,,', '-a', data=ca[0].pem.encode())
    lock = SqliteLock(os.path.join(database, 'cert9.db'))
    try:
        results, changed, dummy = converge([_truststore_nss.NssDatabase(database)], [ca[0]], ['Magrathea Root'], state)
    finally:
        lock.release()
    assert results[0]['status'] == 'failed' and results[0]['cause'] == 'in_use' and not changed
    assert 'in use by another process' in results[0]['msg'] and 'corrupt' not in results[0]['msg']
    assert 'start the browser' not in results[0]['msg']


def test_a_write_to_a_database_in_use_is_reported_as_in_use(world, ca):
    database = new_database(world)
    store = _truststore_nss.NssDatabase(database)
    assert store.entries() == []  # read before the lock: the write meets it
    lock = SqliteLock(os.path.join(database, 'key4.db'))
    try:
        with pytest.raises(_truststore_nss.TrustStoreError) as caught:
            store.install(ca[0], 'Magrathea Root')
    finally:
        lock.release()
    assert caught.value.cause == 'in_use', str(caught.value)


def test_firefox_policy_removal_leaves_nothing_it_created(tmp_path, ca):
    etc = tmp_path / 'etc'
    etc.mkdir()
    path = etc / 'firefox' / 'policies' / 'policies.json'
    converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'present')
    assert path.exists()
    results, changed, dummy = converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'absent')
    assert changed and results[0]['status'] == 'absent'
    assert os.listdir(etc) == []
    results, changed, dummy = converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'absent')
    assert not changed and os.listdir(etc) == []


def test_firefox_policy_removal_keeps_what_others_wrote(tmp_path, ca):
    path = tmp_path / 'firefox' / 'policies' / 'policies.json'
    converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'present')
    document = json.loads(path.read_text())
    document['policies']['DisableTelemetry'] = True  # an administrator adds a policy after us
    path.write_text(json.dumps(document))
    (path.parent / 'README').write_text('kept\n')
    converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'absent')
    assert json.loads(path.read_text()) == {'policies': {'DisableTelemetry': True}}
    assert sorted(os.listdir(path.parent)) == ['README', 'policies.json']


def test_an_empty_policy_file_someone_else_wrote_stays(policy, ca):
    policy.write_text('{"policies": {}}\n')
    converge([_truststore_firefox.FirefoxPolicy(str(policy))], [ca[0]], ['M'], 'present')
    converge([_truststore_firefox.FirefoxPolicy(str(policy))], [ca[0]], ['M'], 'absent')
    assert json.loads(policy.read_text()) == {'policies': {}}


def test_an_os_error_in_one_store_does_not_stop_the_others(world, ca, tmp_path, monkeypatch):
    """state=absent runs the stores in reverse: the policy fails first, the database after it is still cleaned."""
    database = new_database(world)
    certutil(database, '-A', '-n', 'Magrathea Root', '-t', 'C,,', '-a', data=ca[0].pem.encode())
    path = tmp_path / 'policies' / 'policies.json'
    converge([_truststore_firefox.FirefoxPolicy(str(path))], [ca[0]], ['M'], 'present')
    ours = str(path.parent / 'certificates' / 'm.pem')
    real_unlink = os.unlink

    def unlink(target, *args, **kwargs):
        if str(target) == ours:
            raise OSError(16, 'Device or resource busy', ours)  # what a busy or immutable file gives even root
        return real_unlink(target, *args, **kwargs)

    monkeypatch.setattr(os, 'unlink', unlink)
    stores = [_truststore_nss.NssDatabase(database), _truststore_firefox.FirefoxPolicy(str(path))]
    results, changed, dummy = converge(stores, [ca[0]], ['M'], 'absent')
    by_kind = dict((result['kind'], result) for result in results)
    assert by_kind['firefox_policy']['status'] == 'failed' and ours in by_kind['firefox_policy']['msg']
    assert 'Device or resource busy' in by_kind['firefox_policy']['msg']
    assert by_kind['nss']['status'] == 'absent' and changed
    assert _truststore_nss.read_sql_database(database) == []
