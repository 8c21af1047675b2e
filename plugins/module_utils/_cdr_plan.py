# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of a CDR sync, as pure functions (the plan behind magrathea.secure.cdr_sync).

Private to this collection: not for use by other collections.

Owns which listed names may become local files and why the others are
refused, which listed files a run wants (patterns, newer_than), and the plan:
from the listing (and whether it is complete), the local files, the manifest
and the options, what to fetch, keep, back-fill into the manifest, confirm in
the manifest, refuse, ask MDTM about, and delete. Deletion is decided only
from a complete listing that accounts for every line it held, and only within
``max_delete``. No I/O, no clock, no threads: a table of cases tests it.
"""

from __future__ import annotations

import calendar
import fnmatch
import re
import time

# Every file cdr_sync keeps in dest starts with this; listed names that do are refused.
RESERVED_PREFIX = '.cdr_sync'
MAX_NAME_BYTES = 255
CONTROL_CHARACTER = re.compile(r'[\x00-\x1f\x7f]')
# Refused names and unread lines a result reports in full; beyond this they are counted.
MAX_REPORTED = 100
# How far the server's clock may be behind this host's, in seconds, when deciding that a listed minute had ended.
CLOCK_MARGIN = 120
DEFAULT_MAX_DELETE = 10


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


class Listing:
    """What a run keeps of the server's listing, filled line by line as it streams (memory: the wanted files).

    ``files``: the wanted files (safe name, matching a pattern, not older than newer_than), first entry of a name wins.
    ``names``: every safe listed name that matches a pattern, old ones included: their local copies are on the server.
    ``refused``: names (or unread lines) that are not written, with the reason, the first MAX_REPORTED of them;
    ``refused_count`` and ``unread_count`` count them all. ``complete``: the caller sets it once the listing has ended
    with a TLS close_notify and a 2xx reply; ``problem``: what was wrong when it did not.
    """

    def __init__(self, patterns=('*',), newer_than=None):
        self.patterns = list(patterns) or ['*']
        self.newer_than = newer_than
        self.files = {}
        self.names = set()
        self.refused = []
        self.refused_names = set()
        self.refused_count = 0
        self.unread_count = 0
        self.file_count = 0
        self.complete = False
        self.problem = None

    def matches(self, name):
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    def add(self, kind, entry, line):
        """Take one listing line: ``kind`` and ``entry`` as FtpsClient.listing yields them."""
        if entry is not None:
            self._add_file(entry)
        elif kind is None:
            # A line that could not be read may name any file: it is reported, and no absence is concluded (see plan).
            self.unread_count += 1
            self._refuse(line, 'listing line not understood', line=True)

    def _add_file(self, remote):
        self.file_count += 1
        reason = unsafe_name_reason(remote.name)
        if reason:
            self.refused_names.add(remote.name)
            self._refuse(remote.name, reason)
            return
        if not self.matches(remote.name):
            return
        self.names.add(remote.name)
        if remote.name in self.files:
            return
        if self.newer_than is not None and remote.mtime + remote.uncertainty <= self.newer_than:
            return
        self.files[remote.name] = remote

    def _refuse(self, name, reason, line=False):
        self.refused_count += 1
        if len(self.refused) < MAX_REPORTED:
            entry = {'name': name, 'reason': reason}
            if line:
                entry['line'] = True
            self.refused.append(entry)


class LocalFile:
    """What dest holds under a name: whether it is a regular file (not a link), its size and whole-second mtime."""

    __slots__ = ('regular', 'size', 'mtime')

    def __init__(self, regular, size, mtime):
        self.regular = regular
        self.size = size
        self.mtime = int(mtime)

    def __repr__(self):
        return 'LocalFile(regular=%r, size=%r, mtime=%r)' % (self.regular, self.size, self.mtime)


class Fetch:
    """A remote file to download: its listed facts (``exact``: the mtime is to the second) and why ('new', 'changed').

    The transfer keeps its own count on it: ``attempts`` made, and whether the size must be asked again (``stale``).
    """

    __slots__ = ('name', 'size', 'mtime', 'exact', 'listed_time', 'reason', 'attempts', 'stale')

    def __init__(self, remote, reason, exact_mtime=None):
        self.name = remote.name
        self.size = remote.size
        self.exact = exact_mtime is not None or remote.uncertainty == 1
        self.mtime = exact_mtime if exact_mtime is not None else remote.mtime
        self.listed_time = remote.listed_time
        self.reason = reason
        self.attempts = 0
        self.stale = False

    def __repr__(self):
        return 'Fetch(%r, %s)' % (self.name, self.reason)


class Plan:
    """What a run does. Lists of names unless said otherwise; the module reports them.

    ``fetch``: Fetch items. ``keep``: up to date. ``backfill``: up to date but not (rightly) in the manifest: record what
    is there. ``confirm``: (name, listed_time) whose exact time MDTM has just confirmed: the manifest records when.
    ``ask_mdtm``: the listing cannot tell whether these changed; ask MDTM and plan again with the answers.
    ``delete``, ``would_delete`` (more than max_delete: none deleted), ``missing_on_server`` (kept locally).
    ``notes``: why deletion did not happen, for a warning.
    """

    def __init__(self):
        self.fetch = []
        self.keep = []
        self.backfill = []
        self.confirm = []
        self.refused = []
        self.ask_mdtm = []
        self.delete = []
        self.would_delete = []
        self.missing_on_server = []
        self.notes = []


def manifest_matches(entry, local):
    """Whether a manifest entry describes this local file (size, whole-second mtime, with a digest)."""
    return bool(entry) and entry.get('size') == local.size and epoch_of_iso(entry.get('mtime')) == local.mtime and bool(entry.get('sha256'))


def confirmed_after_listed_time(entry, remote):
    """Whether the manifest last confirmed the exact time after the listed minute (or day) had surely ended.

    A LIST line shows minutes (or days); a file replaced by one of the same size within that minute lists the same.
    Once cdr_sync has seen the exact time after the minute ended, a later replacement would list another minute.
    """
    confirmed = epoch_of_iso(entry.get('checked') or entry.get('fetched'))
    return confirmed is not None and confirmed >= remote.mtime + remote.uncertainty + CLOCK_MARGIN


def plan_sync(listing, local, manifest, delete=False, max_delete=DEFAULT_MAX_DELETE, exact=None):
    """The plan for one run; pure.

    ``listing``: a Listing. ``local``: name -> LocalFile for what dest holds (cdr_sync's own files left out).
    ``manifest``: name -> entry (size, mtime, sha256, fetched, checked, listed_time). ``exact``: name -> exact mtime or
    None, MDTM's answers for a previous plan's ``ask_mdtm`` (None: the server has no MDTM).
    """
    exact = exact or {}
    plan = Plan()
    plan.refused = list(listing.refused)
    for name in sorted(listing.files):
        remote = listing.files[name]
        here = local.get(name)
        if here is None:
            plan.fetch.append(Fetch(remote, 'new'))
        elif not here.regular:
            plan.refused.append({'name': name, 'reason': 'the local path in dest is a symlink or not a regular file'})
        elif here.size != remote.size:
            plan.fetch.append(Fetch(remote, 'changed'))
        elif remote.uncertainty == 1:
            _keep_if(plan, remote, here, manifest.get(name), here.mtime == int(remote.mtime))
        elif name in exact:
            mtime = exact[name]
            same = mtime is not None and mtime == here.mtime
            if same and manifest_matches(manifest.get(name), here):
                plan.confirm.append((name, remote.listed_time))
            _keep_if(plan, remote, here, manifest.get(name), same, mtime)
        else:
            entry = manifest.get(name)
            if (manifest_matches(entry, here) and entry.get('listed_time', entry.get('listed')) == remote.listed_time
                    and confirmed_after_listed_time(entry, remote)):
                plan.keep.append(name)
            else:
                plan.ask_mdtm.append(name)
    _plan_absence(plan, listing, local, delete, max_delete)
    return plan


def _keep_if(plan, remote, here, entry, same, exact_mtime=None):
    if not same:
        plan.fetch.append(Fetch(remote, 'changed', exact_mtime))
        return
    plan.keep.append(remote.name)
    if not manifest_matches(entry, here):
        plan.backfill.append(remote.name)


def _plan_absence(plan, listing, local, delete, max_delete):
    """Local files the server no longer lists: reported, and deleted only on a listing that accounts for everything."""
    unsure = None
    if not listing.complete:
        unsure = 'the listing was incomplete'
    elif listing.unread_count:
        unsure = '%d listing line(s) could not be read and any of them may name a local file' % listing.unread_count
    if unsure:
        plan.notes.append('%s, so no local file is taken to be gone from the server%s' % (unsure, ' and nothing was deleted' if delete else ''))
        return
    gone = sorted(name for name, here in local.items()
                  if here.regular and listing.matches(name) and name not in listing.names and name not in listing.refused_names)
    if delete and gone and not listing.names:
        plan.notes.append('the listing named no file that matches the patterns, so delete removed nothing (a listing glitch must not wipe dest)')
    elif delete and len(gone) > max_delete:
        plan.would_delete = gone
        plan.notes.append('%d local file(s) are no longer on the server, more than max_delete (%d), so none was deleted'
                          % (len(gone), max_delete))
    elif delete:
        plan.delete = gone
        return
    plan.missing_on_server = gone
