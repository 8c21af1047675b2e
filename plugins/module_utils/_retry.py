# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one retry policy of magrathea.secure's clients (FTPS, REST, NTSAPI).

Private to this collection: not for use by other collections.

Owns what may be tried again and how: an error is worth another attempt only
when its class says it is ``transient`` (a dropped or refused connection, a
server's temporary reply), never for a local error, a refused login or a bad
answer; the pause between attempts grows, stays within bounds whatever a
server asks for (``Retry-After: 0`` does not remove it), and never outlasts
the run's deadline; and a run's budget of connections (logins, requests),
shared by its threads, caps how many it may ever open. Magrathea forbids
large numbers of requests: no setting and no server answer can turn a fault
into a storm.
"""

from __future__ import annotations

import random
import threading
import time

from ansible_collections.magrathea.secure.plugins.module_utils._tls import MagratheaError

# The most retries any option may ask for, per operation.
MAX_RETRIES = 10


class BudgetExhausted(MagratheaError):
    """The run has opened as many connections as it may; nothing more is sent."""


def is_transient(exc):
    """Whether another attempt, on a new connection, can succeed after ``exc``."""
    return isinstance(exc, MagratheaError) and bool(getattr(exc, 'transient', False))


class ConnectionBudget:
    """The connections (logins, requests) one run may open, shared by all its threads."""

    def __init__(self, limit, what='connections'):
        self.limit = int(limit)
        self.what = what
        self.used = 0
        self._lock = threading.Lock()

    def spend(self, where):
        """Count one more connection to ``where``; raise BudgetExhausted when the run has used them all."""
        with self._lock:
            if self.used >= self.limit:
                raise BudgetExhausted('%s: this run has already opened %d %s, its limit; stopped rather than risk a storm of '
                                      'requests that Magrathea forbids. Run the task again later' % (where, self.used, self.what))
            self.used += 1


class RetryPolicy:
    """How many times an operation is retried and how long to wait before each new attempt.

    ``retries`` counts new attempts after the first (capped at MAX_RETRIES); waits grow from ``base_delay`` and stay
    between ``min_delay`` and ``max_delay``, whatever a server suggests; a ``deadline`` (``_tls.Deadline``) stops
    retries whose wait would outlast it.
    """

    def __init__(self, retries=2, base_delay=1.0, min_delay=0.5, max_delay=30.0, deadline=None, sleep=time.sleep, jitter=True):
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise ValueError('retries must be a whole number from 0 to %d, got %r' % (MAX_RETRIES, retries))
        self.retries = retries
        self.base_delay = base_delay
        self.min_delay = min_delay
        self.max_delay = max(min_delay, max_delay)
        self.deadline = deadline
        self.sleep = sleep
        self.jitter = jitter

    def delay(self, attempt, suggested=None):
        """Seconds to wait before new attempt number ``attempt`` (1 for the first retry); ``suggested`` is a server's hint."""
        if suggested is None:
            wanted = self.base_delay * 2 ** (attempt - 1)
            if self.jitter:
                wanted *= random.uniform(0.75, 1.0)
        else:
            wanted = suggested
        return max(self.min_delay, min(float(wanted), self.max_delay))

    def next_delay(self, exc, attempt, suggested=None):
        """The wait before retrying after failed attempt ``attempt`` (1-based), or None when ``exc`` ends the operation."""
        if not is_transient(exc) or attempt > self.retries:
            return None
        delay = self.delay(attempt, suggested)
        if self.deadline is not None and self.deadline.remaining() <= delay:
            return None
        return delay

    def run(self, action, on_retry=None):
        """``action()``, tried again after transient failures; ``on_retry(exc, attempt, delay)`` hears of each retry.

        An error may carry ``retry_after`` (seconds a server asked for); it is honoured within the bounds.
        """
        attempt = 0
        while True:
            try:
                return action()
            except MagratheaError as exc:
                attempt += 1
                delay = self.next_delay(exc, attempt, getattr(exc, 'retry_after', None))
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt, delay)
                self.sleep(delay)
