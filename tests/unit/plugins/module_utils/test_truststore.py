# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The store driver shared by every trust module, on in-memory stores."""

from __future__ import annotations

import errno
import os
import pwd
import stat

import pytest

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import parse_certificates
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import (
    CommandRunner, Holding, ToolNotFound, TrustStore, TrustStoreError, converge, failure_message, find_tool, store_error, write_public_file,
)
from ansible_collections.magrathea.secure.sandbox import pki


class MemoryStore(TrustStore):
    """name -> sha256; ``broken`` makes every write fail, ``deaf`` makes writes silently do nothing."""

    kind = 'memory'

    def __init__(self, path, entries=None, broken=False, deaf=False, log=None, check_mode=False):
        super().__init__(path, check_mode)
        self.entries = dict(entries or {})
        self.broken = broken
        self.deaf = deaf
        self.log = log if log is not None else []

    def held(self, anchor, entry):
        return Holding([(name, True) for name, sha in self.entries.items() if sha == anchor.sha256], self.entries.get(entry))

    def apply(self, change):
        self.log.append((self.path, change['action'], change.get('entry')))
        if self.broken:
            raise TrustStoreError('%s is broken' % self.path, cause='broken')
        if self.deaf:
            return
        if change['action'] == 'add':
            self.entries[change['entry']] = change.anchor.sha256
        elif change['action'] == 'delete':
            del self.entries[change['entry']]


@pytest.fixture(name='anchors', scope='module')
def anchors_fixture():
    return [parse_certificates(pki.certificate_pem(pki.CertificateAuthority(name).certificate))[0] for name in ('Root One', 'Root Two')]


def test_present_runs_in_order_and_absent_in_reverse(anchors):
    log = []
    stores = [MemoryStore('a', log=log), MemoryStore('b', log=log)]
    converge(stores, anchors, ['one', 'two'], 'present')
    assert log == [('a', 'add', 'one'), ('a', 'add', 'two'), ('b', 'add', 'one'), ('b', 'add', 'two')]
    del log[:]
    results, changed, dummy = converge(stores, anchors, ['one', 'two'], 'absent')
    assert [path for path, dummy, dummy2 in log] == ['b', 'b', 'a', 'a']
    assert [result['path'] for result in results] == ['b', 'a']


def test_one_failing_store_does_not_stop_the_others(anchors):
    stores = [MemoryStore('bad', broken=True), MemoryStore('good')]
    results, changed, dummy = converge(stores, anchors[:1], ['one'], 'present')
    assert changed
    assert (results[0]['status'], results[0]['cause'], results[0]['msg']) == ('failed', 'broken', 'bad is broken')
    assert results[1]['status'] == 'present' and results[1]['changed']
    assert failure_message(results, 'stores') == '1 of 2 stores failed: bad is broken'


def test_a_write_that_did_not_happen_is_caught(anchors):
    results, dummy, dummy2 = converge([MemoryStore('deaf', deaf=True)], anchors[:1], ['one'], 'present')
    assert results[0]['cause'] == 'not_written' and 'did not write' in results[0]['msg']


def test_diff_shows_subjects_and_fingerprints(anchors):
    store = MemoryStore('s', {'old': 'ab' * 32})
    dummy, changed, diff = converge([store], anchors[:1], ['old'], 'present', replace=True)
    assert diff['before']['stores']['s'] == {'old': {'sha256': ':'.join(['AB'] * 32), 'trusted': True}}
    assert diff['after']['stores']['s'] == {'old': {'sha256': anchors[0].fingerprint, 'subject': anchors[0].subject, 'trusted': True}}


def test_nothing_to_do_is_not_changed_and_has_no_diff(anchors):
    store = MemoryStore('s', {'x': anchors[0].sha256})
    results, changed, diff = converge([store], anchors[:1], ['one'], 'present')
    assert not changed and diff == {'before': {'stores': {}}, 'after': {'stores': {}}}
    assert failure_message(results, 'stores') is None


def test_state_names(anchors):
    store = MemoryStore('s', {'one': anchors[1].sha256})
    assert store.state(anchors[0], 'one') == 'conflict'
    assert store.state(anchors[1], 'other') == 'present'
    assert store.state(anchors[0], 'free') == 'absent'


def test_find_tool(tmp_path):
    tool = tmp_path / 'tool'
    tool.write_text('#!/bin/sh\n')
    tool.chmod(0o755)
    assert find_tool('tool', ['/nonexistent/tool', str(tool)], 'x') == str(tool)
    with pytest.raises(ToolNotFound, match='tool not found .looked in /nonexistent/tool.; install the tool package'):
        find_tool('tool', ['/nonexistent/tool', None], 'the tool package')


def test_runner_uses_the_c_locale_and_switches_user():
    rc, out, dummy = CommandRunner().run(['/bin/sh', '-c', 'echo $LC_ALL $SECRET; id -u'], env={'SECRET': 'from-env'})
    assert rc == 0 and out.split() == ['C', 'from-env', str(os.geteuid())]
    nobody = pwd.getpwnam('nobody')
    rc, out, dummy = CommandRunner().run(['/bin/sh', '-c', 'id -u; echo $HOME'], user=nobody)
    assert out.split() == [str(nobody.pw_uid), nobody.pw_dir]


def test_runner_reports_a_missing_tool():
    with pytest.raises(ToolNotFound, match='not found at /nonexistent/certutil'):
        CommandRunner().run(['/nonexistent/certutil'])


def test_write_public_file_replaces_atomically_and_names_the_path_on_failure(tmp_path):
    target = tmp_path / 'anchors' / 'magrathea.crt'
    write_public_file(str(target), 'first\n')
    write_public_file(str(target), 'second\n')
    assert target.read_text() == 'second\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [path.name for path in target.parent.iterdir()] == ['magrathea.crt']  # no temporary file left behind
    blocked = tmp_path / 'a-file' / 'magrathea.crt'
    (tmp_path / 'a-file').write_text('')
    with pytest.raises(OSError) as caught:
        write_public_file(str(blocked), 'x')
    error = store_error(caught.value)  # what the one error boundary of converge makes of it
    assert isinstance(error, TrustStoreError) and str(tmp_path / 'a-file') in str(error)


@pytest.mark.parametrize('number, cause, hint', [
    (errno.EACCES, 'permission', 'run the task with become'),
    (errno.EROFS, 'read_only', 'read-only'),
    (errno.ENOSPC, 'no_space', 'free space'),
    (errno.EIO, 'os_error', 'check that file'),
])
def test_store_error_names_the_file_the_reason_and_the_next_step(number, cause, hint):
    error = store_error(OSError(number, os.strerror(number), '/etc/firefox/policies/policies.json'))
    assert error.cause == cause
    assert str(error).startswith('/etc/firefox/policies/policies.json: %s; ' % os.strerror(number)) and hint in str(error)
    same = TrustStoreError('as it was', cause='conflict')
    assert store_error(same) is same
