# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""NSS databases (Chromium, Firefox profiles, /etc/pki/nssdb) as trust stores.

Private to this collection: not for use by other collections.

Owns which directories are NSS databases (the candidates come from
_truststore_users; explicit paths and the system-wide database are added
here), reading a cert9.db directly (SQLite, no process) for the check,
certutil for the writes, run as the database's owner so the browser can
still open it, and the precise NSS error of a failed database, a database
in use by another process included.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import der_certificates, pem_text
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import Change, Holding, TrustStore, TrustStoreError, find_tool
from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_users

SYSTEM_DATABASE = '/etc/pki/nssdb'
CERTUTIL_CANDIDATES = ('/usr/bin/certutil', '/bin/certutil', '/usr/local/bin/certutil')
CERTUTIL_PACKAGE = 'the NSS tools (Debian/Ubuntu: libnss3-tools; RHEL: nss-tools; SUSE: mozilla-nss-tools; Arch: nss)'
# How long to wait for another process's lock on cert9.db before calling the database in use.
SQLITE_BUSY_SECONDS = 3
_SQLITE_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED

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


def _sqlite_uri(path, mode):
    return 'file:%s?mode=%s' % (path.replace('?', '%3f').replace('#', '%23'), mode)


def _is_busy(exc):
    """Whether an sqlite3 error says another connection holds a lock (its code, or SQLite's own untranslated words)."""
    return getattr(exc, 'sqlite_errorcode', None) in _SQLITE_BUSY_CODES or 'locked' in str(exc)


def in_use_error(path):
    return TrustStoreError('%s is in use by another process (a running browser, or another certutil, holds its lock); close it and run '
                           'the task again' % path, cause='in_use')


def database_in_use(path):
    """Whether another process holds a lock on the database's SQLite files, so that NSS cannot write (nor always read) it."""
    try:
        import sqlite3
    except ImportError:
        return False
    for name in ('cert9.db', 'key4.db'):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            continue
        try:
            connection = sqlite3.connect(_sqlite_uri(full, 'rw'), uri=True, timeout=0, isolation_level=None)
            try:
                connection.execute('BEGIN IMMEDIATE')  # the lock a writer needs; rolled back at once, nothing is written
                connection.execute('ROLLBACK')
            finally:
                connection.close()
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return True
    return False


def read_sql_database(path):
    """Entries of ``path``/cert9.db read with SQLite (read-only); None when this Python cannot read it.

    A database locked by another process raises TrustStoreError (in_use).
    """
    try:
        import sqlite3
    except ImportError:
        return None
    try:
        connection = sqlite3.connect(_sqlite_uri(os.path.join(path, 'cert9.db'), 'ro'), uri=True, timeout=SQLITE_BUSY_SECONDS)
        try:
            certificates = connection.execute('SELECT a3, a11 FROM nssPublic WHERE a0 = ?', (_CKO_CERTIFICATE,)).fetchall()
            trust = dict(connection.execute('SELECT ace5363b4, ace536358 FROM nssPublic WHERE a0 = ?', (_CKO_NSS_TRUST,)).fetchall())
        finally:
            connection.close()
    except sqlite3.Error as exc:
        if _is_busy(exc):
            raise in_use_error(path) from None
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
        match = re.fullmatch(r'(.*\S)\s+([A-Za-z]*,[A-Za-z]*,[A-Za-z]*)\s*', line)
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
        if database_in_use(self.path):
            raise in_use_error(self.path)  # NSS calls that a bad database or a general error
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
            os.mkdir(directory, 0o700)
            if self.owner is not None and os.geteuid() == 0:
                os.chown(directory, self.owner.pw_uid, self.owner.pw_gid)
        rc, out, err = self._certutil(['-N', '--empty-password'])
        if rc != 0:
            self._fail('create the database', rc, out, err)

    def anchors(self):
        return [item.der for item in self.entries() if item.trusted]


def user_databases(user, xdg_config_home=None):
    """(path, source) of every existing NSS database of ``user`` (a pwd entry), each real directory once."""
    found = [(path, source) for path, source in _truststore_users.candidate_databases(user, xdg_config_home) if is_database(path)]
    return _each_directory_once(found, lambda item: item[0])


def _each_directory_once(items, path_of):
    """``items`` without those whose directory (symlinks resolved) came earlier."""
    unique, seen = [], set()
    for item in items:
        real = os.path.realpath(path_of(item))
        if real not in seen:
            seen.add(real)
            unique.append(item)
    return unique


def discover(users=None, nssdbs=None, create_chromium_db=False, certutil=None, check_mode=False, runner=None,
             passwd=None, system_database=SYSTEM_DATABASE):
    """The databases to manage.

    ``users`` given: those users' databases; ``nssdbs`` given: those
    directories; neither: every local user's databases and the system-wide one.
    """
    stores = []
    if users is None and not nssdbs:
        selected = _truststore_users.local_users(passwd)
        if is_database(system_database):
            stores.append(NssDatabase(system_database, 'system', certutil=certutil, check_mode=check_mode, runner=runner))
    else:
        try:
            selected = _truststore_users.named_users(users or [], passwd)
        except LookupError as exc:
            raise TrustStoreError(str(exc), cause='unknown_user') from None
    for user in selected:
        xdg = os.environ.get('XDG_CONFIG_HOME') if user.pw_uid == os.geteuid() else None
        databases = user_databases(user, xdg)
        for path, source in databases:
            stores.append(NssDatabase(path, source, certutil=certutil, check_mode=check_mode, runner=runner))
        if create_chromium_db and not any(source.startswith('chromium') for dummy, source in databases):
            stores.append(NssDatabase(os.path.join(user.pw_dir, _truststore_users.CHROMIUM_DATABASES[0][1]), 'chromium', owner=user, create=True,
                                      certutil=certutil, check_mode=check_mode, runner=runner))
    for path in nssdbs or []:
        path = re.sub(r'^(sql|dbm):', '', path)
        stores.append(NssDatabase(path, 'given', certutil=certutil, check_mode=check_mode, runner=runner))
    return _each_directory_once(stores, lambda store: store.path)
