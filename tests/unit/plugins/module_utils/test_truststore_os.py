# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The operating system store, on a throwaway anchor directory with a stand-in refresh tool."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_os
from ansible_collections.magrathea.secure.plugins.module_utils._certificate import parse_certificates
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import ToolNotFound, converge
from ansible_collections.magrathea.secure.sandbox import pki


@pytest.mark.parametrize('os_release, family', [
    ('ID=debian\nVERSION_ID="12"\n', 'debian'),
    ('ID=ubuntu\nID_LIKE=debian\n', 'debian'),
    ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', 'debian'),
    ('ID="rhel"\nID_LIKE="fedora"\n', 'redhat'),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', 'redhat'),
    ('ID="almalinux"\nID_LIKE="rhel centos fedora"\n', 'redhat'),
    ('ID=fedora\n', 'redhat'),
    ('ID="amzn"\nID_LIKE="centos rhel fedora"\n', 'redhat'),
    ('ID="sles"\nID_LIKE="suse"\n', 'suse'),
    ('ID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n', 'suse'),
    ('ID=alpine\n', 'alpine'),
    ('ID=arch\n', 'arch'),
    ('ID=manjaro\nID_LIKE=arch\n', 'arch'),
    ('ID=gentoo\n', None),
])
def test_family_detection(tmp_path, os_release, family):
    path = tmp_path / 'os-release'
    path.write_text(os_release)
    detected = _truststore_os.detect_family(_truststore_os.read_os_release(str(path)))
    assert (detected.name if detected else None) == family


@pytest.mark.parametrize('name, anchor_dir, extension, tool', [
    ('debian', '/usr/local/share/ca-certificates', '.crt', '/usr/sbin/update-ca-certificates'),
    ('redhat', '/etc/pki/ca-trust/source/anchors', '.pem', '/usr/bin/update-ca-trust'),
    ('suse', '/etc/pki/trust/anchors', '.pem', '/usr/sbin/update-ca-certificates'),
    ('alpine', '/usr/local/share/ca-certificates', '.crt', '/usr/sbin/update-ca-certificates'),
    ('arch', '/etc/ca-certificates/trust-source/anchors', '.crt', '/usr/bin/trust'),
])
def test_family_table(name, anchor_dir, extension, tool):
    family = _truststore_os.FAMILIES[name]
    assert (family.anchor_dir, family.extension, family.refresh[0][0]) == (anchor_dir, extension, tool)
    assert all(os.path.isabs(path) for path in family.refresh[0])


def test_unknown_os_is_a_clear_error(tmp_path):
    path = tmp_path / 'os-release'
    path.write_text('ID=plan9\nPRETTY_NAME="Plan 9"\n')
    with pytest.raises(_truststore_os.TrustStoreError, match='unsupported operating system .Plan 9.*Debian/Ubuntu'):
        _truststore_os.discover(os_release_path=str(path))


REFRESH = '''#!/bin/sh
# Stand-in for update-ca-certificates: the distribution set plus every anchor, into the bundle.
echo "$@" >> {root}/refresh.log
[ -f {root}/refresh-fails ] && {{ echo "E: broken" >&2; exit 3; }}
cat {root}/dist/*.pem {root}/anchors/*.crt > {root}/bundle.pem 2>/dev/null
exit 0
'''


class Sandbox:
    """An anchor directory, a distribution set, a bundle and the stand-in tool."""

    def __init__(self, root):
        self.root = root
        for directory in ('anchors', 'dist'):
            (root / directory).mkdir()
        tool = root / 'update-ca-certificates'
        tool.write_text(REFRESH.format(root=root))
        tool.chmod(0o755)
        self.family = _truststore_os.Family('debian', str(root / 'anchors'), '.crt', str(root / 'bundle.pem'),
                                            ((str(tool),), []), 'ca-certificates', remove_args=['--fresh'], recursive=True)
        (root / 'dist' / 'public.pem').write_bytes(pki.certificate_pem(pki.CertificateAuthority('Public Root').certificate))
        self.refresh_log = root / 'refresh.log'
        subprocess.run([str(tool)], check=True)  # the bundle as the distribution ships it
        self.refresh_log.unlink()

    def store(self, check_mode=False):
        return _truststore_os.SystemStore(self.family, check_mode=check_mode)

    def bundle(self):
        return (self.root / 'bundle.pem').read_bytes()

    def refreshes(self):
        return self.refresh_log.read_text().splitlines() if self.refresh_log.exists() else []


@pytest.fixture(name='box')
def box_fixture(tmp_path):
    return Sandbox(tmp_path)


@pytest.fixture(name='anchor', scope='module')
def anchor_fixture():
    return parse_certificates(pki.certificate_pem(pki.CertificateAuthority('Magrathea Root CA').certificate))[0]


def test_install_writes_the_anchor_and_refreshes(box, anchor):
    results, changed, diff = converge([box.store()], [anchor], ['magrathea'], 'present')
    assert changed and results[0]['status'] == 'present'
    path = box.root / 'anchors' / 'magrathea.crt'
    assert path.read_text() == anchor.pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert anchor.pem.encode() in box.bundle()
    assert box.refreshes() == ['']
    assert [change['action'] for change in results[0]['changes']] == ['add', 'refresh']
    assert diff['after']['stores'][str(box.root / 'anchors')]['magrathea.crt']['sha256'] == anchor.fingerprint
    assert diff['before']['stores'][str(box.root / 'anchors')] == {}


def test_second_run_changes_nothing(box, anchor):
    converge([box.store()], [anchor], ['magrathea'], 'present')
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'present')
    assert not changed and results[0]['changes'] == []
    assert box.refreshes() == ['']


def test_check_mode_predicts_and_writes_nothing(box, anchor):
    results, changed, dummy = converge([box.store(check_mode=True)], [anchor], ['magrathea'], 'present')
    assert changed
    assert [change['action'] for change in results[0]['changes']] == ['add', 'refresh']
    assert os.listdir(box.root / 'anchors') == []
    assert box.refreshes() == []


def test_same_certificate_under_another_file_is_present(box, anchor):
    (box.root / 'anchors' / 'someone-else.crt').write_text(anchor.pem)
    subprocess.run([box.family.refresh[0][0]], check=True)
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'present')
    assert not changed
    assert not (box.root / 'anchors' / 'magrathea.crt').exists()


def test_anchor_file_without_refresh_is_refreshed(box, anchor):
    (box.root / 'anchors' / 'magrathea.crt').write_text(anchor.pem)
    assert box.store().state(anchor, 'magrathea') == 'untrusted'
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'present')
    assert changed and [change['action'] for change in results[0]['changes']] == ['trust', 'refresh']
    assert anchor.pem.encode() in box.bundle()


def test_another_certificate_in_our_file_is_a_conflict(box, anchor):
    other = pki.certificate_pem(pki.CertificateAuthority('Other Root').certificate)
    (box.root / 'anchors' / 'magrathea.crt').write_bytes(other)
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'present')
    assert not changed and results[0]['status'] == 'conflict' and results[0]['cause'] == 'conflict'
    assert 'replace=true' in results[0]['msg']
    assert (box.root / 'anchors' / 'magrathea.crt').read_bytes() == other
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'present', replace=True)
    assert changed and results[0]['status'] == 'present'
    assert (box.root / 'anchors' / 'magrathea.crt').read_text() == anchor.pem


def test_remove_deletes_every_file_holding_it_and_refreshes_fresh(box, anchor):
    converge([box.store()], [anchor], ['magrathea'], 'present')
    (box.root / 'anchors' / 'copy.crt').write_text(anchor.pem)
    results, changed, diff = converge([box.store()], [anchor], ['magrathea'], 'absent')
    assert changed and results[0]['status'] == 'absent'
    assert sorted(change['entry'] for change in results[0]['changes'] if change['action'] == 'delete') == ['copy.crt', 'magrathea.crt']
    assert os.listdir(box.root / 'anchors') == []
    assert anchor.pem.encode() not in box.bundle()
    assert box.refreshes()[-1] == '--fresh'
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'absent')
    assert not changed


def test_remove_of_a_distribution_root_names_the_cause(box):
    public = parse_certificates((box.root / 'dist' / 'public.pem').read_bytes())[0]
    results, changed, dummy = converge([box.store()], [public], ['public'], 'absent')
    assert results[0]['status'] == 'failed' and results[0]['cause'] == 'distribution_ca'
    assert '/etc/ca-certificates.conf' in results[0]['msg']


def test_shared_bundle_file_is_not_deleted(box, anchor):
    other = pki.certificate_pem(pki.CertificateAuthority('Other Root').certificate)
    (box.root / 'anchors' / 'bundle.crt').write_bytes(anchor.pem.encode() + other)
    subprocess.run([box.family.refresh[0][0]], check=True)
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'absent')
    assert results[0]['cause'] == 'shared_file' and (box.root / 'anchors' / 'bundle.crt').exists()


def test_missing_refresh_tool_writes_nothing(box, anchor):
    box.family.refresh = (('/nonexistent/update-ca-certificates',), [])
    for check_mode in (True, False):
        results, changed, dummy = converge([box.store(check_mode)], [anchor], ['magrathea'], 'present')
        assert results[0]['status'] == 'failed' and results[0]['cause'] == 'tool_missing'
        assert 'install the ca-certificates package' in results[0]['msg']
        assert os.listdir(box.root / 'anchors') == []


def test_failing_refresh_is_reported(box, anchor):
    (box.root / 'refresh-fails').write_text('')
    results, changed, dummy = converge([box.store()], [anchor], ['magrathea'], 'present')
    assert results[0]['cause'] == 'refresh_failed' and 'E: broken' in results[0]['msg'] and '(exit 3)' in results[0]['msg']


def test_der_anchor_files_and_subdirectories_are_read(box, anchor):
    (box.root / 'anchors' / 'sub').mkdir()
    (box.root / 'anchors' / 'sub' / 'mag.crt').write_bytes(anchor.der)
    assert box.store().held(anchor, None).holders == [('sub/mag.crt', False)]


def test_anchors_are_the_bundle(box):
    ders = box.store().anchors()
    assert len(ders) == 1


def test_missing_tool_error_is_tool_not_found(box):
    box.family.refresh = (('/nonexistent/tool',), [])
    with pytest.raises(ToolNotFound):
        box.store().prepare()


# Stand-in for Debian's update-ca-certificates with ca-certificates-java's hook: the hook only ever receives "+" lines
# (update-ca-certificates --fresh re-adds every remaining anchor and reports no removal), so it imports and never deletes.
JAVA_HOOK = '''
for crt in {root}/anchors/*.crt; do
    [ -f "$crt" ] || continue
    alias="debian:$(basename "$crt" .crt | tr A-Z a-z).pem"
    {keytool} -list -alias "$alias" -keystore {root}/java-cacerts -storepass changeit >/dev/null 2>&1 ||
        {keytool} -importcert -noprompt -alias "$alias" -file "$crt" -keystore {root}/java-cacerts -storetype JKS \\
            -storepass changeit >/dev/null 2>&1
done
'''
KEYTOOL = '/usr/lib/jvm/java-17-openjdk-amd64/bin/keytool'


@pytest.fixture(name='debian')
def debian_fixture(tmp_path):
    """The Sandbox with a Java store that the refresh fills the way ca-certificates-java does."""
    box = Sandbox(tmp_path)
    tool = tmp_path / 'update-ca-certificates'
    tool.write_text(tool.read_text().replace('exit 0\n', JAVA_HOOK.format(root=tmp_path, keytool=KEYTOOL) + 'exit 0\n'))
    subprocess.run([KEYTOOL, '-importcert', '-noprompt', '-alias', 'debian:public.pem', '-file', str(tmp_path / 'dist' / 'public.pem'),
                    '-keystore', str(tmp_path / 'java-cacerts'), '-storetype', 'JKS', '-storepass', 'changeit'], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    box.family.java_stores = (str(tmp_path / 'java-cacerts'),)
    return box


def java_sha256s(box):
    from ansible_collections.magrathea.secure.plugins.module_utils._truststore_java import read_jks
    return [entry.sha256 for entry in read_jks((box.root / 'java-cacerts').read_bytes(), 'changeit')]


def test_debian_family_knows_its_java_store():
    assert _truststore_os.FAMILIES['debian'].java_stores == ('/etc/ssl/certs/java/cacerts',)


def test_removal_also_empties_the_java_store_the_os_generates(debian, anchor):
    results, changed, dummy = converge([debian.store()], [anchor], ['mag'], 'present')
    assert changed and anchor.sha256 in java_sha256s(debian)  # the hook imported it as debian:mag.pem
    results, changed, dummy = converge([debian.store(check_mode=True)], [anchor], ['mag'], 'absent')
    assert changed and anchor.sha256 in java_sha256s(debian)
    java_entry = '%s (debian:mag.pem)' % (debian.root / 'java-cacerts')
    assert java_entry in [change.get('entry') for change in results[0]['changes']]
    results, changed, dummy = converge([debian.store()], [anchor], ['mag'], 'absent')
    assert changed and results[0]['status'] == 'absent', results[0].get('msg')
    assert anchor.sha256 not in java_sha256s(debian) and len(java_sha256s(debian)) == 1
    assert java_entry in [change.get('entry') for change in results[0]['changes']]
    results, changed, dummy = converge([debian.store()], [anchor], ['mag'], 'absent')
    assert not changed


def test_removal_finds_the_java_entry_by_fingerprint_alone(debian, anchor, tmp_path):
    """A store left behind by an earlier removal: no anchor file, not in the bundle, in the Java store under any alias."""
    pem_file = tmp_path / 'loose.pem'
    pem_file.write_text(anchor.pem)
    subprocess.run([KEYTOOL, '-importcert', '-noprompt', '-alias', 'debian:renamed-long-ago.pem', '-file', str(pem_file),
                    '-keystore', str(debian.root / 'java-cacerts'), '-storetype', 'JKS', '-storepass', 'changeit'], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert debian.store().state(anchor, 'mag') == 'absent'  # the system bundle does not trust it
    results, changed, dummy = converge([debian.store()], [anchor], ['mag'], 'absent')
    assert changed and anchor.sha256 not in java_sha256s(debian)
    assert [change['entry'] for change in results[0]['changes']] == ['%s (debian:renamed-long-ago.pem)' % (debian.root / 'java-cacerts')]
    assert not converge([debian.store()], [anchor], ['mag'], 'absent')[1]
