# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Moving CDR files over FTPS for a sync, and retrying what may be retried.

Private to this collection: not for use by other collections.

Owns every connection a run opens and what happens when one fails: each
connection spends the run's ConnectionBudget (so no fault of either side
becomes a storm of logins); only transient errors are retried, after the
pauses of one RetryPolicy that ends with the run's deadline; a local storage
error, an exhausted budget, a refused login or an untrusted certificate stop
every worker at once. It reads the listing into the plan's Listing as it
streams (a cut listing is read again, and stays incomplete if it keeps being
cut), asks MDTM what the plan asks, and downloads the planned files on
parallel connections into dest, never more than the expected size: a file
that sent more is checked with SIZE, fetched again if it really grew, and not
stored if it did not. A file the server no longer has (550, confirmed with
SIZE) is reported as gone, not as a failure.
"""

from __future__ import annotations

import threading
import time

from ansible_collections.magrathea.secure.plugins.module_utils._cdr_store import CorruptFileError, FileNotStored
from ansible_collections.magrathea.secure.plugins.module_utils._ftps import FtpReplyError, ListingIncomplete, LongerThanExpected
from ansible_collections.magrathea.secure.plugins.module_utils._retry import is_transient
from ansible_collections.magrathea.secure.plugins.module_utils._tls import MagratheaError

NO_SUCH_FILE = 550


class Vanished(MagratheaError):
    """A listed file is no longer on the server (550 to RETR or MDTM, and to SIZE)."""


class _FetchAgain(Exception):
    """The file grew while it was read: fetch it again with its new size, on the same connection."""


class Connections:
    """The FTPS connections of one run: opened within its budget, retried under its policy, counted for the result."""

    def __init__(self, new_client, remote_dir, policy, budget, sleep=time.sleep):
        """``new_client()``: a client not yet connected (an FtpsClient for the endpoint and the account)."""
        self.new_client = new_client
        self.remote_dir = remote_dir
        self.policy = policy
        self.budget = budget
        self.sleep = sleep
        self.opened = self.data_connections = self.sessions_reused = self.retried = 0
        self.tls_version = self.listing_command = None
        self.warnings = []
        self._lock = threading.Lock()

    def open(self):
        """A logged-in client in remote_dir; spends one connection of the budget (raises BudgetExhausted when none is left)."""
        client = self.new_client()
        self.budget.spend(client.endpoint.describe())
        client.connect()
        with self._lock:
            self.opened += 1
        try:
            client.cwd(self.remote_dir)
        except BaseException:
            self.close(client)
            raise
        self.tls_version = client.tls_version
        self.listing_command = 'MLSD' if client.has_mlsd else 'LIST'
        return client

    def close(self, client):
        if client is None:
            return
        with self._lock:
            self.data_connections += client.data_connections
            self.sessions_reused += client.sessions_reused
        client.data_connections = client.sessions_reused = 0
        client.close()

    def retry_delay(self, exc, attempt):
        """The pause before retry ``attempt`` after ``exc``, counted; None when ``exc`` may not be retried."""
        delay = self.policy.next_delay(exc, attempt)
        if delay is not None:
            with self._lock:
                self.retried += 1
        return delay

    def attempt(self, action, what, client=None):
        """``action(client)`` on ``client`` if it is still connected, else on a new connection; retried on a new connection
        after transient errors. Returns (client, what action returned)."""
        attempt = 0
        while True:
            try:
                if client is None or not client.connected:
                    self.close(client)  # one whose control connection was lost still counts its data connections
                    client = self.open()
                return client, action(client)
            except MagratheaError as exc:
                self.close(client)
                client = None
                attempt += 1
                delay = self.retry_delay(exc, attempt)
                if delay is None:
                    raise
                self.warnings.append('%s: %s; retry %d of %d in %.1fs' % (what, exc, attempt, self.policy.retries, delay))
                self.sleep(delay)


def read_listing(client, listing):
    """Read the current directory into ``listing`` as it streams; sets ``listing.complete`` (and ``problem`` when not)."""
    try:
        for kind, entry, line in client.listing():
            listing.add(kind, entry, line)
        listing.complete = True
    except ListingIncomplete as exc:
        listing.problem = exc
    return listing


def exact_times(client, names):
    """name -> exact mtime from MDTM (None: no MDTM, or the file is gone, which the fetch then finds)."""
    times = {}
    for name in names:
        try:
            times[name] = client.mdtm(name)
        except FtpReplyError as exc:
            if exc.code != NO_SUCH_FILE:
                raise
            times[name] = None
    return times


class Fetcher:
    """Downloads the planned files into dest on up to ``parallel`` connections; reports per file.

    ``stored``: (Fetch, sha256, fetched at) for each file given its final name. ``errors`` and ``corrupt``: dicts of
    name and error. ``vanished``: names gone from the server. ``received``: bytes that arrived (stored or not).
    ``pending``: Fetch items not stored, whose temporary files are kept for a resume. ``fatal``: the error that stopped it.
    """

    def __init__(self, connections, destination, zip_check=True, parallel=4):
        self.connections = connections
        self.destination = destination
        self.zip_check = zip_check
        self.parallel = max(1, parallel)
        self.stored = []
        self.errors = []
        self.corrupt = []
        self.vanished = []
        self.received = 0
        self.fatal = None
        self._all = []
        self._queue = []
        self._alive = 0
        self._lock = threading.Lock()

    def run(self, fetches, client=None):
        """Fetch ``fetches`` (largest first, so the workers finish together); ``client`` serves the first worker.

        Raises the error that stopped the run, after every worker has ended.
        """
        self._all = list(fetches)
        self._queue = sorted(self._all, key=lambda item: (-item.size, item.name))
        workers = min(self.parallel, len(self._queue))
        if not workers:
            self.connections.close(client)
            return
        self._alive = workers
        threads = [threading.Thread(target=self._work, args=(None,), daemon=True) for dummy in range(workers - 1)]
        for thread in threads:
            thread.start()
        self._work(client)
        for thread in threads:
            thread.join()
        if self.fatal is not None:
            raise self.fatal
        for item in self._queue:  # only when every worker failed to connect
            self.errors.append({'name': item.name, 'error': 'not fetched: no connection could be opened'})

    @property
    def pending(self):
        stored = {item.name for item, sha, when in self.stored}
        return [item for item in self._all if item.name not in stored]

    def _take(self):
        with self._lock:
            if self.fatal is not None or not self._queue:
                return None
            return self._queue.pop(0)

    def _give_back(self, item):
        with self._lock:
            self._queue.insert(0, item)

    def _stop(self, exc):
        with self._lock:
            self.fatal = self.fatal or exc

    def _leave(self):
        """Stop this worker unless it is the last one; whether it stopped (atomically, so one always stays)."""
        with self._lock:
            if self._alive > 1:
                self._alive -= 1
                return True
            return False

    def _work(self, client):
        connect_attempts = 0
        alive = True
        try:
            while True:
                item = self._take()
                if item is None:
                    return
                if client is None:
                    try:
                        client = self.connections.open()
                        connect_attempts = 0
                    except MagratheaError as exc:
                        self._give_back(item)
                        if not is_transient(exc):
                            self._stop(exc)
                            return
                        if self._leave():  # the account's connection limit: the other workers carry on
                            alive = False
                            return
                        connect_attempts += 1
                        delay = self.connections.retry_delay(exc, connect_attempts)
                        if delay is None:
                            self._fail_queue(exc)
                            return
                        self.connections.sleep(delay)
                        continue
                client = self._fetch_or_retry(client, item)
        finally:
            self.connections.close(client)
            if alive:
                with self._lock:
                    self._alive -= 1

    def _fail_queue(self, exc):
        with self._lock:
            queue, self._queue = self._queue, []
            self.errors.extend({'name': item.name, 'error': str(exc)} for item in queue)

    def _fetch_or_retry(self, client, item):
        """Fetch one item and record the outcome; returns the client to go on with (None after a failed connection)."""
        try:
            sha = self._fetch_one(client, item)
            with self._lock:
                self.stored.append((item, sha, time.time()))
        except _FetchAgain:
            self._give_back(item)
        except Vanished:
            with self._lock:
                self.vanished.append(item.name)
        except CorruptFileError as exc:
            with self._lock:
                self.corrupt.append({'name': item.name, 'error': '%s from %s' % (exc, client.endpoint.describe())})
        except FileNotStored as exc:
            self._fail(item, exc)
        except MagratheaError as exc:
            if is_transient(exc):
                self.connections.close(client)
                item.attempts += 1
                item.stale = True
                delay = self.connections.retry_delay(exc, item.attempts)
                if delay is None:
                    self._fail(item, exc)
                elif self.fatal is None:
                    self.connections.sleep(delay)
                    self._give_back(item)
                return None
            if isinstance(exc, FtpReplyError):
                self._fail(item, exc)
            else:
                self._stop(exc)
        return client

    def _fail(self, item, exc):
        with self._lock:
            self.errors.append({'name': item.name, 'error': str(exc)})

    def _fetch_one(self, client, item):
        """Download one file through its temporary name; give it the final name only when complete and intact."""
        try:
            if item.stale:
                self._refresh_size(client, item)
            if not item.exact:
                mtime = client.mdtm(item.name)
                if mtime is not None:
                    item.mtime = mtime
                item.exact = True
        except FtpReplyError as exc:
            self._raise_if_gone(client, item, exc)
            raise
        partial = self.destination.partial(item)
        try:
            if partial.offset < item.size or item.size == 0:
                try:
                    client.retrieve(item.name, partial.write, partial.offset, item.size)
                except LongerThanExpected as exc:
                    partial.discard()
                    self._grown(client, item, exc)
                except FtpReplyError as exc:
                    self._raise_if_gone(client, item, exc)
                    raise
            return partial.store(self.zip_check)
        finally:
            partial.close()
            with self._lock:
                self.received += partial.received

    def _refresh_size(self, client, item):
        """Before another attempt: the size again, in case the file changed since it was listed."""
        size = client.size(item.name)
        if size != item.size:
            item.size, item.exact = size, False
        item.stale = False

    def _grown(self, client, item, exc):
        """The server sent more than expected: fetch again if SIZE says the file grew, else it is not stored."""
        try:
            size = client.size(item.name)
        except FtpReplyError as error:
            self._raise_if_gone(client, item, error)
            raise
        if size == item.size:
            raise FileNotStored('%s; yet SIZE still gives %d bytes, so the bytes sent are not the file and it was not stored. '
                                'A rerun tries again; if it keeps happening, ask Magrathea to check the file' % (exc, size))
        item.attempts += 1
        if item.attempts > self.connections.policy.retries:
            raise FileNotStored('%s; SIZE now gives %d bytes: the file keeps changing, so it was not stored. A rerun tries again'
                                % (exc, size))
        item.size, item.exact = size, False
        raise _FetchAgain()

    @staticmethod
    def _raise_if_gone(client, item, exc):
        """Raise Vanished when a 550 for a listed file means it is gone: SIZE does not know it either."""
        if exc.code != NO_SUCH_FILE:
            return
        try:
            client.size(item.name)
        except FtpReplyError as error:
            if error.code == NO_SUCH_FILE:
                raise Vanished('%s is no longer on %s' % (item.name, client.endpoint.describe())) from None
            raise
