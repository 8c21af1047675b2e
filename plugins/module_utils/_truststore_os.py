# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The operating system trust store (Debian/Ubuntu, RHEL family, SUSE, Alpine, Arch).

Private to this collection: not for use by other collections.

Owns where each Linux family keeps the administrator's CA anchors, which
file names its refresh tool reads, the absolute path of that tool, and the
extracted bundle that is the truth about what the system trusts: a
certificate is present when the bundle holds it, and gone when it no
longer does. It also owns the Java keystore a family's refresh fills from
the anchors but cannot empty (Debian's ca-certificates-java): removal
deletes the certificate from it by fingerprint after the refresh.
"""

from __future__ import annotations

import hashlib
import os

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import der_certificates, file_sha256s
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import (
    Change, Holding, TrustStore, TrustStoreError, find_tool, write_public_file,
)
from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_java


class Family:
    """Where one Linux family keeps its anchors and how it rebuilds its bundle."""

    def __init__(self, name, anchor_dir, extension, bundle, refresh, package, remove_args=(), any_extension=False, recursive=False,
                 java_stores=()):
        self.name = name
        self.anchor_dir = anchor_dir
        self.extension = extension
        self.bundle = bundle
        self.refresh = refresh  # (candidate absolute paths, arguments)
        self.package = package
        self.remove_args = list(remove_args)
        self.any_extension = any_extension
        self.recursive = recursive
        # Java keystores the refresh fills from the anchors but cannot empty again (Debian's ca-certificates-java hook only
        # ever receives "+" lines): removal deletes the certificate from them itself, by fingerprint.
        self.java_stores = tuple(java_stores)


FAMILIES = {
    # --fresh on removal: Debian's tool only rebuilds its hash links when it sees a file added or removed.
    'debian': Family('debian', '/usr/local/share/ca-certificates', '.crt', '/etc/ssl/certs/ca-certificates.crt',
                     (('/usr/sbin/update-ca-certificates', '/sbin/update-ca-certificates'), []), 'ca-certificates',
                     remove_args=['--fresh'], recursive=True, java_stores=('/etc/ssl/certs/java/cacerts',)),
    'redhat': Family('redhat', '/etc/pki/ca-trust/source/anchors', '.pem', '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem',
                     (('/usr/bin/update-ca-trust', '/bin/update-ca-trust'), ['extract']), 'ca-certificates', any_extension=True),
    'suse': Family('suse', '/etc/pki/trust/anchors', '.pem', '/var/lib/ca-certificates/ca-bundle.pem',
                   (('/usr/sbin/update-ca-certificates', '/sbin/update-ca-certificates'), []), 'ca-certificates', any_extension=True),
    'alpine': Family('alpine', '/usr/local/share/ca-certificates', '.crt', '/etc/ssl/certs/ca-certificates.crt',
                     (('/usr/sbin/update-ca-certificates', '/sbin/update-ca-certificates'), []), 'ca-certificates'),
    'arch': Family('arch', '/etc/ca-certificates/trust-source/anchors', '.crt', '/etc/ca-certificates/extracted/tls-ca-bundle.pem',
                   (('/usr/bin/trust',), ['extract-compat']), 'p11-kit and ca-certificates-utils'),
}

_ID_TO_FAMILY = {
    'debian': 'debian', 'ubuntu': 'debian',
    'rhel': 'redhat', 'fedora': 'redhat', 'centos': 'redhat', 'rocky': 'redhat', 'almalinux': 'redhat', 'ol': 'redhat', 'amzn': 'redhat',
    'suse': 'suse', 'opensuse': 'suse', 'sles': 'suse', 'opensuse-leap': 'suse', 'opensuse-tumbleweed': 'suse',
    'alpine': 'alpine',
    'arch': 'arch', 'archlinux': 'arch', 'manjaro': 'arch',
}


def read_os_release(path='/etc/os-release'):
    """The KEY=value pairs of os-release, unquoted."""
    values = {}
    try:
        with open(path, encoding='utf-8') as handle:
            for line in handle:
                key, sep, value = line.strip().partition('=')
                if sep and not key.startswith('#'):
                    values[key] = value.strip().strip('"\'')
    except OSError:
        pass
    return values


def detect_family(os_release):
    """The Family of a host from its os-release ID and ID_LIKE, or None when unknown."""
    for token in [os_release.get('ID', '')] + os_release.get('ID_LIKE', '').split():
        family = _ID_TO_FAMILY.get(token.lower())
        if family:
            return FAMILIES[family]
    return None


class SystemStore(TrustStore):
    """The administrator's anchor directory, the bundle its refresh tool extracts and the Java stores it fills."""

    kind = 'system'

    def __init__(self, family, check_mode=False, runner=None):
        super().__init__(family.anchor_dir, check_mode, runner)
        self.family = family
        self._files = None
        self._bundle = None
        self._java = None
        self._java_entries = set()
        self._purge = False
        self._dirty = False
        self._fresh = False

    def info(self):
        return dict(family=self.family.name, bundle=self.family.bundle)

    def entry_name(self, name):
        return name + self.family.extension

    def _scan(self):
        if self._files is None:
            self._files = {}
            if os.path.isdir(self.path):
                for root, dirs, files in os.walk(self.path, followlinks=True):
                    for filename in sorted(files):
                        if self.family.any_extension or filename.endswith(self.family.extension):
                            full = os.path.join(root, filename)
                            self._files[os.path.relpath(full, self.path)] = file_sha256s(full)
                    if not self.family.recursive:
                        break
            try:
                with open(self.family.bundle, 'rb') as handle:
                    self._bundle = set(hashlib.sha256(der).hexdigest() for der in der_certificates(handle.read()))
            except FileNotFoundError:
                self._bundle = set()
        return self._files

    def _java_stores(self):
        """The Java keystores of ``family.java_stores`` that exist on this host, read as keystores."""
        if self._java is None:
            paths = [path for path in self.family.java_stores if os.path.isfile(path)]
            candidates = _truststore_java.keytool_candidates(_truststore_java.java_homes()) if paths else []
            self._java = [_truststore_java.JavaKeystore(path, _truststore_java.os_store_password(), keytool_candidates=candidates,
                                                        check_mode=self.check_mode, runner=self.runner) for path in paths]
        return self._java

    def _java_holders(self, anchor):
        """(keystore, alias) of every entry of the Java stores the refresh fills that holds ``anchor``."""
        return [(store, alias) for store in self._java_stores() for alias, dummy in store.held(anchor, None).holders]

    def _forget(self):
        self._files = None
        self._bundle = None
        for store in self._java or []:
            store.forget()

    def held(self, anchor, entry):
        files = self._scan()
        in_bundle = anchor.sha256 in self._bundle
        holders = [(path, in_bundle) for path, shas in files.items() if anchor.sha256 in shas]
        if not holders and in_bundle:
            # Trusted without an anchor file of ours: the distribution's CA set (or a stale bundle).
            holders = [('(bundle %s)' % self.family.bundle, True)]
        own = files.get(entry) if entry else None
        return Holding(holders, own[0] if own else None)

    def remove(self, anchor, name=None):
        holding = self.held(anchor, None)
        files = self._scan()
        changes = []
        for entry, dummy in holding.holders:
            if entry not in files:
                changes.append(Change('refresh'))
            elif len(set(files[entry])) > 1:
                raise TrustStoreError('%s holds %d other certificates besides %s; nothing was changed. Take the certificate out of that file by hand'
                                      % (os.path.join(self.path, entry), len(set(files[entry])) - 1, anchor.describe()), cause='shared_file')
            else:
                changes.append(Change('delete', entry, anchor))
        for store, alias in self._java_holders(anchor):
            entry = _java_entry(store, alias)
            self._java_entries.add(entry)
            self._purge = True
            changes.append(Change('delete', entry, anchor))
        if changes:
            self._fresh = True
        self._carry_out(changes)
        return [change for change in changes if change['action'] != 'refresh']

    def prepare(self):
        self._refresh_tool()
        if self._purge:
            for store in self._java_stores():
                store.prepare()

    def _refresh_tool(self):
        candidates, dummy = self.family.refresh
        return find_tool(os.path.basename(candidates[0]), candidates, 'the %s package' % self.family.package)

    def apply(self, change):
        action = change['action']
        if change.get('entry') in self._java_entries:
            return  # deleted from the Java store after the refresh, which must not bring it back first
        self._dirty = True
        if action == 'add':
            write_public_file(os.path.join(self.path, change['entry']), change.anchor.pem)
        elif action == 'delete':
            try:
                os.unlink(os.path.join(self.path, change['entry']))
            except FileNotFoundError:
                pass
        self._forget()

    def finish(self, anchors, state):
        changes = []
        if self._dirty or (self.check_mode and self._pending(anchors, state)):
            changes.append(self._refresh(anchors, state))
        if state == 'absent' and not self.check_mode:
            changes.extend(self._purge_java(anchors))
        return changes

    def _refresh(self, anchors, state):
        if self.check_mode:
            return Change('refresh')
        candidates, args = self.family.refresh
        argv = [self._refresh_tool()] + args + (self.family.remove_args if self._fresh else [])
        rc, out, err = self.runner.run(argv)
        self._forget()
        if rc != 0:
            raise TrustStoreError('%s failed (exit %d): %s; the anchor files are written but the bundle %s is not rebuilt. Run it by hand to see why'
                                  % (' '.join(argv), rc, (err or out).strip()[-400:], self.family.bundle), cause='refresh_failed')
        self._scan()
        for anchor in anchors:
            if state == 'absent' and anchor.sha256 in self._bundle:
                raise TrustStoreError('the certificate %s is still in %s after %s: it also comes from the distribution\'s CA set, '
                                      'not from an anchor file in %s. Disable it there (Debian: /etc/ca-certificates.conf; RHEL: '
                                      '/etc/pki/ca-trust/source/blocklist)' % (anchor.describe(), self.family.bundle, ' '.join(argv), self.path),
                                      cause='distribution_ca')
        return Change('refresh', entry=' '.join(argv))

    def _purge_java(self, anchors):
        """After the refresh: delete the anchors from the Java stores it fills, by fingerprint, and check they are gone."""
        changes = []
        for store in self._java_stores():
            for anchor in anchors:
                for change in store.remove(anchor):
                    entry = _java_entry(store, change['entry'])
                    if entry not in self._java_entries:
                        changes.append(Change('delete', entry, anchor))
                if store.state(anchor) != 'absent':
                    raise TrustStoreError('%s still holds %s after keytool deleted it; check the keystore with keytool -list'
                                          % (store.path, anchor.describe()), cause='not_written')
        return changes

    def _pending(self, anchors, state):
        self._scan()
        return any((state == 'present') != (anchor.sha256 in self._bundle) for anchor in anchors)

    def anchors(self):
        try:
            with open(self.family.bundle, 'rb') as handle:
                return list(der_certificates(handle.read()))
        except FileNotFoundError:
            raise TrustStoreError('the system bundle %s does not exist; run %s once' % (self.family.bundle, ' '.join(
                [self.family.refresh[0][0]] + self.family.refresh[1])), cause='missing_bundle') from None


def _java_entry(store, alias):
    """How an entry of a Java store that the refresh fills is named in changes and diffs."""
    return '%s (%s)' % (store.path, alias)


def discover(check_mode=False, runner=None, os_release_path='/etc/os-release'):
    """The system store of this host: [SystemStore], or TrustStoreError when the family is unknown."""
    os_release = read_os_release(os_release_path)
    family = detect_family(os_release)
    if family is None:
        raise TrustStoreError('unsupported operating system %r (ID=%s, ID_LIKE=%s): the system store is known for Debian/Ubuntu, RHEL family, '
                              'SUSE, Alpine and Arch' % (os_release.get('PRETTY_NAME', 'unknown'), os_release.get('ID', ''),
                                                         os_release.get('ID_LIKE', '')), cause='unsupported_os')
    return [SystemStore(family, check_mode, runner)]
