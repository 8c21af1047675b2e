# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CDR plan as a table: listing, local files, manifest and options in; what to fetch, keep and delete out.

No server, no threads, no files: the plan is a pure function, so each case is data.
"""

from __future__ import annotations

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils import _cdr_plan
from ansible_collections.magrathea.secure.plugins.module_utils._cdr_plan import Listing, LocalFile, iso_utc, plan_sync
from ansible_collections.magrathea.secure.plugins.module_utils._ftps import RemoteFile, parse_list_line

T0 = 1_700_000_040  # a whole minute
DAY = 86400
SHA = 'ab' * 32
LONG_AFTER = T0 + DAY  # a check long after the listed minute ended


def exact(name, size=100, mtime=T0):
    """A file as MLSD lists it: time to the second."""
    return RemoteFile(name, size, mtime, 1, '%d' % mtime)


def minute(name, size=100, mtime=T0, listed_time='Nov 14 22:14'):
    """A file as LIST lists it: the minute only."""
    return RemoteFile(name, size, mtime - mtime % 60, 60, listed_time)


def here(size=100, mtime=T0, regular=True):
    return LocalFile(regular, size, mtime)


def entry(size=100, mtime=T0, listed_time='Nov 14 22:14', checked=LONG_AFTER, **extra):
    record = {'size': size, 'mtime': iso_utc(mtime), 'sha256': SHA, 'fetched': iso_utc(T0 + 5), 'listed_time': listed_time,
              'checked': iso_utc(checked) if checked else None}
    record.update(extra)
    return record


def listing(*files, unread=(), complete=True, patterns=('*',), newer_than=None):
    result = Listing(patterns, newer_than)
    for remote in files:
        result.add('file', remote, None)
    for line in unread:
        result.add(None, None, line)
    result.complete = complete
    return result


def outcome(plan):
    """The plan as plain data, empty parts left out."""
    parts = {
        'fetch': [(item.name, item.reason) for item in plan.fetch],
        'keep': plan.keep,
        'backfill': plan.backfill,
        'confirm': [name for name, listed_time in plan.confirm],
        'refused': [entry['name'] for entry in plan.refused],
        'ask_mdtm': plan.ask_mdtm,
        'delete': plan.delete,
        'would_delete': plan.would_delete,
        'missing_on_server': plan.missing_on_server,
    }
    return {key: value for key, value in parts.items() if value}


CASES = {
    # name: (listing, local, manifest, options, expected)
    'new file is fetched': (
        listing(exact('a.zip')), {}, {}, {}, {'fetch': [('a.zip', 'new')]}),
    'same size and second: kept': (
        listing(exact('a.zip')), {'a.zip': here()}, {'a.zip': entry()}, {}, {'keep': ['a.zip']}),
    'kept but unknown to the manifest: back-filled': (
        listing(exact('a.zip')), {'a.zip': here()}, {}, {}, {'keep': ['a.zip'], 'backfill': ['a.zip']}),
    'manifest with another digest-less entry: back-filled': (
        listing(exact('a.zip')), {'a.zip': here()}, {'a.zip': entry(sha256=None)}, {}, {'keep': ['a.zip'], 'backfill': ['a.zip']}),
    'other size: fetched': (
        listing(exact('a.zip', size=101)), {'a.zip': here()}, {'a.zip': entry()}, {}, {'fetch': [('a.zip', 'changed')]}),
    'same size, other second: fetched': (
        listing(exact('a.zip', mtime=T0 + 1)), {'a.zip': here()}, {'a.zip': entry()}, {}, {'fetch': [('a.zip', 'changed')]}),
    'a symlink in dest is refused, never followed': (
        listing(exact('a.zip')), {'a.zip': here(regular=False)}, {}, {}, {'refused': ['a.zip']}),
    'unsafe names are refused': (
        listing(exact('../x'), exact('a/b'), exact('.cdr_sync.lock'), exact('ok.zip')), {}, {}, {},
        {'fetch': [('ok.zip', 'new')], 'refused': ['../x', 'a/b', '.cdr_sync.lock']}),
    'the first of two entries with one name wins': (
        listing(exact('a.zip'), exact('a.zip', size=5)), {'a.zip': here()}, {'a.zip': entry()}, {}, {'keep': ['a.zip']}),
    'pattern and newer_than choose the files': (
        listing(exact('a.zip', mtime=T0 - DAY), exact('b.zip'), exact('c.csv'), patterns=('*.zip',), newer_than=T0 - 60), {}, {}, {},
        {'fetch': [('b.zip', 'new')]}),
    # LIST shows minutes: the manifest and MDTM decide within the minute.
    'LIST: same listed minute, checked after it ended: kept without MDTM': (
        listing(minute('a.zip')), {'a.zip': here()}, {'a.zip': entry()}, {}, {'keep': ['a.zip']}),
    'LIST: checked while the listed minute was running: MDTM asked (same-size regeneration)': (
        listing(minute('a.zip')), {'a.zip': here()}, {'a.zip': entry(checked=T0 + 20)}, {}, {'ask_mdtm': ['a.zip']}),
    'LIST: checked within the clock margin after the minute: MDTM asked': (
        listing(minute('a.zip')), {'a.zip': here()}, {'a.zip': entry(checked=T0 + 60 + _cdr_plan.CLOCK_MARGIN - 1)}, {},
        {'ask_mdtm': ['a.zip']}),
    'LIST: another listed time: MDTM asked': (
        listing(minute('a.zip', listed_time='Nov 14 22:15')), {'a.zip': here()}, {'a.zip': entry()}, {}, {'ask_mdtm': ['a.zip']}),
    'LIST: unknown to the manifest: MDTM asked': (
        listing(minute('a.zip')), {'a.zip': here()}, {}, {}, {'ask_mdtm': ['a.zip']}),
    'LIST: a version 1 manifest (listed, fetched, no checked) still spares MDTM': (
        listing(minute('a.zip')), {'a.zip': here()},
        {'a.zip': {'size': 100, 'mtime': iso_utc(T0), 'sha256': SHA, 'fetched': iso_utc(LONG_AFTER), 'listed': 'Nov 14 22:14'}}, {},
        {'keep': ['a.zip']}),
    'LIST: MDTM gives the same second: kept, and the check recorded': (
        listing(minute('a.zip')), {'a.zip': here()}, {'a.zip': entry(checked=T0 + 20)}, {'exact': {'a.zip': T0}},
        {'keep': ['a.zip'], 'confirm': ['a.zip']}),
    'LIST: MDTM gives another second: fetched': (
        listing(minute('a.zip')), {'a.zip': here()}, {'a.zip': entry(checked=T0 + 20)}, {'exact': {'a.zip': T0 + 30}},
        {'fetch': [('a.zip', 'changed')]}),
    'LIST: no MDTM on the server: fetched': (
        listing(minute('a.zip')), {'a.zip': here()}, {}, {'exact': {'a.zip': None}}, {'fetch': [('a.zip', 'changed')]}),
    'LIST: MDTM same second, unknown to the manifest: back-filled': (
        listing(minute('a.zip')), {'a.zip': here()}, {}, {'exact': {'a.zip': T0}}, {'keep': ['a.zip'], 'backfill': ['a.zip']}),
    # What the server no longer lists.
    'gone from the server, delete off: kept and reported': (
        listing(exact('a.zip')), {'a.zip': here(), 'old.zip': here()}, {'a.zip': entry()}, {},
        {'keep': ['a.zip'], 'missing_on_server': ['old.zip']}),
    'gone from the server, delete on: deleted': (
        listing(exact('a.zip')), {'a.zip': here(), 'old.zip': here()}, {'a.zip': entry()}, {'delete': True},
        {'keep': ['a.zip'], 'delete': ['old.zip']}),
    'incomplete listing: nothing deleted, nothing reported gone': (
        listing(exact('a.zip'), complete=False), {'a.zip': here(), 'b.zip': here()}, {'a.zip': entry()}, {'delete': True},
        {'keep': ['a.zip']}),
    'an unread line may name a local file: nothing deleted (the line is refused under its text)': (
        listing(exact('a.zip'), unread=('-rw-r--r-- 1 ftp ftp 100 2024-01-02 10:22 b.zip',)), {'a.zip': here(), 'b.zip': here()},
        {'a.zip': entry()}, {'delete': True},
        {'keep': ['a.zip'], 'refused': ['-rw-r--r-- 1 ftp ftp 100 2024-01-02 10:22 b.zip']}),
    'files that match no pattern are not cdr_sync\'s': (
        listing(exact('a.zip'), patterns=('*.zip',)), {'a.zip': here(), 'notes.txt': here()}, {'a.zip': entry()}, {'delete': True},
        {'keep': ['a.zip']}),
    'listed but older than newer_than: still on the server': (
        listing(exact('a.zip'), exact('old.zip', mtime=T0 - DAY), newer_than=T0 - 60), {'a.zip': here(), 'old.zip': here()},
        {'a.zip': entry()}, {'delete': True}, {'keep': ['a.zip']}),
    'a refused listed name spares the local file of that name': (
        listing(exact('a.zip'), exact('tab\tname')), {'a.zip': here(), 'tab\tname': here()}, {'a.zip': entry()}, {'delete': True},
        {'keep': ['a.zip'], 'refused': ['tab\tname']}),
    'a symlink in dest is never deleted': (
        listing(exact('a.zip')), {'a.zip': here(), 'link.zip': here(regular=False)}, {'a.zip': entry()}, {'delete': True},
        {'keep': ['a.zip']}),
    'an empty listing deletes nothing': (
        listing(), {'a.zip': here()}, {}, {'delete': True}, {'missing_on_server': ['a.zip']}),
    'more than max_delete: none deleted': (
        listing(exact('a.zip')), dict({'a.zip': here()}, **{'%d.zip' % i: here() for i in range(3)}), {'a.zip': entry()},
        {'delete': True, 'max_delete': 2},
        {'keep': ['a.zip'], 'would_delete': ['0.zip', '1.zip', '2.zip'], 'missing_on_server': ['0.zip', '1.zip', '2.zip']}),
    'exactly max_delete: deleted': (
        listing(exact('a.zip')), dict({'a.zip': here()}, **{'%d.zip' % i: here() for i in range(2)}), {'a.zip': entry()},
        {'delete': True, 'max_delete': 2}, {'keep': ['a.zip'], 'delete': ['0.zip', '1.zip']}),
}


@pytest.mark.parametrize('name', list(CASES))
def test_plan(name):
    files, local, manifest, options, expected = CASES[name]
    assert outcome(plan_sync(files, local, manifest, **options)) == expected


def test_fetch_carries_the_exact_time_mdtm_gave():
    plan = plan_sync(listing(minute('a.zip')), {'a.zip': here()}, {}, exact={'a.zip': T0 + 30})
    (item,) = plan.fetch
    assert (item.mtime, item.exact, item.listed_time) == (T0 + 30, True, 'Nov 14 22:14')
    (new,) = plan_sync(listing(minute('b.zip', mtime=T0 + 7)), {}, {}).fetch
    assert (new.mtime, new.exact) == (T0, False)  # the worker asks MDTM before it names the temporary file


def test_notes_say_why_nothing_was_deleted():
    plan = plan_sync(listing(exact('a.zip'), complete=False), {'b.zip': here()}, {}, delete=True)
    assert plan.notes == ['the listing was incomplete, so no local file is taken to be gone from the server and nothing was deleted']
    plan = plan_sync(listing(unread=('?',) * 2), {'b.zip': here()}, {})
    assert plan.notes == ['2 listing line(s) could not be read and any of them may name a local file, so no local file is taken '
                          'to be gone from the server']
    plan = plan_sync(listing(exact('a.zip')), {str(i): here() for i in range(11)}, {}, delete=True)
    assert plan.notes == ['11 local file(s) are no longer on the server, more than max_delete (10), so none was deleted']


def test_a_real_list_line_plans_like_its_fields():
    kind, remote = parse_list_line('-rw-r--r--    1 0        0             100 Nov 14 22:14 a.zip', now=T0 + 60)
    plan = plan_sync(listing(remote), {'a.zip': here()}, {'a.zip': entry()})
    assert outcome(plan) == {'keep': ['a.zip']}


def test_refusals_are_reported_up_to_a_bound_and_counted():
    files = listing(*[exact('bad/%d' % index) for index in range(_cdr_plan.MAX_REPORTED + 5)])
    assert len(files.refused) == _cdr_plan.MAX_REPORTED and files.refused_count == _cdr_plan.MAX_REPORTED + 5


@pytest.mark.parametrize('name, refused', [
    ('MAG000001_20250101.zip', False),
    ('cdr 2025-01-01.csv', False),
    ('.hidden.zip', False),
    ('é.zip', False),
    ('..', True),
    ('.', True),
    ('', True),
    ('../x', True),
    ('a/b', True),
    ('/etc/passwd', True),
    ('back\\slash', True),
    ('nul\x00byte', True),
    ('new\nline', True),
    ('carriage\rreturn', True),
    ('tab\tname', True),
    ('.cdr_sync.manifest.json', True),
    ('.cdr_sync.part.1.2.x', True),
    ('x' * 256, True),
    ('x' * 255, False),
])
def test_unsafe_names(name, refused):
    assert (_cdr_plan.unsafe_name_reason(name) is not None) is refused


@pytest.mark.parametrize('text, expected', [
    ('2025-01-02', 1735776000),
    ('2025-01-02T03:04:05', 1735776000 + 3 * 3600 + 4 * 60 + 5),
    ('2025-01-02 03:04', 1735776000 + 3 * 3600 + 4 * 60),
    ('2025-01-02T03:04:05Z', 1735776000 + 3 * 3600 + 4 * 60 + 5),
])
def test_parse_newer_than(text, expected):
    assert _cdr_plan.parse_newer_than(text) == expected


@pytest.mark.parametrize('text', ['yesterday', '2025-13-01', '02/01/2025'])
def test_parse_newer_than_rejects(text):
    with pytest.raises(ValueError, match='YYYY-MM-DD'):
        _cdr_plan.parse_newer_than(text)


def test_iso_round_trip():
    assert _cdr_plan.epoch_of_iso(_cdr_plan.iso_utc(T0)) == T0
    assert _cdr_plan.epoch_of_iso(None) is None
