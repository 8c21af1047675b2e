# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The destination directory of a CDR sync: its lock, its manifest and every write to it.

Private to this collection: not for use by other collections.

Owns ``dest/.cdr_sync.lock`` (one run at a time), ``dest/.cdr_sync.manifest.json``
(size, mtime, SHA-256, fetch and check times of every file, for billing
audits), what dest holds (a scan that never follows links), and every change
to it: a download written through its temporary name (mode 0600, one name per
remote version, resumed from what it holds, fsynced, ZIP-tested, given its
file attributes and its mtime, then renamed over the final name), deletions,
stale temporary files, and the directory fsync that makes renames last. Every
local failure becomes a LocalStorageError naming the path and the errno here
and nowhere else: it is never taken for a network error and never retried.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import time

from ansible_collections.magrathea.secure.plugins.module_utils._cdr_plan import (
    MAX_NAME_BYTES,
    RESERVED_PREFIX,
    LocalFile,
    iso_utc,
)
from ansible_collections.magrathea.secure.plugins.module_utils._tls import LocalStorageError, MagratheaError

LOCK_NAME = RESERVED_PREFIX + '.lock'
MANIFEST_NAME = RESERVED_PREFIX + '.manifest.json'
PARTIAL_PREFIX = RESERVED_PREFIX + '.part.'
# Version 2 renamed an entry's "listed" to "listed_time" and added "checked"; version 1 manifests are read as they are.
MANIFEST_VERSION = 2
READ_CHUNK = 1024 * 1024
HINTS = {
    errno.ENOSPC: 'free space on the file system of dest',
    errno.EDQUOT: 'raise the disk quota of the user that runs the task',
    errno.EROFS: 'dest is on a read-only file system; remount it or choose another dest',
    errno.EACCES: 'check the owner and permissions of dest',
    errno.EPERM: 'check the owner and permissions of dest (and that owner or group may be set there)',
    errno.EIO: 'the disk reported an I/O error; check it',
}


class FileNotStored(MagratheaError):
    """One file could not be stored as it arrived (the others go on); a rerun tries it again."""


class CorruptFileError(FileNotStored):
    """A downloaded file failed its integrity check and was not given its final name."""


class LockTimeout(MagratheaError):
    """Another run holds the lock on the destination directory."""


class DestinationError(MagratheaError):
    """The destination directory cannot be used."""


@contextlib.contextmanager
def local_storage(path, doing):
    """Turn an OSError raised while ``doing`` something to ``path`` into a LocalStorageError that names both and the errno."""
    try:
        yield
    except OSError as exc:
        code = errno.errorcode.get(exc.errno, 'errno %s' % exc.errno)
        hint = HINTS.get(exc.errno, 'fix that')
        raise LocalStorageError('cannot %s %s: %s (%s). The run stopped at once, without retrying; %s, then rerun: a download '
                                'cut short resumes from what it wrote' % (doing, path, exc.strerror or exc, code, hint),
                                path=path, errno=exc.errno) from None


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
    except OSError as exc:
        if exc.errno == errno.EIO:
            raise  # the disk, not the ZIP
        return '%s: %s' % (type(exc).__name__, exc)
    except Exception as exc:  # pylint: disable=broad-exception-caught  # any failure to read it back means corrupt
        return '%s: %s' % (type(exc).__name__, exc)


def partial_name(name, size, mtime):
    """Temporary name in dest: one per remote version (size and mtime), so a resume never mixes two versions."""
    partial = '%s%d.%d.%s' % (PARTIAL_PREFIX, size, int(mtime), name)
    if len(partial.encode('utf-8')) > MAX_NAME_BYTES:
        key = hashlib.sha256(('%s\0%d\0%d' % (name, size, int(mtime))).encode('utf-8')).hexdigest()
        partial = PARTIAL_PREFIX + key[:40]
    return partial


class Manifest:
    """The audit record in dest: name -> size, mtime, SHA-256, when fetched, when its exact time was last checked,
    and the time the listing showed then."""

    def __init__(self, path):
        self.path = path
        self.files = {}
        self.dirty = False
        self.problem = None

    def load(self):
        try:
            with local_storage(self.path, 'read'):
                try:
                    with open(self.path, 'rb') as handle:
                        data = json.loads(handle.read().decode('utf-8'))
                except FileNotFoundError:
                    return self
            files = data['files']
            if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
                raise ValueError('files is not a mapping of mappings')
            self.files = files
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            self.problem = 'manifest %s could not be read (%s); it is rebuilt from the files in dest' % (self.path, exc)
            self.files = {}
            self.dirty = True
        return self

    def record(self, name, size, mtime, sha256, fetched, listed_time, checked):
        self.files[name] = {'size': size, 'mtime': iso_utc(mtime), 'sha256': sha256, 'fetched': iso_utc(fetched) if fetched else None,
                            'checked': iso_utc(checked), 'listed_time': listed_time}
        self.dirty = True

    def confirm(self, name, listed_time, checked):
        """The exact time of ``name`` was checked again at ``checked`` and still matches; the listing showed ``listed_time``."""
        entry = self.files[name]
        entry.pop('listed', None)
        entry.update(listed_time=listed_time, checked=iso_utc(checked))
        self.dirty = True

    def drop(self, name):
        if self.files.pop(name, None) is not None:
            self.dirty = True

    def text(self, source):
        # One line per file: easy to read and diff, and json's C encoder (indent= would use the slow Python one).
        lines = ['%s: %s' % (json.dumps(name), json.dumps(self.files[name], sort_keys=True)) for name in sorted(self.files)]
        return '{"version": %d, "source": %s, "files": {\n%s\n}}\n' % (MANIFEST_VERSION, json.dumps(source), ',\n'.join(lines))


class DestLock:
    """An exclusive flock on dest/.cdr_sync.lock, waited for up to ``timeout`` seconds."""

    def __init__(self, dest, timeout):
        self.path = os.path.join(dest, LOCK_NAME)
        self.timeout = timeout
        self._descriptor = None

    def __enter__(self):
        with local_storage(self.path, 'open the lock'):
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
                    with local_storage(self.path, 'lock'):
                        raise
                time.sleep(0.1)
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info):
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None


class Destination:
    """The directory a sync writes to (its real path), with the file attributes its files get.

    ``attributes(path)`` gives a file the owner, group, mode (and SELinux context and attributes) it should have and
    says whether anything changed; the module passes Ansible's ``set_fs_attributes_if_different``. None: leave them.
    """

    def __init__(self, path, attributes=None):
        self.path = path
        self._attributes = attributes

    def join(self, name):
        return os.path.join(self.path, name)

    def scan(self):
        """name -> LocalFile for what dest holds, cdr_sync's own files left out; links are not followed."""
        local = {}
        with local_storage(self.path, 'read the directory'):
            try:
                entries = list(os.scandir(self.path))
            except FileNotFoundError:
                return local
            for entry in entries:
                if entry.name.startswith(RESERVED_PREFIX):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                local[entry.name] = LocalFile(stat.S_ISREG(info.st_mode), info.st_size, info.st_mtime)
        return local

    def apply_attributes(self, name):
        """Give ``name`` (in dest) its file attributes; whether anything changed (or, in check mode, would)."""
        if self._attributes is None:
            return False
        path = self.join(name)
        with local_storage(path, 'set the owner, group or mode of'):
            return bool(self._attributes(path))

    def digest(self, name):
        path = self.join(name)
        with local_storage(path, 'read'):
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                return _sha256_of_descriptor(descriptor, os.fstat(descriptor).st_size).hexdigest()
            finally:
                os.close(descriptor)

    def partial(self, fetch):
        return PartialFile(self, fetch)

    def delete(self, name):
        path = self.join(name)
        with local_storage(path, 'delete'):
            os.unlink(path)

    def save_manifest(self, manifest, source):
        """Write the manifest atomically (temporary file with the files' attributes, fsync, rename)."""
        temporary = manifest.path + '.tmp'
        with local_storage(temporary, 'write'):
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                _write_all(descriptor, manifest.text(source).encode('utf-8'))
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        self.apply_attributes(os.path.basename(temporary))
        with local_storage(manifest.path, 'write'):
            os.rename(temporary, manifest.path)
        manifest.dirty = False

    def remove_stale_partials(self, pending):
        """Remove temporary files, except those of ``pending`` Fetch items (kept for a resume)."""
        names = {item.name for item in pending}
        # Long names have hashed temporary names; the others carry the file name after "<size>.<mtime>.".
        hashed = {partial_name(item.name, item.size, item.mtime) for item in pending}
        with local_storage(self.path, 'clean up temporary files in'):
            for entry in list(os.scandir(self.path)):
                if not entry.name.startswith(PARTIAL_PREFIX) or not entry.is_file(follow_symlinks=False):
                    continue
                parts = entry.name[len(PARTIAL_PREFIX):].split('.', 2)
                if entry.name in hashed or (len(parts) == 3 and parts[2] in names):
                    continue
                os.unlink(entry.path)

    def sync(self):
        """fsync the directory, so that renames and deletions survive a crash."""
        with local_storage(self.path, 'sync'):
            descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


class PartialFile:
    """One download on its way into dest: the temporary file of one remote version, resumed from what it holds.

    ``offset``: bytes already there (the REST position). ``write`` is the sink of the transfer. ``received``: bytes
    written by this attempt. ``store`` checks and renames it to its final name; ``discard`` removes it.
    """

    def __init__(self, destination, fetch):
        self.destination = destination
        self.fetch = fetch
        self.path = destination.join(partial_name(fetch.name, fetch.size, fetch.mtime))
        self.received = 0
        self._descriptor = None
        with local_storage(self.path, 'open'):
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            info = os.fstat(self._descriptor)
            if not stat.S_ISREG(info.st_mode):
                self.close()
                raise DestinationError('%s is not a regular file; remove it' % self.path)
            self.offset = info.st_size
            if self.offset > fetch.size:
                os.ftruncate(self._descriptor, 0)
                self.offset = 0
            self._digest = _sha256_of_descriptor(self._descriptor, self.offset) if self.offset else hashlib.sha256()
            os.lseek(self._descriptor, self.offset, os.SEEK_SET)

    def write(self, chunk):
        with local_storage(self.path, 'write'):
            _write_all(self._descriptor, chunk)
        self._digest.update(chunk)
        self.received += len(chunk)

    def store(self, zip_check=True):
        """Check, sync and rename to the final name; returns the SHA-256. A ZIP that does not read back is removed."""
        fetch = self.fetch
        total = self.offset + self.received
        if total != fetch.size:
            raise FileNotStored('%s: %d of %d bytes arrived; not stored, a rerun fetches it again' % (fetch.name, total, fetch.size))
        with local_storage(self.path, 'check'):
            problem = zip_problem(self._descriptor) if zip_check and fetch.name.lower().endswith('.zip') else None
        if problem:
            self.discard()
            raise CorruptFileError('%s is not an intact ZIP (%s); it was not stored. Ask Magrathea to regenerate it; the next run '
                                   'fetches it again' % (fetch.name, problem))
        with local_storage(self.path, 'write'):
            os.utime(self._descriptor, (fetch.mtime, fetch.mtime))
            os.fsync(self._descriptor)
            self.close()
        self.destination.apply_attributes(os.path.basename(self.path))
        final = self.destination.join(fetch.name)
        with local_storage(final, 'rename %s to' % self.path):
            os.rename(self.path, final)
        return self._digest.hexdigest()

    def discard(self):
        self.close()
        with local_storage(self.path, 'remove'):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def close(self):
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
