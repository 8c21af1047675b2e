# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One CDR sync run (the logic behind magrathea.secure.cdr_sync).

Private to this collection: not for use by other collections.

Owns the order of a run and what it reports: check ``dest``, take its lock,
read what it holds and the manifest, list the server and plan (``_cdr_plan``,
asking MDTM where the plan needs it), then act on the plan: keep (with the
files' attributes), back-fill the manifest, fetch (``_cdr_transfer``), and
only then delete, never after an error that stopped the run; and the result:
what was fetched, kept, deleted or would be, what is gone from the server,
refused, failed or corrupt, with a diff. Check mode lists and plans and
writes nothing. Writes to ``dest`` go through ``_cdr_store``.
"""

from __future__ import annotations

import os
import time

from ansible_collections.magrathea.secure.plugins.module_utils._cdr_plan import (
    DEFAULT_MAX_DELETE,
    Listing,
    iso_utc,
    plan_sync,
)
from ansible_collections.magrathea.secure.plugins.module_utils._cdr_store import (
    MANIFEST_NAME,
    Destination,
    DestinationError,
    DestLock,
    Manifest,
    local_storage,
)
from ansible_collections.magrathea.secure.plugins.module_utils._cdr_transfer import (
    Connections,
    Fetcher,
    exact_times,
    read_listing,
)
from ansible_collections.magrathea.secure.plugins.module_utils._ftps import FtpsClient
from ansible_collections.magrathea.secure.plugins.module_utils._retry import ConnectionBudget, RetryPolicy
from ansible_collections.magrathea.secure.plugins.module_utils._tls import Deadline

MAX_BACKOFF = 30.0
# Names a warning spells out; the result lists them all.
NAMES_IN_A_WARNING = 5


def connection_budget(parallel, retries):
    """The connections (logins) one run may open: each worker's first, and a retry of each, twice over."""
    return parallel * (retries + 2)


def some_names(names):
    shown = ', '.join(names[:NAMES_IN_A_WARNING])
    return shown + (' and %d more' % (len(names) - NAMES_IN_A_WARNING) if len(names) > NAMES_IN_A_WARNING else '')


class CdrMirror:
    """One sync of ``remote_dir`` into ``dest``; ``run()`` returns the result dict the module reports.

    ``attributes(path)`` gives a file in dest its owner, group and mode and says whether anything changed (the module
    passes Ansible's set_fs_attributes_if_different); ``dest_attributes(path)`` does so for a dest it creates.
    """

    def __init__(self, endpoint, username, password, remote_dir, dest, patterns=('*',), newer_than=None, delete=False,
                 max_delete=DEFAULT_MAX_DELETE, zip_check=True, parallel=4, retries=5, retry_delay=1.0, retry_max_time=300.0,
                 lock_timeout=300.0, check_mode=False, attributes=None, dest_attributes=None, client_factory=FtpsClient,
                 sleep=time.sleep):
        self.remote_dir = remote_dir
        self.dest = dest
        self.patterns = list(patterns) or ['*']
        self.newer_than = newer_than
        self.delete = delete
        self.max_delete = max_delete
        self.zip_check = zip_check
        self.parallel = max(1, parallel)
        self.lock_timeout = lock_timeout
        self.check_mode = check_mode
        self.attributes = attributes
        self.dest_attributes = dest_attributes
        self.endpoint = endpoint
        policy = RetryPolicy(retries=retries, base_delay=retry_delay, min_delay=0.0, max_delay=MAX_BACKOFF,
                             deadline=Deadline(retry_max_time), sleep=sleep)
        self.connections = Connections(lambda: client_factory(endpoint, username, password), remote_dir, policy,
                                       ConnectionBudget(connection_budget(self.parallel, retries), 'connections (logins)'), sleep)
        self.warnings = []
        self.fetched = []
        self.deleted = []
        self._started = None

    @property
    def retried(self):
        return self.connections.retried

    # -- entry point ----------------------------------------------------------------

    def run(self):
        self._started = time.monotonic()
        dest = os.path.abspath(self.dest)
        if os.path.lexists(dest) and not os.path.isdir(dest):
            raise DestinationError('dest %s exists and is not a directory; point dest at a directory' % dest)
        if self.check_mode:
            return self._sync(dest)
        if not os.path.isdir(dest):
            with local_storage(dest, 'create'):
                os.makedirs(dest, 0o750, exist_ok=True)  # another run may create it at the same moment
            if self.dest_attributes is not None:
                with local_storage(dest, 'set the owner or group of'):
                    self.dest_attributes(dest)
        with DestLock(dest, self.lock_timeout):
            return self._sync(dest)

    def _sync(self, dest):
        destination = Destination(os.path.realpath(dest) if os.path.isdir(dest) else dest, self.attributes)
        manifest = Manifest(destination.join(MANIFEST_NAME)).load()
        if manifest.problem:
            self.warnings.append(manifest.problem)
        local = destination.scan()
        client, listing, plan = self._survey(local, manifest)
        self.warnings.extend(self.connections.warnings)
        self.warnings.extend(plan.notes)
        if self.check_mode:
            self.connections.close(client)
            attributes = sorted(name for name in plan.keep if destination.apply_attributes(name))
            return self._result(destination, listing, plan, manifest, Fetcher(self.connections, destination), attributes, False)
        try:
            attributes = self._keep(destination, manifest, listing, plan, local)
        except BaseException:
            self.connections.close(client)
            raise
        fetcher = Fetcher(self.connections, destination, self.zip_check, self.parallel)
        try:
            fetcher.run(plan.fetch, client)
        finally:
            for item, sha, fetched_at in fetcher.stored:
                manifest.record(item.name, item.size, int(item.mtime), sha, fetched_at, item.listed_time, fetched_at)
                self.fetched.append(item.name)
            if fetcher.fatal is not None and manifest.dirty and self.fetched:
                self._save_after_error(destination, manifest)
        for name in plan.delete:
            destination.delete(name)
            manifest.drop(name)
            self.deleted.append(name)
        destination.remove_stale_partials(fetcher.pending)
        saved = manifest.dirty
        if saved:
            destination.save_manifest(manifest, self._source())
        if self.fetched or self.deleted or attributes or saved:
            destination.sync()
        return self._result(destination, listing, plan, manifest, fetcher, attributes, saved)

    def _survey(self, local, manifest):
        """Connect, list and plan, asking MDTM where the plan needs it; a listing that keeps being cut stays incomplete.

        Returns (client or None, listing, plan).
        """
        connections = self.connections
        reads = 0
        client = None
        while True:
            listing = Listing(self.patterns, self.newer_than)
            client, dummy = connections.attempt(lambda connection: read_listing(connection, listing), 'list %s' % self.remote_dir, client)
            reads += 1
            if listing.complete:
                break
            delay = connections.retry_delay(listing.problem, reads)
            if delay is None:
                self.warnings.append('%s, %d time(s) in a row; the files it named are fetched and nothing is deleted' % (listing.problem, reads))
                break
            connections.sleep(delay)
        plan = plan_sync(listing, local, manifest.files, self.delete, self.max_delete)
        if plan.ask_mdtm:
            client, exact = connections.attempt(lambda connection: exact_times(connection, plan.ask_mdtm), 'ask MDTM', client)
            plan = plan_sync(listing, local, manifest.files, self.delete, self.max_delete, exact)
        return client, listing, plan

    def _keep(self, destination, manifest, listing, plan, local):
        """Up-to-date files: their attributes, and what the manifest should know of them. Returns the names whose attributes changed."""
        now = time.time()
        for name, listed_time in plan.confirm:
            manifest.confirm(name, listed_time, now)
        for name in plan.backfill:
            # Up to date but unknown to the manifest (a crashed run, or files copied in): record what is there.
            here = local[name]
            manifest.record(name, here.size, here.mtime, destination.digest(name), None, listing.files[name].listed_time, now)
        return sorted(name for name in plan.keep if destination.apply_attributes(name))

    def _save_after_error(self, destination, manifest):
        """Record what was stored before the run stopped; the error that stopped it is the one reported."""
        try:
            destination.save_manifest(manifest, self._source())
        except Exception:  # pylint: disable=broad-exception-caught
            pass

    def _source(self):
        return '%s%s' % (self.endpoint.describe(), self.remote_dir)

    # -- result ---------------------------------------------------------------------

    def _result(self, destination, listing, plan, manifest, fetcher, attributes, saved):
        elapsed = time.monotonic() - self._started
        missing = sorted(set(plan.missing_on_server) | set(fetcher.vanished))
        if missing:
            self.warnings.append('%d file(s) in %s are no longer on the server and were kept: %s (see missing_on_server)'
                                 % (len(missing), destination.path, some_names(missing)))
        if self.check_mode:
            fetched = sorted(item.name for item in plan.fetch)
            transferred = sum(item.size for item in plan.fetch)
            deleted = list(plan.delete)
            changed = bool(fetched or deleted or attributes or plan.backfill or plan.confirm or manifest.dirty)
            fetched_items = plan.fetch
        else:
            fetched = sorted(self.fetched)
            transferred = fetcher.received
            deleted = sorted(self.deleted)
            changed = bool(fetched or deleted or attributes or saved)
            fetched_items = [item for item, sha, when in fetcher.stored]
        refused = plan.refused
        before = deleted + ['%s %s' % (item.name, item.reason) for item in fetched_items if item.reason == 'changed']
        after = ['%s %d %s' % (item.name, item.size, iso_utc(item.mtime)) for item in fetched_items]
        return {
            'changed': changed,
            'fetched': fetched,
            'deleted': deleted,
            'would_delete': list(plan.would_delete),
            'missing_on_server': missing,
            'attributes_changed': attributes,
            'refused': refused,
            'errors': sorted(fetcher.errors, key=lambda entry: entry['name']),
            'corrupt': sorted(fetcher.corrupt, key=lambda entry: entry['name']),
            'counts': {
                'listed': listing.file_count,
                'matched': len(listing.files),
                'fetched': len(fetched),
                'up_to_date': len(plan.keep),
                'refused': listing.refused_count + len(refused) - len(listing.refused),
                'deleted': len(deleted),
                'would_delete': len(plan.would_delete),
                'missing_on_server': len(missing),
                'failed': len(fetcher.errors),
                'corrupt': len(fetcher.corrupt),
            },
            'bytes': transferred,
            'elapsed': round(elapsed, 3),
            'throughput': round(transferred / elapsed, 1) if elapsed > 0 else 0.0,
            'retried': self.connections.retried,
            'connections': self.connections.opened,
            'data_connections': self.connections.data_connections,
            'tls_sessions_reused': self.connections.sessions_reused,
            'tls_version': self.connections.tls_version,
            'listing': self.connections.listing_command,
            'listing_complete': listing.complete,
            'listing_problem': str(listing.problem) if listing.problem is not None else None,
            'manifest': destination.join(MANIFEST_NAME),
            'diff': {'before': ''.join(line + '\n' for line in sorted(before)), 'after': ''.join(line + '\n' for line in sorted(after))},
        }
