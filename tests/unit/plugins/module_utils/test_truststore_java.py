# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Java keystores as trust stores: the Python readers against keytool's own files, and keytool writes on copies."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_java
from ansible_collections.magrathea.secure.plugins.module_utils._certificate import parse_certificates
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import CommandRunner, converge
from ansible_collections.magrathea.secure.sandbox import pki

JDK = '/usr/lib/jvm/java-17-openjdk-amd64'
KEYTOOL = os.path.join(JDK, 'bin', 'keytool')
SYSTEM_JAVA_STORE = '/etc/ssl/certs/java/cacerts'
PASSWORD = 'changeit'


class RecordingRunner(CommandRunner):
    """Runs commands for real and remembers every argv and environment."""

    def __init__(self):
        self.calls = []

    def run(self, argv, data=None, env=None, user=None):
        self.calls.append((list(argv), dict(env or {})))
        return super().run(argv, data=data, env=env, user=user)


def keytool(*args):
    env = dict(os.environ, KSPASS=PASSWORD, LC_ALL='C.UTF-8')
    return subprocess.run([KEYTOOL] + list(args) + ['-storepass:env', 'KSPASS'], env=env, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


@pytest.fixture(name='ca', scope='module')
def ca_fixture(tmp_path_factory):
    authority = pki.CertificateAuthority('Magrathea Java Test Root')
    path = tmp_path_factory.mktemp('ca') / 'ca.pem'
    path.write_bytes(pki.certificate_pem(authority.certificate))
    return parse_certificates(path.read_bytes())[0], str(path)


@pytest.fixture(name='stores', scope='module')
def stores_fixture(tmp_path_factory, ca):
    """Keystores made by keytool once: an empty-ish JKS and PKCS12 holding our CA under another alias."""
    root = tmp_path_factory.mktemp('stores')
    other = root / 'other.pem'
    other.write_bytes(pki.certificate_pem(pki.CertificateAuthority('Unrelated Root').certificate))
    made = {}
    for kind in ('JKS', 'PKCS12'):
        path = str(root / ('seed.' + kind.lower()))
        keytool('-importcert', '-noprompt', '-alias', 'unrelated', '-file', str(other), '-keystore', path, '-storetype', kind)
        keytool('-importcert', '-noprompt', '-alias', 'old-name', '-file', ca[1], '-keystore', path, '-storetype', kind)
        made[kind] = path
    made['other_pem'] = str(other)
    return made


def copy(stores, kind, tmp_path):
    target = tmp_path / ('store.' + kind.lower())
    shutil.copy(stores[kind], target)
    return str(target)


def test_jks_reader_agrees_with_keytool_on_the_jdk_store(tmp_path):
    path = tmp_path / 'cacerts'
    shutil.copy(SYSTEM_JAVA_STORE, path)
    entries = _truststore_java.read_jks(path.read_bytes(), PASSWORD)
    listing = _truststore_java.parse_keytool_list(keytool('-list', '-rfc', '-keystore', str(path)))
    assert len(entries) > 50
    assert sorted((entry.alias, entry.sha256) for entry in entries) == sorted((entry.alias, entry.sha256) for entry in listing)
    assert all(entry.trusted for entry in entries)


def test_jks_wrong_password_and_corruption(tmp_path):
    data = open(SYSTEM_JAVA_STORE, 'rb').read()
    with pytest.raises(PermissionError):
        _truststore_java.read_jks(data, 'not-the-password')
    assert len(_truststore_java.read_jks(data, None)) > 50  # without a password only the integrity check is skipped
    with pytest.raises(ValueError):
        _truststore_java.read_jks(data[:len(data) // 2], PASSWORD)
    with pytest.raises(ValueError):
        _truststore_java.read_jks(b'\x00' * 64, PASSWORD)


def test_jks_private_key_entries_are_not_anchors(tmp_path):
    path = str(tmp_path / 'keys.jks')
    keytool('-genkeypair', '-keyalg', 'EC', '-alias', 'server', '-dname', 'CN=server', '-keystore', path, '-storetype', 'JKS', '-keypass', PASSWORD)
    entries = _truststore_java.read_jks(open(path, 'rb').read(), PASSWORD)
    assert [(entry.alias, entry.trusted) for entry in entries] == [('server', False)]


@pytest.mark.parametrize('kind', ['JKS', 'PKCS12'])
def test_python_reader_sees_what_keytool_wrote(stores, ca, kind):
    store = _truststore_java.JavaKeystore(stores[kind], PASSWORD)
    assert sorted(entry.alias for entry in store.entries()) == ['old-name', 'unrelated']
    assert store.store_type == kind
    assert store.state(ca[0], 'magrathea') == 'present'


def test_pkcs12_password_less_store_reads_with_any_password(tmp_path, ca):
    path = str(tmp_path / 'cacerts.p12')
    keytool('-importcert', '-noprompt', '-alias', 'mag', '-file', ca[1], '-keystore', path, '-storetype', 'PKCS12',
            '-J-Dkeystore.pkcs12.certProtectionAlgorithm=NONE', '-J-Dkeystore.pkcs12.macAlgorithm=NONE')
    for password in ('', 'whatever', PASSWORD):
        entries = _truststore_java.read_pkcs12(open(path, 'rb').read(), password)
        assert [(entry.alias, entry.sha256) for entry in entries] == [('mag', ca[0].sha256)]


def test_pkcs12_without_cryptography_asks_keytool(stores, ca, tmp_path, monkeypatch):
    monkeypatch.setattr(_truststore_java, 'read_pkcs12', lambda data, password: None)
    runner = RecordingRunner()
    store = _truststore_java.JavaKeystore(copy(stores, 'PKCS12', tmp_path), PASSWORD, keytool=KEYTOOL, runner=runner)
    assert store.state(ca[0], 'magrathea') == 'present'
    assert len(runner.calls) == 1 and '-list' in runner.calls[0][0]


@pytest.mark.parametrize('kind', ['JKS', 'PKCS12'])
def test_present_under_another_alias_starts_no_jvm(stores, ca, tmp_path, kind):
    runner = RecordingRunner()
    path = copy(stores, kind, tmp_path)
    before = open(path, 'rb').read()
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL, runner=runner)], [ca[0]], ['magrathea'], 'present')
    assert not changed and results[0]['status'] == 'present'
    assert runner.calls == []
    assert open(path, 'rb').read() == before


@pytest.mark.parametrize('kind', ['JKS', 'PKCS12'])
def test_install_then_remove(stores, ca, tmp_path, kind):
    path = copy(stores, kind, tmp_path)
    keytool('-delete', '-alias', 'old-name', '-keystore', path, '-storetype', kind)
    runner = RecordingRunner()
    results, changed, diff = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL, runner=runner)], [ca[0]], ['magrathea'], 'present')
    assert changed and results[0]['changes'][0]['action'] == 'add' and results[0]['type'] == kind
    assert diff['after']['stores'][path]['magrathea']['subject'] == ca[0].subject
    listing = _truststore_java.parse_keytool_list(keytool('-list', '-rfc', '-keystore', path, '-storetype', kind))
    assert ('magrathea', ca[0].sha256, True) in [(entry.alias, entry.sha256, entry.trusted) for entry in listing]
    for argv, env in runner.calls:
        assert PASSWORD not in argv and '-storepass:env' in argv and env[_truststore_java.PASSWORD_ENV] == PASSWORD
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL)], [ca[0]], ['magrathea'], 'absent')
    assert changed and results[0]['changes'] == [dict(action='delete', entry='magrathea', sha256=ca[0].fingerprint, subject=ca[0].subject)]
    assert ca[0].sha256 not in [entry.sha256 for entry in _truststore_java.JavaKeystore(path, PASSWORD).entries()]


def test_remove_deletes_every_alias_holding_it(stores, ca, tmp_path):
    path = copy(stores, 'JKS', tmp_path)
    keytool('-importcert', '-noprompt', '-alias', 'second-copy', '-file', ca[1], '-keystore', path, '-storetype', 'JKS')
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL)], [ca[0]], ['magrathea'], 'absent')
    assert sorted(change['entry'] for change in results[0]['changes']) == ['old-name', 'second-copy']
    assert [entry.alias for entry in _truststore_java.JavaKeystore(path, PASSWORD).entries()] == ['unrelated']


def test_another_certificate_under_our_alias_is_a_conflict(stores, ca, tmp_path):
    path = copy(stores, 'JKS', tmp_path)
    keytool('-delete', '-alias', 'old-name', '-keystore', path, '-storetype', 'JKS')
    before = open(path, 'rb').read()
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL)], [ca[0]], ['unrelated'], 'present')
    assert not changed and results[0]['status'] == 'conflict' and "'unrelated'" in results[0]['msg']
    assert open(path, 'rb').read() == before
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL)], [ca[0]], ['unrelated'], 'present',
                                       replace=True)
    assert changed and [change['action'] for change in results[0]['changes']] == ['delete', 'add']
    assert [(entry.alias, entry.sha256) for entry in _truststore_java.JavaKeystore(path, PASSWORD).entries()] == [('unrelated', ca[0].sha256)]


def test_check_mode_runs_no_keytool(stores, ca, tmp_path):
    path = copy(stores, 'JKS', tmp_path)
    keytool('-delete', '-alias', 'old-name', '-keystore', path, '-storetype', 'JKS')
    before = open(path, 'rb').read()
    runner = RecordingRunner()
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL, check_mode=True, runner=runner)],
                                       [ca[0]], ['magrathea'], 'present')
    assert changed and runner.calls == [] and open(path, 'rb').read() == before


def test_missing_keytool_writes_nothing(stores, ca, tmp_path):
    path = copy(stores, 'JKS', tmp_path)
    keytool('-delete', '-alias', 'old-name', '-keystore', path, '-storetype', 'JKS')
    before = open(path, 'rb').read()
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool='/nonexistent/bin/keytool')], [ca[0]], ['mag'], 'present')
    assert results[0]['status'] == 'failed' and results[0]['cause'] == 'tool_missing'
    assert 'keytool not found' in results[0]['msg'] and 'openjdk' in results[0]['msg']
    assert open(path, 'rb').read() == before


def test_wrong_password_is_reported_before_any_write(stores, ca, tmp_path):
    path = copy(stores, 'JKS', tmp_path)
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, 'wrong-password', keytool=KEYTOOL)], [ca[0]], ['mag'], 'present')
    assert results[0]['cause'] == 'wrong_password' and 'wrong-password' not in results[0]['msg']


def test_missing_keystore_and_create(ca, tmp_path):
    path = str(tmp_path / 'app-truststore.p12')
    results, dummy, dummy2 = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL)], [ca[0]], ['mag'], 'present')
    assert results[0]['cause'] == 'missing_keystore' and 'create=true' in results[0]['msg']
    results, changed, dummy = converge([_truststore_java.JavaKeystore(path, PASSWORD, keytool=KEYTOOL, create_type='PKCS12')], [ca[0]], ['mag'], 'present')
    assert changed and results[0]['status'] == 'present'
    assert [entry.alias for entry in _truststore_java.read_pkcs12(open(path, 'rb').read(), PASSWORD)] == ['mag']


def test_not_a_keystore(tmp_path, ca):
    path = tmp_path / 'notes.txt'
    path.write_text('hello')
    results, dummy, dummy2 = converge([_truststore_java.JavaKeystore(str(path), PASSWORD)], [ca[0]], ['mag'], 'present')
    assert results[0]['cause'] == 'not_a_keystore'


def make_jdk(root, name, link_to=None, copy_from=None, layout='lib/security/cacerts'):
    """A fake JDK home with a keytool and a cacerts that is a symlink or a copy."""
    home = root / name
    (home / 'bin').mkdir(parents=True)
    os.symlink(KEYTOOL, home / 'bin' / 'keytool')
    if link_to or copy_from:
        target = home / layout
        target.parent.mkdir(parents=True)
        if link_to:
            os.symlink(link_to, target)
        else:
            shutil.copy(copy_from, target)
    return str(home)


def test_discovery_groups_jdks_by_real_store_and_leaves_os_stores_to_ca_trust(tmp_path):
    jvm = tmp_path / 'jvm'
    jvm.mkdir()
    shutil.copy(SYSTEM_JAVA_STORE, tmp_path / 'shared-cacerts')
    debian = make_jdk(jvm, 'java-17-debian', link_to=SYSTEM_JAVA_STORE)
    first = make_jdk(jvm, 'jdk-a', link_to=str(tmp_path / 'shared-cacerts'))
    second = make_jdk(jvm, 'jdk-b', link_to=str(tmp_path / 'shared-cacerts'))
    java8 = make_jdk(jvm, 'jdk-8', copy_from=SYSTEM_JAVA_STORE, layout='jre/lib/security/cacerts')
    make_jdk(jvm, 'docs-only')
    alternatives = tmp_path / 'alternatives-java'
    os.symlink(os.path.join(first, 'bin', 'keytool'), alternatives)  # not a java binary: ignored
    stores = _truststore_java.discover(jvm_dirs=[str(jvm)], alternatives=[str(alternatives)], java_home=java8)
    found = dict((store.path, store) for store in stores)
    assert set(found) == {SYSTEM_JAVA_STORE, str(tmp_path / 'shared-cacerts'), os.path.join(java8, 'jre/lib/security/cacerts')}
    assert found[SYSTEM_JAVA_STORE].managed_by == 'magrathea.secure.ca_trust' and found[SYSTEM_JAVA_STORE].jdks == [debian]
    assert found[str(tmp_path / 'shared-cacerts')].managed_by is None
    assert found[str(tmp_path / 'shared-cacerts')].jdks == [first, second]
    assert stores[0].jdks == [java8]  # JAVA_HOME first


def test_managed_store_is_reported_not_written(ca):
    store = _truststore_java.JavaKeystore(SYSTEM_JAVA_STORE, PASSWORD, keytool='/nonexistent/keytool')
    results, changed, dummy = converge([store], [ca[0]], ['mag'], 'present')
    assert not changed and results[0]['status'] == 'managed' and results[0]['managed_by'] == 'magrathea.secure.ca_trust'
    assert 'regenerated from the operating system store' in results[0]['msg']


def test_discovered_store_uses_its_own_jdks_keytool(tmp_path):
    jvm = tmp_path / 'jvm'
    jvm.mkdir()
    shutil.copy(SYSTEM_JAVA_STORE, tmp_path / 'cacerts')
    home = make_jdk(jvm, 'jdk-x', link_to=str(tmp_path / 'cacerts'))
    store = _truststore_java.discover(jvm_dirs=[str(jvm)], alternatives=[])[0]
    assert store.keytool_candidates[0] == os.path.join(home, 'bin', 'keytool')


@pytest.mark.parametrize('mac, password', [('HmacPBESHA256', PASSWORD), ('HmacPBESHA1', PASSWORD), ('HmacPBESHA512', PASSWORD),
                                           ('HmacPBESHA256', 'a much longer password that runs well past one hash block of 64 bytes')])
def test_pkcs12_password_is_checked_by_its_mac(tmp_path, ca, mac, password):
    path = str(tmp_path / 'app.p12')
    env = dict(os.environ, KSPASS=password, LC_ALL='C.UTF-8')
    subprocess.run([KEYTOOL, '-importcert', '-noprompt', '-alias', 'mag', '-file', ca[1], '-keystore', path, '-storetype', 'PKCS12',
                    '-J-Dkeystore.pkcs12.macAlgorithm=' + mac, '-storepass:env', 'KSPASS'], env=env, check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)
    data = open(path, 'rb').read()
    assert _truststore_java.pkcs12_password_matches(data, password) is True
    assert _truststore_java.pkcs12_password_matches(data, 'not-it') is False
    assert _truststore_java.pkcs12_password_matches(data[:40], PASSWORD) is None


def test_pkcs12_without_a_mac_takes_any_password(tmp_path, ca):
    path = str(tmp_path / 'cacerts.p12')
    keytool('-importcert', '-noprompt', '-alias', 'mag', '-file', ca[1], '-keystore', path, '-storetype', 'PKCS12',
            '-J-Dkeystore.pkcs12.certProtectionAlgorithm=NONE', '-J-Dkeystore.pkcs12.macAlgorithm=NONE')
    assert _truststore_java.pkcs12_password_matches(open(path, 'rb').read(), 'anything') is True


class LocalisedKeytool(CommandRunner):
    """keytool answering in another language, as it does under another locale: no English word to look for."""

    def __init__(self):
        self.calls = []

    def run(self, argv, data=None, env=None, user=None):
        self.calls.append(list(argv))
        return 1, '', 'Keytool-Fehler: java.io.IOException: Schlüsselspeicher wurde manipuliert, oder Kennwort ist falsch\n'


def test_pkcs12_wrong_password_is_recognised_whatever_keytool_says(stores, ca, tmp_path, monkeypatch):
    monkeypatch.setattr(_truststore_java, 'read_pkcs12', lambda data, password: None)  # as without cryptography
    runner = LocalisedKeytool()
    store = _truststore_java.JavaKeystore(copy(stores, 'PKCS12', tmp_path), 'wrong-password', keytool=KEYTOOL, runner=runner)
    results, changed, dummy = converge([store], [ca[0]], ['mag'], 'present')
    assert results[0]['cause'] == 'wrong_password' and 'wrong-password' not in results[0]['msg']
    assert runner.calls == []  # decided from the keystore's own integrity MAC, before any keytool


def test_managed_store_that_still_trusts_after_a_removal_says_so(stores, ca, tmp_path):
    store = _truststore_java.JavaKeystore(copy(stores, 'JKS', tmp_path), PASSWORD, keytool='/nonexistent/keytool')
    store.managed_by = 'magrathea.secure.ca_trust'  # as for /etc/ssl/certs/java/cacerts
    before = open(store.path, 'rb').read()
    results, changed, dummy = converge([store], [ca[0]], ['mag'], 'absent')
    assert not changed and results[0]['status'] == 'managed' and results[0]['trusted'] is True
    assert 'still trusts' in results[0]['msg'] and 'magrathea.secure.ca_trust with state=absent' in results[0]['msg']
    assert open(store.path, 'rb').read() == before


def test_os_store_password_comes_from_ca_certificates_java_settings(tmp_path):
    settings = tmp_path / 'cacerts'
    assert _truststore_java.os_store_password(str(settings)) == 'changeit'
    settings.write_text('# defaults for ca-certificates-java\n#storepass=\'\'\ncacerts_updates=yes\n')
    assert _truststore_java.os_store_password(str(settings)) == 'changeit'
    settings.write_text('storepass="s3cret-store"\ncacerts_updates=yes\n')
    assert _truststore_java.os_store_password(str(settings)) == 's3cret-store'


def test_managed_store_is_read_without_the_tasks_password(stores, ca, tmp_path):
    """A task's keystore_password is for its own keystores: the managed store it only reports on must not fail with it."""
    store = _truststore_java.JavaKeystore(copy(stores, 'JKS', tmp_path), 'the-apps-password', keytool='/nonexistent/keytool')
    store.managed_by = 'magrathea.secure.ca_trust'
    results, changed, dummy = converge([store], [ca[0]], ['mag'], 'absent')
    assert results[0]['status'] == 'managed' and results[0]['trusted'] is True


def test_unreadable_managed_store_is_still_reported_as_managed(tmp_path, ca):
    path = tmp_path / 'cacerts'
    path.write_bytes(b'\xfe\xed\xfe\xed' + b'\x00' * 8)  # a JKS cut short
    store = _truststore_java.JavaKeystore(str(path), PASSWORD)
    store.managed_by = 'magrathea.secure.ca_trust'
    results, changed, dummy = converge([store], [ca[0]], ['mag'], 'absent')
    assert results[0]['status'] == 'managed' and results[0]['trusted'] is False and 'could not be read' in results[0]['msg']
