# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""NSS databases (Chromium, Firefox profiles, /etc/pki/nssdb) and the Firefox enterprise policy as trust stores.

Private to this collection: not for use by other collections.

Owns finding the databases of the given users (or of every local user):
Chromium's classic, XDG and snap locations, Firefox profiles from every
profiles.ini (classic, XDG, snap, flatpak), the system-wide database and
explicit paths; reading a cert9.db directly (SQLite, no process) for the
check; certutil for the writes, run as the database's owner so the browser
can still open it; the precise NSS error of a failed database; and the
merge of /etc/firefox/policies/policies.json, validated before it is written.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import pwd
import re
import shutil

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import der_certificates, file_certificates, file_sha256s, pem_text, slug
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import (
    Change, Holding, TrustStore, TrustStoreError, find_tool, write_public_file,
)

CHROMIUM_DATABASES = ('.pki/nssdb', '.local/share/pki/nssdb', 'snap/chromium/current/.pki/nssdb')
FIREFOX_ROOTS = (
    ('firefox', '.mozilla/firefox'),
    ('firefox-xdg', None),  # ${XDG_CONFIG_HOME:-~/.config}/mozilla/firefox (Firefox 147+)
    ('firefox-snap', 'snap/firefox/common/.mozilla/firefox'),
    ('firefox-flatpak', '.var/app/org.mozilla.firefox/.mozilla/firefox'),
)
SYSTEM_DATABASE = '/etc/pki/nssdb'
FIREFOX_POLICY_FILE = '/etc/firefox/policies/policies.json'
CERTUTIL_CANDIDATES = ('/usr/bin/certutil', '/bin/certutil', '/usr/local/bin/certutil')
CERTUTIL_PACKAGE = 'the NSS tools (Debian/Ubuntu: libnss3-tools; RHEL: nss-tools; SUSE: mozilla-nss-tools; Arch: nss)'

# PKCS#11 values as NSS stores them in cert9.db (4-byte big-endian).
_CKO_CERTIFICATE = b'\x00\x00\x00\x01'
_CKO_NSS_TRUST = b'\xce\x53\x43\x53'
_CKT_NSS_TRUSTED_DELEGATOR = b'\xce\x53\x43\x52'

_NSS_ERROR = re.compile(r'\b((?:SEC|SSL)_ERROR_[A-Z_]+|PR_[A-Z_]+_ERROR)\b')
NSS_HINTS = {
    'SEC_ERROR_READ_ONLY': 'the database is read-only for its owner %(owner)s: check the ownership and permissions of %(path)s',
    'SEC_ERROR_BAD_DATABASE': '%(path)s is not a usable NSS database (corrupt, or not a database): start the browser once to recreate it',
    'SEC_ERROR_LEGACY_DATABASE': '%(path)s is a legacy cert8.db database this certutil cannot write: start the browser once to upgrade it',
    'SEC_ERROR_ADDING_CERT': 'NSS refused to add the certificate: either the directory %(path)s is not writable by its owner %(owner)s '
                             '(check its permissions), or the nickname belongs to a certificate with another subject (choose another nickname)',
    'SEC_ERROR_TOKEN_NOT_LOGGED_IN': 'the database is protected by a primary password: remove the password or add the certificate in the browser',
    'SEC_ERROR_BAD_PASSWORD': 'the database is protected by a primary password: remove the password or add the certificate in the browser',
    'PR_FILE_NOT_FOUND_ERROR': 'a file of the database is missing in %(path)s',
    'PR_NO_ACCESS_RIGHTS_ERROR': 'the owner %(owner)s cannot access %(path)s: check its permissions',
}


class NssEntry:
    """One certificate of a database: its nickname, DER bytes and whether it is a trusted CA for TLS servers ("C" in SSL)."""

    def __init__(self, nickname, der, trusted):
        self.nickname = nickname
        self.der = der
        self.trusted = trusted
        self.sha256 = hashlib.sha256(der).hexdigest()


def is_database(path):
    return os.path.isfile(os.path.join(path, 'cert9.db')) or os.path.isfile(os.path.join(path, 'cert8.db'))


def read_sql_database(path):
    """Entries of ``path``/cert9.db read with SQLite (read-only); None when this Python cannot read it."""
    try:
        import sqlite3
    except ImportError:
        return None
    try:
        connection = sqlite3.connect('file:%s?mode=ro' % os.path.join(path, 'cert9.db').replace('?', '%3f').replace('#', '%23'),
                                     uri=True, timeout=5)
        try:
            certificates = connection.execute('SELECT a3, a11 FROM nssPublic WHERE a0 = ?', (_CKO_CERTIFICATE,)).fetchall()
            trust = dict(connection.execute('SELECT ace5363b4, ace536358 FROM nssPublic WHERE a0 = ?', (_CKO_NSS_TRUST,)).fetchall())
        finally:
            connection.close()
    except sqlite3.Error:
        return None
    entries = []
    for label, der in certificates:
        if not isinstance(der, bytes) or not der:
            continue
        nickname = label.decode('utf-8', 'replace') if isinstance(label, bytes) and label != b'\xa5\x00\x5a' else None
        entries.append(NssEntry(nickname, der, trust.get(hashlib.sha1(der).digest()) == _CKT_NSS_TRUSTED_DELEGATOR))
    return entries


def parse_certutil_list(text):
    """(nickname, trust flags) of every line of ``certutil -L``."""
    rows = []
    for line in text.splitlines():
        match = re.match(r'^(.*\S)\s+([A-Za-z]*,[A-Za-z]*,[A-Za-z]*)\s*$', line)
        if match and match.group(2) != 'SSL,S/MIME,JAR/XPI':
            rows.append((match.group(1), match.group(2)))
    return rows


class NssDatabase(TrustStore):
    """One NSS database directory, written by its owner."""

    kind = 'nss'

    def __init__(self, path, source='given', owner=None, create=False, certutil=None, check_mode=False, runner=None):
        super().__init__(path, check_mode, runner)
        self.source = source
        self.create = create
        self.certutil = certutil
        self._entries = None
        self._create_planned = False
        self.owner = owner or self._owner()

    def _owner(self):
        for name in ('cert9.db', 'cert8.db', ''):
            try:
                uid = os.stat(os.path.join(self.path, name)).st_uid
            except OSError:
                continue
            try:
                return pwd.getpwuid(uid)
            except KeyError:
                return pwd.struct_passwd((str(uid), 'x', uid, uid, '', '/', ''))
        return None

    @property
    def database(self):
        legacy = not os.path.isfile(os.path.join(self.path, 'cert9.db')) and os.path.isfile(os.path.join(self.path, 'cert8.db'))
        return ('dbm:' if legacy else 'sql:') + self.path

    def info(self):
        return dict(database=self.database, source=self.source, owner=self.owner.pw_name if self.owner else None)

    def _hint(self, code):
        hint = NSS_HINTS.get(code)
        return hint % dict(owner=self.owner.pw_name if self.owner else '?', path=self.path) if hint else None

    def entries(self):
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self):
        if not is_database(self.path):
            if self.create:
                return []
            if not os.path.isdir(self.path):
                raise TrustStoreError('%s does not exist; give the directory of an NSS database (one holding cert9.db)' % self.path,
                                      cause='missing_database')
            raise TrustStoreError('%s is not an NSS database (no cert9.db or cert8.db): start the browser once, or create it with '
                                  'certutil -N -d sql:%s' % (self.path, self.path), cause='not_a_database')
        if self.database.startswith('sql:'):
            if not os.access(os.path.join(self.path, 'cert9.db'), os.R_OK):
                raise TrustStoreError('cannot read %s/cert9.db (owner %s): run the task with become'
                                      % (self.path, self.owner.pw_name if self.owner else '?'), cause='permission')
            entries = read_sql_database(self.path)
            if entries is not None:
                return entries
        return self._read_with_certutil()

    def _read_with_certutil(self):
        rc, out, err = self._certutil(['-L'])
        if rc != 0:
            self._fail('list', rc, out, err)
        entries = []
        for nickname, flags in parse_certutil_list(out):
            rc, pem, err = self._certutil(['-L', '-n', nickname, '-a'])
            if rc != 0:
                continue
            for der in der_certificates(pem.encode('utf-8')):
                entries.append(NssEntry(nickname, der, 'C' in flags.split(',')[0]))
        return entries

    def _certutil_path(self):
        if self.certutil:
            return find_tool('certutil', [self.certutil], CERTUTIL_PACKAGE)
        return find_tool('certutil', list(CERTUTIL_CANDIDATES) + [shutil.which('certutil')], CERTUTIL_PACKAGE)

    def _certutil(self, args, data=None):
        self._check_owner()
        return self.runner.run([self._certutil_path()] + args + ['-d', self.database], data=data, user=self.owner)

    def _check_owner(self):
        if self.owner is not None and os.geteuid() not in (0, self.owner.pw_uid):
            raise TrustStoreError('%s belongs to %s; run the task with become so that it can be written as its owner'
                                  % (self.path, self.owner.pw_name), cause='permission')

    def _fail(self, what, rc, out, err):
        text = (err or out).strip()
        match = _NSS_ERROR.search(text)
        code = match.group(1) if match else 'certutil_failed'
        hint = self._hint(code)
        detail = text.splitlines()[-1] if text else 'exit %d' % rc
        raise TrustStoreError('%s: certutil could not %s (%s)%s' % (self.path, what, detail, ': ' + hint if hint else ''), cause=code)

    def held(self, anchor, entry):
        entries = self.entries()
        holders = [(item.nickname, item.trusted) for item in entries if item.sha256 == anchor.sha256 and item.nickname]
        own = [item for item in entries if entry and item.nickname == entry]
        return Holding(holders, own[0].sha256 if own else None)

    def install(self, anchor, name, replace=False):
        changes = []
        if not is_database(self.path) and self.create and not self._create_planned:
            changes.append(Change('create', self.database))
            self._create_planned = True
            self._carry_out(changes)
        return changes + super().install(anchor, name, replace)

    def prepare(self):
        self._check_owner()
        self._certutil_path()

    def apply(self, change):
        action = change['action']
        if action == 'create':
            self._create()
            return
        if action == 'add':
            args, data, what = ['-A', '-n', change['entry'], '-t', 'C,,', '-a'], pem_text(change.anchor.der), 'add the certificate'
        elif action == 'trust':
            flags = dict(parse_certutil_list(self._certutil(['-L'])[1])).get(change['entry'], ',,').split(',')
            flags[0] = ''.join(sorted(set(flags[0] + 'C')))
            args, data, what = ['-M', '-n', change['entry'], '-t', ','.join(flags)], None, 'set the trust of %r' % change['entry']
        else:
            args, data, what = ['-D', '-n', change['entry']], None, 'delete %r' % change['entry']
        rc, out, err = self._certutil(args, data=data)
        self._entries = None
        if rc != 0:
            self._fail(what, rc, out, err)

    def _create(self):
        self._check_owner()
        missing = []
        path = self.path
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for directory in reversed(missing):
            try:
                os.mkdir(directory, 0o700)
                if self.owner is not None and os.geteuid() == 0:
                    os.chown(directory, self.owner.pw_uid, self.owner.pw_gid)
            except OSError as exc:
                raise TrustStoreError('cannot create %s: %s' % (directory, exc.strerror), cause='permission') from None
        rc, out, err = self._certutil(['-N', '--empty-password'])
        if rc != 0:
            self._fail('create the database', rc, out, err)

    def anchors(self):
        return [item.der for item in self.entries() if item.trusted]


class FirefoxPolicy(TrustStore):
    """The Certificates.Install list of Firefox's enterprise policy file, and the certificate files it names."""

    kind = 'firefox_policy'

    def __init__(self, path=FIREFOX_POLICY_FILE, check_mode=False, runner=None):
        super().__init__(path, check_mode, runner)
        self.certificate_dir = os.path.join(os.path.dirname(path), 'certificates')
        self._document = None

    def entry_name(self, name):
        return os.path.join(self.certificate_dir, (slug(name) or 'ca') + '.pem')

    def _load(self):
        if self._document is None:
            try:
                with open(self.path, encoding='utf-8') as handle:
                    text = handle.read()
            except FileNotFoundError:
                text = ''
            except OSError as exc:
                raise TrustStoreError('cannot read %s: %s' % (self.path, exc.strerror), cause='permission') from None
            if not text.strip():
                self._document = {'policies': {}}
                return self._document
            try:
                document = json.loads(text)
            except ValueError as exc:
                raise TrustStoreError('%s is not valid JSON (%s); fix it first: Firefox ignores every policy while the file is broken, '
                                      'and this module does not overwrite it' % (self.path, exc), cause='invalid_policy') from None
            self._document = self._validate(document)
        return self._document

    def _validate(self, document):
        if not isinstance(document, dict) or not isinstance(document.get('policies', {}), dict):
            raise TrustStoreError('%s must be a JSON object with a "policies" object; fix the file first (Firefox ignores every policy '
                                  'while it is broken)' % self.path, cause='invalid_policy')
        certificates = document.setdefault('policies', {}).get('Certificates', {})
        if not isinstance(certificates, dict) or not isinstance(certificates.get('Install', []), list):
            raise TrustStoreError('%s: policies.Certificates.Install must be a list of paths; fix the file first' % self.path,
                                  cause='invalid_policy')
        return document

    def _install_list(self):
        return self._load()['policies'].get('Certificates', {}).get('Install', [])

    def held(self, anchor, entry):
        holders = []
        for item in self._install_list():
            if isinstance(item, str) and os.path.isabs(item) and anchor.sha256 in file_sha256s(item):
                holders.append((item, True))
        own = file_sha256s(entry) if entry else []
        return Holding(holders, own[0] if own else None)

    def apply(self, change):
        document = self._load()
        install = document['policies'].setdefault('Certificates', {}).setdefault('Install', [])
        if change['action'] == 'add':
            write_public_file(change['entry'], pem_text(change.anchor.der))
            if change['entry'] not in install:
                install.append(change['entry'])
        else:
            while change['entry'] in install:
                install.remove(change['entry'])
            if os.path.dirname(change['entry']) == self.certificate_dir and os.path.exists(change['entry']):
                os.unlink(change['entry'])
            if not install:
                del document['policies']['Certificates']['Install']
            if not document['policies']['Certificates']:
                del document['policies']['Certificates']
        text = json.dumps(document, indent=2) + '\n'
        self._validate(json.loads(text))
        write_public_file(self.path, text)
        self._document = None

    def anchors(self):
        ders = []
        for item in self._install_list():
            if isinstance(item, str) and os.path.isabs(item):
                ders.extend(file_certificates(item))
        return ders


def firefox_profiles(root):
    """Profile directories listed in ``root``/profiles.ini (relative or absolute)."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(os.path.join(root, 'profiles.ini'), encoding='utf-8')
    except (configparser.Error, UnicodeDecodeError):
        return []
    profiles = []
    for section in parser.sections():
        if not section.startswith('Profile') or not parser.has_option(section, 'Path'):
            continue
        path = parser.get(section, 'Path')
        relative = parser.get(section, 'IsRelative', fallback='1').strip() != '0'
        full = os.path.normpath(os.path.join(root, path) if relative else path)
        if full not in profiles:
            profiles.append(full)
    return profiles


def user_databases(user, xdg_config_home=None):
    """(path, source) of every existing NSS database of ``user`` (a pwd entry)."""
    home = user.pw_dir
    found = []
    for relative in CHROMIUM_DATABASES:
        path = os.path.join(home, relative)
        if is_database(path):
            found.append((path, 'chromium-snap' if relative.startswith('snap/') else 'chromium'))
    for source, relative in FIREFOX_ROOTS:
        if relative is None:
            root = os.path.join(xdg_config_home or os.path.join(home, '.config'), 'mozilla', 'firefox')
        else:
            root = os.path.join(home, relative)
        for profile in firefox_profiles(root):
            if is_database(profile):
                found.append((profile, source))
    unique, seen = [], set()
    for path, source in found:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append((path, source))
    return unique


def _login_defs(path='/etc/login.defs'):
    limits = {'UID_MIN': 1000, 'UID_MAX': 60000}
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] in limits and parts[1].isdigit():
                    limits[parts[0]] = int(parts[1])
    except OSError:
        pass
    return limits['UID_MIN'], limits['UID_MAX']


def local_users(passwd=None, login_defs='/etc/login.defs'):
    """root and every regular user (UID_MIN..UID_MAX) whose home directory exists."""
    uid_min, uid_max = _login_defs(login_defs)
    users = []
    for entry in passwd if passwd is not None else pwd.getpwall():
        if (entry.pw_uid == 0 or uid_min <= entry.pw_uid <= uid_max) and os.path.isdir(entry.pw_dir):
            if entry.pw_name not in [user.pw_name for user in users]:
                users.append(entry)
    return users


def discover(users=None, nssdbs=None, create_chromium_db=False, certutil=None, check_mode=False, runner=None,
             passwd=None, system_database=SYSTEM_DATABASE):
    """The databases to manage.

    ``users`` given: those users' databases; ``nssdbs`` given: those
    directories; neither: every local user's databases and the system-wide one.
    """
    stores = []
    if users is None and not nssdbs:
        selected = local_users(passwd)
        if is_database(system_database):
            stores.append(NssDatabase(system_database, 'system', certutil=certutil, check_mode=check_mode, runner=runner))
    else:
        selected = []
        for name in users or []:
            try:
                selected.append(pwd.getpwnam(name) if passwd is None else [entry for entry in passwd if entry.pw_name == name][0])
            except (KeyError, IndexError):
                raise TrustStoreError('user %s does not exist on this host; give existing users, or omit users for every local user' % name,
                                      cause='unknown_user') from None
    for user in selected:
        xdg = os.environ.get('XDG_CONFIG_HOME') if user.pw_uid == os.geteuid() else None
        databases = user_databases(user, xdg)
        for path, source in databases:
            stores.append(NssDatabase(path, source, certutil=certutil, check_mode=check_mode, runner=runner))
        if create_chromium_db and not any(source.startswith('chromium') for dummy, source in databases):
            stores.append(NssDatabase(os.path.join(user.pw_dir, CHROMIUM_DATABASES[0]), 'chromium', owner=user, create=True,
                                      certutil=certutil, check_mode=check_mode, runner=runner))
    for path in nssdbs or []:
        path = re.sub(r'^(sql|dbm):', '', path)
        stores.append(NssDatabase(path, 'given', certutil=certutil, check_mode=check_mode, runner=runner))
    unique, seen = [], set()
    for store in stores:
        real = os.path.realpath(store.path)
        if real not in seen:
            seen.add(real)
            unique.append(store)
    return unique
