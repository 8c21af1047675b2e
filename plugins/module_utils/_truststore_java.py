# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Java keystores (JKS and PKCS12) as trust stores.

Private to this collection: not for use by other collections.

Owns finding every JDK's cacerts (JAVA_HOME, /usr/lib/jvm/*, alternatives),
telling apart the stores the operating system regenerates (those belong to
ca_trust), reading keystores in Python so that a run with nothing to do
starts no JVM (JKS read here with its integrity check; the password of a
PKCS12 checked here against its integrity MAC, its entries read with
cryptography when it is installed, else with keytool), and keytool for the
writes, with the store password in the environment, never in argv.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import os
import shutil
import struct

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import der_certificates, pem_text
from ansible_collections.magrathea.secure.plugins.module_utils._der import DerError, children, element, oid
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import (
    MANAGED_BY_CA_TRUST, Holding, TrustStore, TrustStoreError, find_tool,
)

JVM_DIRS = ('/usr/lib/jvm', '/usr/lib64/jvm', '/usr/java')
ALTERNATIVES = ('/etc/alternatives/java',)
# Stores rebuilt from the OS anchors on every refresh: a keytool import there is lost.
OS_MANAGED_STORES = (
    '/etc/ssl/certs/java/cacerts',                     # Debian, Ubuntu (ca-certificates-java)
    '/etc/pki/ca-trust/extracted/java/cacerts',        # RHEL family (/etc/pki/java/cacerts links here)
    '/var/lib/ca-certificates/java-cacerts',           # SUSE
    '/etc/ca-certificates/extracted/java-cacerts.jks',  # Arch
)
JKS_MAGIC = b'\xfe\xed\xfe\xed'
# ca-certificates-java's settings: the password of Debian's /etc/ssl/certs/java/cacerts when it is not changeit.
OS_STORE_SETTINGS = '/etc/default/cacerts'
# Digest algorithms of a PKCS#12 integrity MAC (RFC 7292, and RFC 8018 for the SHA-2 family): name and block size.
_PKCS12_MAC_DIGESTS = {
    '1.3.14.3.2.26': ('sha1', 64),
    '2.16.840.1.101.3.4.2.4': ('sha224', 64),
    '2.16.840.1.101.3.4.2.1': ('sha256', 64),
    '2.16.840.1.101.3.4.2.2': ('sha384', 128),
    '2.16.840.1.101.3.4.2.3': ('sha512', 128),
}
PASSWORD_ENV = 'MAGRATHEA_KEYSTORE_PASSWORD'
KEYTOOL_PACKAGE = 'a JDK or JRE (Debian: openjdk-17-jre-headless; RHEL: java-17-openjdk-headless) or give keytool'


class KeystoreEntry:
    """One alias of a keystore: its first certificate and whether Java trusts it as an anchor."""

    def __init__(self, alias, der, trusted):
        self.alias = alias
        self.der = der
        self.trusted = trusted
        self.sha256 = hashlib.sha256(der).hexdigest()


def _java_utf(data, pos):
    length = struct.unpack_from('>H', data, pos)[0]
    return data[pos + 2:pos + 2 + length].decode('utf-8', 'replace'), pos + 2 + length


def read_jks(data, password=None):
    """Entries of a JKS keystore; with ``password`` the integrity digest is checked too.

    Raises ValueError for a corrupt store and PermissionError for a wrong password.
    """
    if data[:4] != JKS_MAGIC:
        raise ValueError('not a JKS keystore')
    try:
        version, count = struct.unpack_from('>II', data, 4)
        if version not in (1, 2):
            raise ValueError('unknown JKS version %d' % version)
        pos = 12
        entries = []
        for dummy in range(count):
            tag = struct.unpack_from('>I', data, pos)[0]
            alias, pos = _java_utf(data, pos + 4)
            pos += 8  # creation date
            if tag == 1:  # private key: skip the protected key, keep the first certificate of the chain
                key_length = struct.unpack_from('>I', data, pos)[0]
                pos += 4 + key_length
                chain = []
                chain_length = struct.unpack_from('>I', data, pos)[0]
                pos += 4
                for dummy_cert in range(chain_length):
                    if version == 2:
                        dummy_type, pos = _java_utf(data, pos)
                    length = struct.unpack_from('>I', data, pos)[0]
                    chain.append(data[pos + 4:pos + 4 + length])
                    pos += 4 + length
                if chain:
                    entries.append(KeystoreEntry(alias, chain[0], False))
            elif tag == 2:  # trusted certificate
                if version == 2:
                    dummy_type, pos = _java_utf(data, pos)
                length = struct.unpack_from('>I', data, pos)[0]
                entries.append(KeystoreEntry(alias, data[pos + 4:pos + 4 + length], True))
                pos += 4 + length
            else:
                raise ValueError('unknown JKS entry type %d' % tag)
    except struct.error:
        raise ValueError('truncated JKS keystore') from None
    if len(data) != pos + 20:
        raise ValueError('JKS keystore has %d bytes after its entries, expected a 20-byte digest' % (len(data) - pos))
    if password is not None:
        digest = hashlib.sha1(password.encode('utf-16-be') + b'Mighty Aphrodite' + data[:pos]).digest()
        if digest != data[pos:]:
            raise PermissionError('integrity check failed')
    return entries


def read_pkcs12(data, password):
    """Entries of a PKCS12 keystore read with cryptography; None when cryptography cannot read it."""
    try:
        from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
    except ImportError:
        return None
    loaded = None
    for secret in (password.encode('utf-8') if password else None, None):
        try:
            loaded = pkcs12.load_pkcs12(data, secret)
            break
        except (ValueError, TypeError):
            continue
    if loaded is None:
        return None
    entries = []
    if loaded.cert is not None and loaded.cert.friendly_name:
        entries.append(KeystoreEntry(loaded.cert.friendly_name.decode('utf-8', 'replace'), loaded.cert.certificate.public_bytes(Encoding.DER), False))
    for item in loaded.additional_certs:
        if item.friendly_name:
            entries.append(KeystoreEntry(item.friendly_name.decode('utf-8', 'replace'), item.certificate.public_bytes(Encoding.DER), True))
    return entries


def _pkcs12_key(digest, block, password, salt, iterations, size):
    """The MAC key of RFC 7292 appendix B.2 (ID 3), from the password as a BMPString."""
    def fill(data):  # repeated to the next multiple of the block size
        target = block * ((len(data) + block - 1) // block)
        return (data * (target // len(data) + 1))[:target] if data else b''
    source = bytearray(fill(salt) + fill(password))
    key = b''
    while len(key) < size:
        value = bytes([3]) * block + bytes(source)
        for dummy in range(iterations):
            value = hashlib.new(digest, value).digest()
        key += value
        addend = int.from_bytes((value * (block // len(value) + 1))[:block], 'big') + 1
        for start in range(0, len(source), block):
            chunk = (int.from_bytes(source[start:start + block], 'big') + addend) % (1 << (8 * block))
            source[start:start + block] = chunk.to_bytes(block, 'big')
    return key[:size]


def pkcs12_password_matches(data, password):
    """Whether ``password`` opens a PKCS#12 keystore, decided by its integrity MAC: True, False, or None when unknown.

    A keystore without a MAC (the password-less cacerts of JDK 18 and newer) takes any password. None: not PKCS#12 as
    expected, or a MAC algorithm this reader does not know (PBMAC1); then keytool decides.
    """
    try:
        tag, start, stop = element(data, 0, len(data))
        parts = children(data, start, stop) if tag == 0x30 else []
        if len(parts) < 2 or parts[1][0] != 0x30:
            return None
        if len(parts) == 2:
            return True
        content = children(data, parts[1][1], parts[1][2])
        wrapped = children(data, content[1][1], content[1][2]) if len(content) == 2 and content[1][0] == 0xa0 else []
        if len(wrapped) != 1 or wrapped[0][0] != 0x04:
            return None
        signed = data[wrapped[0][1]:wrapped[0][2]]
        mac_data = children(data, parts[2][1], parts[2][2])
        digest_info = children(data, mac_data[0][1], mac_data[0][2])
        algorithm = children(data, digest_info[0][1], digest_info[0][2])
        known = _PKCS12_MAC_DIGESTS.get(oid(data[algorithm[0][1]:algorithm[0][2]]))
        expected = data[digest_info[1][1]:digest_info[1][2]]
        salt = data[mac_data[1][1]:mac_data[1][2]]
        iterations = int.from_bytes(data[mac_data[2][1]:mac_data[2][2]], 'big') if len(mac_data) > 2 else 1
    except (DerError, IndexError):
        return None
    if known is None or not 0 < iterations <= 10000000:
        return None
    if password is None:
        return False
    digest, block = known
    encoded = password.encode('utf-16-be')
    forms = [encoded + b'\x00\x00'] + ([b''] if not password else [])  # an empty password is written both ways
    return any(hmac.compare_digest(hmac.new(_pkcs12_key(digest, block, form, salt, iterations, len(expected)), signed, digest).digest(),
                                   expected) for form in forms)


def parse_keytool_list(text):
    """Entries from ``keytool -list -rfc`` output."""
    entries = []
    for block in text.split('Alias name: ')[1:]:
        alias = block.split('\n', 1)[0].strip()
        ders = list(der_certificates(block.encode('utf-8')))
        if ders:
            entries.append(KeystoreEntry(alias, ders[0], 'trustedCertEntry' in block))
    return entries


def keystore_type(data):
    """JKS, PKCS12 or None (unknown) from the first bytes."""
    if data[:4] == JKS_MAGIC:
        return 'JKS'
    if data[:1] == b'\x30':
        return 'PKCS12'
    return None


class JavaKeystore(TrustStore):
    """One keystore file, shared by every JDK whose cacerts resolves to it."""

    kind = 'java'

    def __init__(self, path, password='changeit', jdks=(), keytool=None, keytool_candidates=(), create_type=None, check_mode=False, runner=None):
        super().__init__(path, check_mode, runner)
        self.password = password
        self.jdks = list(jdks)
        self.keytool = keytool
        self.keytool_candidates = list(keytool_candidates)
        self.create_type = create_type
        self.store_type = None
        self._entries = None
        real = os.path.realpath(path)
        if real in OS_MANAGED_STORES or real.startswith('/etc/pki/ca-trust/extracted/'):
            self.managed_by = MANAGED_BY_CA_TRUST

    def info(self):
        return dict(type=self.store_type or self._peek_type(), jdks=self.jdks)

    def _peek_type(self):
        try:
            with open(self.path, 'rb') as handle:
                return keystore_type(handle.read(4))
        except OSError:
            return self.create_type

    def entries(self):
        """Every alias of the store (read once per run, again after a change)."""
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def forget(self):
        """Read the store again next time: something else (a refresh) may have written it."""
        self._entries = None

    def _read(self):
        try:
            with open(self.path, 'rb') as handle:
                data = handle.read()
        except FileNotFoundError:
            if self.create_type:
                self.store_type = self.create_type
                return []
            raise TrustStoreError('keystore %s does not exist; give the path of an existing keystore, or set create=true' % self.path,
                                  cause='missing_keystore') from None
        self.store_type = keystore_type(data)
        if self.store_type == 'JKS':
            try:
                # A managed store is only read, to report on it: its integrity needs no password of this task.
                return read_jks(data, None if self.managed_by else self.password)
            except PermissionError:
                raise self._wrong_password() from None
            except ValueError as exc:
                raise TrustStoreError('keystore %s is corrupt (%s); restore it from the JDK package or a backup' % (self.path, exc),
                                      cause='corrupt_keystore') from None
        if self.store_type == 'PKCS12':
            # The keystore's own integrity MAC decides, not keytool's wording (which follows the locale).
            if pkcs12_password_matches(data, self.password) is False:
                raise self._wrong_password()
            entries = read_pkcs12(data, self.password)
            if entries is not None:
                return entries
            return self._read_with_keytool()
        raise TrustStoreError('%s is neither a JKS nor a PKCS12 keystore; give the path of a Java keystore' % self.path, cause='not_a_keystore')

    def _wrong_password(self):
        return TrustStoreError('keystore %s rejected the store password (its integrity check failed); give its keystore_password'
                               % self.path, cause='wrong_password')

    def _read_with_keytool(self):
        # Without cryptography (or for a PKCS12 it cannot open): ask keytool, one JVM.
        rc, out, err = self._keytool(['-list', '-rfc'])
        if rc != 0 or 'keytool error' in out:
            message = (out + err).strip().splitlines()
            raise TrustStoreError('keytool cannot read %s: %s' % (self.path, message[-1] if message else 'exit %d' % rc), cause='keytool_failed')
        return parse_keytool_list(out)

    def _keytool_path(self):
        if self.keytool:
            return find_tool('keytool', [self.keytool], KEYTOOL_PACKAGE)
        return find_tool('keytool', self.keytool_candidates, KEYTOOL_PACKAGE)

    def _keytool(self, args, data=None):
        argv = [self._keytool_path()] + args + ['-keystore', self.path, '-storetype', self.store_type or self.create_type or 'PKCS12',
                                                '-storepass:env', PASSWORD_ENV]
        # C.UTF-8: English messages like C, but aliases with non-ASCII letters survive the listing.
        return self.runner.run(argv, data=data, env={PASSWORD_ENV: self.password or '', 'LC_ALL': 'C.UTF-8'})

    def held(self, anchor, entry):
        entries = self.entries()
        holders = [(item.alias, True) for item in entries if item.trusted and item.sha256 == anchor.sha256]
        own = [item for item in entries if entry and item.alias.lower() == entry.lower()]
        return Holding(holders, own[0].sha256 if own else None)

    def prepare(self):
        self._keytool_path()

    def apply(self, change):
        if change['action'] == 'add':
            args = ['-importcert', '-noprompt', '-trustcacerts', '-alias', change['entry']]
            data = pem_text(change.anchor.der)
        else:
            args, data = ['-delete', '-alias', change['entry']], None
        rc, out, err = self._keytool(args, data=data)
        self._entries = None
        if rc != 0 or 'keytool error' in out:
            lines = [line for line in (out + '\n' + err).splitlines() if line.strip() and not line.startswith('Warning')]
            raise TrustStoreError('keytool could not %s %r in %s: %s' % ('import' if change['action'] == 'add' else 'delete', change['entry'],
                                                                         self.path, lines[-1] if lines else 'exit %d' % rc), cause='keytool_failed')

    def anchors(self):
        return [item.der for item in self.entries() if item.trusted]


def java_homes(java_home=None, jvm_dirs=JVM_DIRS, alternatives=ALTERNATIVES):
    """Every JDK/JRE home on this host: JAVA_HOME first, then /usr/lib/jvm/* and the alternatives' target."""
    homes = []
    if java_home:
        homes.append(java_home)
    for directory in jvm_dirs:
        homes.extend(sorted(glob.glob(os.path.join(directory, '*'))))
    for link in alternatives:
        target = os.path.realpath(link)
        if target != link and target.endswith('/bin/java'):
            homes.append(os.path.dirname(os.path.dirname(target)))
    unique = []
    for home in homes:
        if os.path.isdir(home) and home not in unique:
            unique.append(home)
    return unique


def _cacerts(home):
    for relative in ('lib/security/cacerts', 'jre/lib/security/cacerts'):
        path = os.path.join(home, relative)
        if os.path.isfile(path):
            return path
    return None


def keytool_candidates(homes):
    """Where a keytool for stores of these JDK homes may be: their own first, then PATH and every JDK."""
    candidates = []
    for home in homes:
        candidates.extend([os.path.join(home, 'bin', 'keytool'), os.path.join(os.path.dirname(home), 'bin', 'keytool')])
    candidates.append(shutil.which('keytool'))
    for directory in JVM_DIRS:
        candidates.extend(sorted(glob.glob(os.path.join(directory, '*', 'bin', 'keytool'))))
    return [candidate for candidate in candidates if candidate]


def os_store_password(path=OS_STORE_SETTINGS):
    """The password of the Java store the operating system generates: storepass of ca-certificates-java's settings, or changeit."""
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                key, sep, value = line.strip().partition('=')
                if sep and key.strip() == 'storepass':
                    return value.strip().strip('"\'')
    except OSError:
        pass
    return 'changeit'


def discover(keystores=None, password='changeit', keytool=None, create_type=None, check_mode=False, runner=None,
             java_home=None, jvm_dirs=JVM_DIRS, alternatives=ALTERNATIVES):
    """The keystores to manage: the ``keystores`` given, or every JDK's cacerts (one store per real file)."""
    if keystores:
        homes = [java_home] if java_home else []
        return [JavaKeystore(path, password, keytool=keytool, keytool_candidates=keytool_candidates(homes), create_type=create_type,
                             check_mode=check_mode, runner=runner) for path in keystores]
    by_real_path = {}
    for home in java_homes(java_home, jvm_dirs, alternatives):
        path = _cacerts(home)
        if path:
            by_real_path.setdefault(os.path.realpath(path), []).append(home)
    return [JavaKeystore(path, password, jdks=homes, keytool=keytool, keytool_candidates=keytool_candidates(homes),
                         check_mode=check_mode, runner=runner) for path, homes in by_real_path.items()]
