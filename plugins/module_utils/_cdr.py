# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""CDR directory mirror of magrathea.secure (the logic behind magrathea.secure.cdr_sync).

Private to this collection: not for use by other collections.

Owns everything between the FTPS client and the local CDR directory: which
listed names are safe to write (and which are refused), which files are new or
changed (size and modification time against the local copy and the
manifest), the safe write of each file (temporary name in ``dest``, REST
resume, size check, ZIP test, fsync, atomic rename, remote mtime, mode and
owner), the manifest kept for billing audits, the lock that keeps two runs
out of one ``dest``, and the parallel workers with bounded retries.
"""

from __future__ import annotations

import calendar
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import random
import re
import stat
import threading
import time

from ansible_collections.magrathea.secure.plugins.module_utils._ftps import (
    FtpReplyError,
    FtpsClient,
    TransferIncomplete,
)
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    AuthenticationError,
    MagratheaConnectionError,
    MagratheaError,
    ProtocolError,
    TLSVerifyError,
)

# Every file this module keeps in dest starts with this; remote names that do are refused.
RESERVED_PREFIX = '.cdr_sync'
LOCK_NAME = '.cdr_sync.lock'
MANIFEST_NAME = '.cdr_sync.manifest.json'
PARTIAL_PREFIX = '.cdr_sync.part.'
MANIFEST_VERSION = 1
MAX_NAME_BYTES = 255
MAX_BACKOFF = 30.0
READ_CHUNK = 1024 * 1024
CONTROL_CHARACTER = re.compile(r'[\x00-\x1f\x7f]')


class CorruptFileError(MagratheaError):
    """A downloaded file failed its integrity check and was not given its final name."""


class LockTimeout(MagratheaError):
    """Another run holds the lock on the destination directory."""


class DestinationError(MagratheaError):
    """The destination directory cannot be used."""


def unsafe_name_reason(name):
    """Why a listed name must not become a local file name, or None when it is safe."""
    if name in ('', '.', '..'):
        return 'is empty, "." or ".."'
    if '/' in name or '\\' in name:
        return 'contains a path separator'
    if '\x00' in name:
        return 'contains NUL'
    if '\n' in name or '\r' in name:
        return 'contains a line break'
    if CONTROL_CHARACTER.search(name):
        return 'contains a control character'
    if name.startswith(RESERVED_PREFIX):
        return 'starts with %s, which cdr_sync reserves for its own files' % RESERVED_PREFIX
    try:
        if len(name.encode('utf-8')) > MAX_NAME_BYTES:
            return 'is longer than %d bytes' % MAX_NAME_BYTES
    except UnicodeEncodeError:
        return 'is not valid UTF-8'
    return None


def parse_newer_than(text):
    """Epoch seconds of YYYY-MM-DD or YYYY-MM-DD[T ]HH:MM[:SS][Z] (UTC)."""
    value = text.strip().rstrip('Zz').replace('T', ' ').replace('t', ' ')
    for layout in ('%Y-%m-%d %H:%M:%S', '%Y-%m-%d %H:%M', '%Y-%m-%d'):
        try:
            return calendar.timegm(time.strptime(value, layout))
        except ValueError:
            continue
    raise ValueError('newer_than %r is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (UTC)' % text)


def iso_utc(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def epoch_of_iso(text):
    """Inverse of iso_utc, without strptime (called for every file on a no-op run)."""
    try:
        return calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), int(text[17:19]), 0, 0, 0))
    except (TypeError, ValueError, IndexError):
        return None


def parse_mode(value):
    """File mode from an int or an octal string ('0640', '640')."""
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        if not text or any(char not in '01234567' for char in text):
            raise ValueError('mode %r is not an octal mode such as 0640 (symbolic modes are not supported here)' % value)
        mode = int(text, 8)
    if not 0 <= mode <= 0o7777:
        raise ValueError('mode %r is out of range' % value)
    return mode


def resolve_ids(owner, group):
    """(uid, gid) for user and group names or numbers; -1 where not given."""
    import grp  # pylint: disable=import-outside-toplevel
    import pwd  # pylint: disable=import-outside-toplevel

    uid = gid = -1
    if owner not in (None, ''):
        try:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise ValueError('owner %r is not a user on this host' % owner) from None
    if group not in (None, ''):
        try:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError('group %r is not a group on this host' % group) from None
    return uid, gid


def is_transient(exc):
    """Whether a new attempt (on a new connection) can succeed after ``exc``."""
    if isinstance(exc, FtpReplyError):
        return exc.transient
    if isinstance(exc, (TLSVerifyError, AuthenticationError, ProtocolError)):
        return False
    return isinstance(exc, MagratheaConnectionError)


class CdrFile:
    """A remote CDR file this run fetches (or would fetch), with what is known about it."""

    __slots__ = ('name', 'size', 'mtime', 'precision', 'token', 'reason', 'attempts', 'exact')

    def __init__(self, remote, reason):
        self.name = remote.name
        self.size = remote.size
        self.mtime = remote.mtime
        self.precision = remote.precision
        self.token = remote.token
        self.reason = reason
        self.attempts = 0
        self.exact = remote.precision == 1

    def partial_name(self):
        """Temporary name in dest: one per remote version, so a resume never mixes two versions."""
        name = '%s%d.%d.%s' % (PARTIAL_PREFIX, self.size, int(self.mtime), self.name)
        if len(name.encode('utf-8')) > MAX_NAME_BYTES:
            key = hashlib.sha256(('%s\0%d\0%d' % (self.name, self.size, int(self.mtime))).encode('utf-8')).hexdigest()
            name = PARTIAL_PREFIX + key[:40]
        return name

    def is_zip(self):
        return self.name.lower().endswith('.zip')


class Manifest:
    """The audit record in dest: name -> size, mtime, SHA-256, when fetched, and the listed time it matched."""

    def __init__(self, path):
        self.path = path
        self.files = {}
        self.source = None
        self.dirty = False
        self.problem = None

    def load(self):
        try:
            with open(self.path, 'rb') as handle:
                data = json.loads(handle.read().decode('utf-8'))
            files = data['files']
            if not isinstance(files, dict):
                raise ValueError('files is not a mapping')
            self.files = files
            self.source = data.get('source')
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            self.problem = 'manifest %s could not be read (%s); it is rebuilt from the files in dest' % (self.path, exc)
            self.files = {}
            self.dirty = True
        return self

    def matches(self, name, size, mtime):
        """Whether the entry for ``name`` describes a local file of this size and mtime."""
        entry = self.files.get(name)
        return bool(entry) and entry.get('size') == size and epoch_of_iso(entry.get('mtime')) == int(mtime) and bool(entry.get('sha256'))

    def listed_as(self, name, size, token):
        entry = self.files.get(name)
        return bool(entry) and entry.get('size') == size and entry.get('listed') == token

    def record(self, name, size, mtime, sha256, fetched, listed):
        self.files[name] = {'size': size, 'mtime': iso_utc(mtime), 'sha256': sha256,
                            'fetched': iso_utc(fetched) if fetched else None, 'listed': listed}
        self.dirty = True

    def set_listed(self, name, listed):
        if self.files[name].get('listed') != listed:
            self.files[name]['listed'] = listed
            self.dirty = True

    def drop(self, name):
        if self.files.pop(name, None) is not None:
            self.dirty = True

    def save(self, mode, uid, gid, source):
        """Write atomically: temporary file, fsync, rename."""
        self.source = source
        # One line per file: easy to read and diff, and json's C encoder (indent= would use the slow Python one).
        lines = ['%s: %s' % (json.dumps(name), json.dumps(self.files[name], sort_keys=True)) for name in sorted(self.files)]
        text = '{"version": %d, "source": %s, "files": {\n%s\n}}\n' % (MANIFEST_VERSION, json.dumps(source), ',\n'.join(lines))
        temporary = self.path + '.tmp'
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            _write_all(descriptor, text.encode('utf-8'))
            os.fchmod(descriptor, mode)
            if uid != -1 or gid != -1:
                os.fchown(descriptor, uid, gid)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.rename(temporary, self.path)
        self.dirty = False


class DestLock:
    """An exclusive flock on dest/.cdr_sync.lock, waited for up to ``timeout`` seconds."""

    def __init__(self, dest, timeout):
        self.path = os.path.join(dest, LOCK_NAME)
        self.timeout = timeout
        self._descriptor = None

    def __enter__(self):
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(descriptor)
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        raise LockTimeout('another cdr_sync run is writing %s (lock %s held for more than %ss); '
                                          'let it finish or raise lock_timeout' % (os.path.dirname(self.path), self.path, self.timeout)) from None
                    raise
                time.sleep(0.1)
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info):
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None


def _write_all(descriptor, data):
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _sha256_of_descriptor(descriptor, length):
    digest = hashlib.sha256()
    os.lseek(descriptor, 0, os.SEEK_SET)
    remaining = length
    while remaining > 0:
        chunk = os.read(descriptor, min(READ_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest


def sha256_of_file(path):
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _sha256_of_descriptor(descriptor, os.fstat(descriptor).st_size).hexdigest()
    finally:
        os.close(descriptor)


def zip_problem(descriptor):
    """None when the ZIP open on ``descriptor`` reads back with good CRCs, else what is wrong."""
    import zipfile  # pylint: disable=import-outside-toplevel  # only runs when a ZIP was fetched

    os.lseek(descriptor, 0, os.SEEK_SET)
    try:
        with open(descriptor, 'rb', closefd=False) as handle:
            with zipfile.ZipFile(handle) as archive:
                bad = archive.testzip()
        if bad is not None:
            return 'member %s fails its CRC check' % bad
        return None
    except Exception as exc:  # pylint: disable=broad-exception-caught  # any failure to read it back means corrupt
        return '%s: %s' % (type(exc).__name__, exc)


class CdrMirror:
    """One sync of ``remote_dir`` into ``dest``; ``run()`` returns the result dict the module reports."""

    def __init__(self, endpoint, username, password, remote_dir, dest, patterns=('*',), newer_than=None, mode=0o640, uid=-1, gid=-1,
                 delete=False, zip_check=True, parallel=4, retries=5, retry_delay=1.0, retry_max_time=300.0, lock_timeout=300.0,
                 check_mode=False, client_factory=FtpsClient):
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.remote_dir = remote_dir
        self.dest = dest
        self.patterns = list(patterns) or ['*']
        self.newer_than = newer_than
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.delete = delete
        self.zip_check = zip_check
        self.parallel = max(1, parallel)
        self.retries = max(0, retries)
        self.retry_delay = max(0.0, retry_delay)
        self.retry_max_time = retry_max_time
        self.lock_timeout = lock_timeout
        self.check_mode = check_mode
        self.client_factory = client_factory
        self.warnings = []
        self._lock = threading.Lock()
        self._started = None
        self._deadline = None
        self._reset()

    def _reset(self):
        self.remote_names = set()
        self.refused = []
        self.plan = []
        self.up_to_date = []
        self.fix_attributes = []
        self.backfill = []
        self.fetched = []
        self.errors = []
        self.corrupt = []
        self.deleted = []
        self.attributes_changed = []
        self.bytes = 0
        self.retried = 0
        self.connections = 0
        self.data_connections = 0
        self.sessions_reused = 0
        self.listed = 0
        self.matched = 0
        self.diff_before = []
        self.diff_after = []
        self.manifest = None
        self.manifest_saved = False
        self.tls_version = None
        self.listing = None
        self._fatal = None
        self._pending = None
        self._alive = 0

    # -- entry point ----------------------------------------------------------------

    def run(self):
        self._started = time.monotonic()
        self._deadline = self._started + self.retry_max_time
        self.dest = os.path.abspath(self.dest)
        if os.path.lexists(self.dest) and not os.path.isdir(self.dest):
            raise DestinationError('dest %s exists and is not a directory; point dest at a directory' % self.dest)
        if self.check_mode:
            return self._sync()
        if not os.path.isdir(self.dest):
            os.makedirs(self.dest, 0o750, exist_ok=True)  # another run may create it at the same moment
            if self.uid != -1 or self.gid != -1:
                os.chown(self.dest, self.uid, self.gid)
        with DestLock(self.dest, self.lock_timeout):
            return self._sync()

    def _sync(self):
        real_dest = os.path.realpath(self.dest) if os.path.isdir(self.dest) else self.dest
        self.manifest = Manifest(os.path.join(real_dest, MANIFEST_NAME)).load()
        if self.manifest.problem:
            self.warnings.append(self.manifest.problem)
        client = self._with_retries(lambda: self._open_and_plan(real_dest), 'list %s' % self.remote_dir)
        try:
            if self.check_mode:
                return self._result(real_dest)
            self._fix_attributes(real_dest)
            self._backfill(real_dest)
            self._fetch_all(client, real_dest)
            client = None  # the workers closed it
        finally:
            if client is not None:
                self._close(client)
        self._finish(real_dest)
        return self._result(real_dest)

    # -- retries --------------------------------------------------------------------

    def _backoff(self, attempt):
        return min(self.retry_delay * 2 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.5, 1.0)

    def _may_wait(self, delay):
        return time.monotonic() + delay <= self._deadline

    def _with_retries(self, action, what):
        attempt = 0
        while True:
            try:
                return action()
            except MagratheaError as exc:
                attempt += 1
                delay = self._backoff(attempt)
                if not is_transient(exc) or attempt > self.retries or not self._may_wait(delay):
                    raise
                self.warnings.append('%s: %s; retry %d of %d in %.1fs' % (what, exc, attempt, self.retries, delay))
                self._count_retry()
                time.sleep(delay)

    def _count_retry(self):
        with self._lock:
            self.retried += 1

    def _connect(self):
        client = self.client_factory(self.endpoint, self.username, self.password)
        client.connect()
        with self._lock:
            self.connections += 1
        try:
            client.cwd(self.remote_dir)
        except BaseException:
            client.close()
            raise
        return client

    def _close(self, client):
        with self._lock:
            self.data_connections += client.data_connections
            self.sessions_reused += client.sessions_reused
        client.data_connections = client.sessions_reused = 0
        client.close()

    # -- plan -----------------------------------------------------------------------

    def _open_and_plan(self, real_dest):
        self._reset_plan()
        client = self._connect()
        try:
            self._plan(client, real_dest)
        except BaseException:
            self._close(client)
            raise
        return client

    def _reset_plan(self):
        self.remote_names, self.refused, self.plan = set(), [], []
        self.up_to_date, self.fix_attributes, self.backfill = [], [], []
        self.listed = self.matched = 0

    def _matches(self, name):
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    def _plan(self, client, real_dest):
        self.tls_version = client.tls_version
        self.listing = 'MLSD' if client.has_mlsd else 'LIST'
        files, unparsed = client.list_dir()
        self.listed = len(files)
        for line in unparsed:
            self.refused.append({'name': line, 'reason': 'listing line not understood'})
        uncertain = []
        seen = set()
        for remote in files:
            name = remote.name
            reason = unsafe_name_reason(name)
            if reason:
                self.refused.append({'name': name, 'reason': reason})
                continue
            self.remote_names.add(name)
            if name in seen or not self._matches(name):
                continue
            seen.add(name)
            if self.newer_than is not None and remote.mtime + remote.precision <= self.newer_than:
                continue
            self.matched += 1
            try:
                local = os.lstat(os.path.join(real_dest, name))
            except FileNotFoundError:
                self.plan.append(CdrFile(remote, 'new'))
                continue
            if not stat.S_ISREG(local.st_mode):
                self.refused.append({'name': name, 'reason': 'the local path in dest is a symlink or not a regular file'})
                continue
            if local.st_size != remote.size:
                self.plan.append(CdrFile(remote, 'changed'))
            elif remote.precision == 1:
                self._keep_or_fetch(remote, local, int(local.st_mtime) == int(remote.mtime))
            elif self.manifest.listed_as(name, remote.size, remote.token) and self.manifest.matches(name, local.st_size, local.st_mtime):
                self._keep_or_fetch(remote, local, True)
            else:
                uncertain.append((remote, local))
        for remote, local in uncertain:
            # The listing shows minutes or days only and the manifest does not know it: ask for the exact time.
            exact = client.mdtm(remote.name)
            same = exact is not None and exact == int(local.st_mtime)
            if same and self.manifest.matches(remote.name, local.st_size, local.st_mtime):
                self.manifest.set_listed(remote.name, remote.token)
            if exact is not None:
                remote.mtime, remote.precision = exact, 1
            self._keep_or_fetch(remote, local, same)

    def _keep_or_fetch(self, remote, local, same):
        if not same:
            self.plan.append(CdrFile(remote, 'changed'))
            return
        self.up_to_date.append(remote.name)
        if (self.mode != stat.S_IMODE(local.st_mode) or self.uid not in (-1, local.st_uid) or self.gid not in (-1, local.st_gid)):
            self.fix_attributes.append(remote.name)
        if not self.manifest.matches(remote.name, local.st_size, local.st_mtime):
            self.backfill.append((remote, local))

    # -- local changes besides fetching ----------------------------------------------

    def _fix_attributes(self, real_dest):
        for name in self.fix_attributes:
            # Through a descriptor opened without following links: what is changed is the file the plan looked at.
            descriptor = os.open(os.path.join(real_dest, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(descriptor, self.mode)
                if self.uid != -1 or self.gid != -1:
                    os.fchown(descriptor, self.uid, self.gid)
            finally:
                os.close(descriptor)
            self.attributes_changed.append(name)

    def _backfill(self, real_dest):
        for remote, local in self.backfill:
            # Up to date but unknown to the manifest (a crashed run, or files copied in): record what is there.
            digest = sha256_of_file(os.path.join(real_dest, remote.name))
            self.manifest.record(remote.name, local.st_size, int(local.st_mtime), digest, None, remote.token)

    # -- fetching -------------------------------------------------------------------

    def _fetch_all(self, client, real_dest):
        if not self.plan:
            self._close(client)
            return
        # Largest first, so the workers finish together.
        self._pending = sorted(self.plan, key=lambda item: (-item.size, item.name))
        workers = min(self.parallel, len(self._pending))
        self._alive = workers
        threads = []
        for dummy in range(workers - 1):
            thread = threading.Thread(target=self._work, args=(None, real_dest), daemon=True)
            thread.start()
            threads.append(thread)
        self._work(client, real_dest)
        for thread in threads:
            thread.join()
        if self._fatal is not None:
            raise self._fatal

    def _next(self):
        with self._lock:
            if self._fatal is not None or not self._pending:
                return None
            return self._pending.pop(0)

    def _requeue(self, item):
        with self._lock:
            self._pending.insert(0, item)

    def _fail(self, item, exc):
        with self._lock:
            self.errors.append({'name': item.name, 'error': str(exc)})

    def _work(self, client, real_dest):
        connect_failures = 0
        counted = True
        try:
            while True:
                with self._lock:
                    if self._fatal is not None or not self._pending:
                        return
                if client is None:
                    try:
                        client = self._connect()
                        connect_failures = 0
                    except MagratheaError as exc:
                        if not is_transient(exc):
                            with self._lock:
                                self._fatal = self._fatal or exc
                            return
                        connect_failures += 1
                        delay = self._backoff(connect_failures)
                        if connect_failures > self.retries or not self._may_wait(delay):
                            with self._lock:
                                self._alive -= 1
                                counted = False
                                if self._alive > 0:
                                    return  # the other workers carry on with the queue
                                orphans, self._pending = self._pending, []
                                for item in orphans:
                                    self.errors.append({'name': item.name, 'error': str(exc)})
                            return
                        self._count_retry()
                        time.sleep(delay)
                        continue
                item = self._next()
                if item is None:
                    return
                try:
                    self._fetch_one(client, item, real_dest)
                except CorruptFileError as exc:
                    with self._lock:
                        self.corrupt.append({'name': item.name, 'error': str(exc)})
                except MagratheaError as exc:
                    if is_transient(exc):
                        self._close(client)
                        client = None
                        item.attempts += 1
                        delay = self._backoff(item.attempts)
                        if item.attempts > self.retries or not self._may_wait(delay):
                            self._fail(item, exc)
                        else:
                            self._requeue(item)
                            self._count_retry()
                            time.sleep(delay)
                    elif isinstance(exc, FtpReplyError):
                        self._fail(item, exc)
                    else:
                        with self._lock:
                            self._fatal = self._fatal or exc
                        return
                except OSError as exc:
                    self._fail(item, DestinationError('cannot write %s in %s: %s' % (item.name, real_dest, exc)))
        finally:
            if client is not None:
                self._close(client)
            if counted:
                with self._lock:
                    self._alive -= 1

    def _fetch_one(self, client, item, real_dest):
        """Download one file through its temporary name; give it the final name only when complete and intact."""
        if item.attempts:
            item.size = client.size(item.name)
            item.exact = False
        if not item.exact:
            exact = client.mdtm(item.name)
            if exact is not None:
                item.mtime = exact
            item.exact = True
        partial = os.path.join(real_dest, item.partial_name())
        descriptor = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise DestinationError('%s is not a regular file; remove it' % partial)
            offset = info.st_size
            if offset > item.size:
                os.ftruncate(descriptor, 0)
                offset = 0
            digest = _sha256_of_descriptor(descriptor, offset) if offset else hashlib.sha256()
            os.lseek(descriptor, offset, os.SEEK_SET)
            received = [0]
            if offset < item.size or item.size == 0:
                def sink(chunk):
                    _write_all(descriptor, chunk)
                    digest.update(chunk)
                    received[0] += len(chunk)
                try:
                    client.retrieve(item.name, sink, offset)
                finally:
                    with self._lock:
                        self.bytes += received[0]  # dropped attempts count too: they crossed the network
            total = offset + received[0]
            if total != item.size:
                if total > item.size:
                    os.ftruncate(descriptor, 0)  # it changed while we read it: start again from its new facts
                raise TransferIncomplete('%s: got %d of %d bytes of %s; resuming from the temporary file'
                                         % (self.endpoint.describe(), total, item.size, item.name))
            if self.zip_check and item.is_zip():
                problem = zip_problem(descriptor)
                if problem:
                    os.close(descriptor)
                    descriptor = None
                    os.unlink(partial)
                    raise CorruptFileError('%s from %s is not an intact ZIP (%s); it was not stored. '
                                           'Ask Magrathea to regenerate it; the next run fetches it again'
                                           % (item.name, self.endpoint.describe(), problem))
            os.fchmod(descriptor, self.mode)
            if self.uid != -1 or self.gid != -1:
                os.fchown(descriptor, self.uid, self.gid)
            os.utime(descriptor, (item.mtime, item.mtime))
            os.fsync(descriptor)
        finally:
            if descriptor is not None:
                os.close(descriptor)
        final = os.path.join(real_dest, item.name)
        os.rename(partial, final)
        fetched_at = time.time()
        with self._lock:
            self.manifest.record(item.name, item.size, int(item.mtime), digest.hexdigest(), fetched_at, item.token)
            self.fetched.append(item.name)

    # -- after fetching ------------------------------------------------------------

    def _finish(self, real_dest):
        for item in self._fetched_items():
            self.diff_after.append('%s %d %s' % (item.name, item.size, iso_utc(item.mtime)))
        wrote = bool(self.fetched or self.attributes_changed)
        if self.delete:
            wrote = self._delete_missing(real_dest) or wrote
        self._remove_stale_partials(real_dest)
        if self.manifest.dirty:
            self.manifest.save(self.mode, self.uid, self.gid, '%s%s' % (self.endpoint.describe(), self.remote_dir))
            self.manifest_saved = wrote = True
        if wrote:
            descriptor = os.open(real_dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(descriptor)  # the renames and deletions survive a crash
            finally:
                os.close(descriptor)

    def _fetched_items(self):
        fetched = set(self.fetched)
        return [item for item in self.plan if item.name in fetched]

    def _local_candidates(self, real_dest):
        """Regular files in dest that match the patterns and are not this module's own."""
        try:
            entries = list(os.scandir(real_dest))
        except FileNotFoundError:
            return []
        return [entry.name for entry in entries
                if not entry.name.startswith(RESERVED_PREFIX) and entry.is_file(follow_symlinks=False) and self._matches(entry.name)]

    def _to_delete(self, real_dest):
        if not self.remote_names:
            if self.delete:
                self.warnings.append('the remote listing of %s is empty, so delete removed nothing (a listing glitch must not wipe dest)'
                                     % self.remote_dir)
            return []
        listed = self.remote_names | {entry['name'] for entry in self.refused}
        return sorted(name for name in self._local_candidates(real_dest) if name not in listed)

    def _delete_missing(self, real_dest):
        for name in self._to_delete(real_dest):
            os.unlink(os.path.join(real_dest, name))
            self.manifest.drop(name)
            self.deleted.append(name)
            self.diff_before.append(name)
        return bool(self.deleted)

    def _remove_stale_partials(self, real_dest):
        """Remove temporary files of files that are no longer pending; a pending file keeps its partial for a resume."""
        fetched = set(self.fetched)
        pending = {item.name for item in self.plan if item.name not in fetched}
        # Long names have hashed temporary names; the others carry the file name after "<size>.<mtime>.".
        hashed = {item.partial_name() for item in self.plan if item.name in pending}
        try:
            entries = list(os.scandir(real_dest))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.startswith(PARTIAL_PREFIX) or not entry.is_file(follow_symlinks=False):
                continue
            parts = entry.name[len(PARTIAL_PREFIX):].split('.', 2)
            if entry.name in hashed or (len(parts) == 3 and parts[2] in pending):
                continue
            os.unlink(entry.path)

    # -- result ---------------------------------------------------------------------

    def _result(self, real_dest):
        elapsed = time.monotonic() - self._started
        if self.check_mode:
            fetched = sorted(item.name for item in self.plan)
            transferred = sum(item.size for item in self.plan)
            deleted = self._to_delete(real_dest) if self.delete else []
            attributes = sorted(self.fix_attributes)
            changed = bool(fetched or deleted or attributes or self.backfill or self.manifest.dirty)
            before = deleted + ['%s %s' % (item.name, item.reason) for item in self.plan if item.reason == 'changed']
            after = ['%s %d %s' % (item.name, item.size, iso_utc(item.mtime)) for item in self.plan]
        else:
            fetched = sorted(self.fetched)
            transferred = self.bytes
            deleted = sorted(self.deleted)
            attributes = sorted(self.attributes_changed)
            changed = bool(fetched or deleted or attributes or self.manifest_saved)
            before = self.diff_before + ['%s %s' % (item.name, item.reason) for item in self._fetched_items() if item.reason == 'changed']
            after = self.diff_after
        up_to_date = len(self.up_to_date)
        return {
            'changed': changed,
            'fetched': fetched,
            'deleted': deleted,
            'attributes_changed': attributes,
            'refused': self.refused,
            'errors': sorted(self.errors, key=lambda entry: entry['name']),
            'corrupt': sorted(self.corrupt, key=lambda entry: entry['name']),
            'counts': {
                'listed': self.listed,
                'matched': self.matched,
                'fetched': len(fetched),
                'up_to_date': up_to_date,
                'refused': len(self.refused),
                'deleted': len(deleted),
                'failed': len(self.errors),
                'corrupt': len(self.corrupt),
            },
            'bytes': transferred,
            'elapsed': round(elapsed, 3),
            'throughput': round(transferred / elapsed, 1) if elapsed > 0 else 0.0,
            'retried': self.retried,
            'connections': self.connections,
            'data_connections': self.data_connections,
            'tls_sessions_reused': self.sessions_reused,
            'tls_version': self.tls_version,
            'listing': self.listing,
            'manifest': os.path.join(real_dest, MANIFEST_NAME),
            'diff': {'before': ''.join(line + '\n' for line in sorted(before)), 'after': ''.join(line + '\n' for line in sorted(after))},
        }
