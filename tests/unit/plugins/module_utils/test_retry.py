# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one retry policy: what is retried, how long it waits, and the run's connection budget."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _retry, _tls


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def failing(errors):
    """An action that raises each of ``errors`` in turn, then returns 'done'."""
    errors = list(errors)
    calls = []

    def action():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return 'done'
    return action, calls


@pytest.mark.parametrize('error, transient', [
    (_tls.MagratheaConnectionError('dropped'), True),
    (_tls.MagratheaTimeout('slow'), True),
    (_tls.AuthenticationError('refused'), False),
    (_tls.ProtocolError('garbage'), False),
    (_tls.TLSVerifyError('bad certificate'), False),
    (_tls.LocalStorageError('disk full', path='/x', errno=28), False),
    (_retry.BudgetExhausted('enough'), False),
    (OSError('not ours'), False),
])
def test_only_transient_errors_are_retried(error, transient):
    assert _retry.is_transient(error) is transient
    clock = FakeClock()
    action, calls = failing([error])
    policy = _retry.RetryPolicy(retries=3, sleep=clock.sleep)
    if transient:
        assert policy.run(action) == 'done'
        assert len(calls) == 2
    else:
        with pytest.raises(type(error)):
            policy.run(action)
        assert len(calls) == 1 and clock.now == 0


def test_retries_stop_after_the_limit():
    clock = FakeClock()
    action, calls = failing([_tls.MagratheaConnectionError('dropped')] * 10)
    with pytest.raises(_tls.MagratheaConnectionError):
        _retry.RetryPolicy(retries=2, sleep=clock.sleep).run(action)
    assert len(calls) == 3


@pytest.mark.parametrize('retries', [-1, _retry.MAX_RETRIES + 1, 1000, True, 1.5])
def test_retries_are_bounded(retries):
    with pytest.raises(ValueError, match='retries must be a whole number from 0 to %d' % _retry.MAX_RETRIES):
        _retry.RetryPolicy(retries=retries)


def test_a_server_cannot_remove_the_pause():
    policy = _retry.RetryPolicy(min_delay=0.5, max_delay=10)
    assert policy.delay(1, suggested=0) == 0.5
    assert policy.delay(1, suggested=3600) == 10
    assert policy.delay(1, suggested=2) == 2


def test_waits_grow_within_bounds():
    policy = _retry.RetryPolicy(base_delay=1, min_delay=0.5, max_delay=8, jitter=False)
    assert [policy.delay(attempt) for attempt in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_server_hint_is_honoured_within_bounds():
    clock = FakeClock()
    error = _tls.MagratheaConnectionError('busy')
    error.retry_after = 0
    action, calls = failing([error, error])
    waits = []
    _retry.RetryPolicy(retries=5, min_delay=0.5, sleep=clock.sleep).run(action, on_retry=lambda exc, attempt, delay: waits.append(delay))
    assert waits == [0.5, 0.5] and clock.now == 1.0


def test_no_retry_outlasts_the_deadline():
    clock = FakeClock()
    deadline = _tls.Deadline(5, clock=clock)
    action, calls = failing([_tls.MagratheaConnectionError('dropped')] * 10)
    policy = _retry.RetryPolicy(retries=10, base_delay=1, min_delay=1, max_delay=4, deadline=deadline, sleep=clock.sleep, jitter=False)
    with pytest.raises(_tls.MagratheaConnectionError):
        policy.run(action)
    # Waits of 1 and 2 fit in 5 s; the next (4) would not.
    assert len(calls) == 3 and clock.now == 3


def test_budget_is_shared_by_threads_and_never_exceeded():
    budget = _retry.ConnectionBudget(50, 'logins')
    refused = []

    def spend():
        for dummy in range(20):
            try:
                budget.spend('cdr.example:21')
            except _retry.BudgetExhausted as exc:
                refused.append(str(exc))
    threads = [threading.Thread(target=spend) for dummy in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.used == 50
    assert len(refused) == 30
    assert 'already opened 50 logins' in refused[0] and 'cdr.example:21' in refused[0]
