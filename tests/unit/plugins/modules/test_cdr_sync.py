# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cdr_sync module's glue against the embedded FTPS server: Ansible's file options, checks before any connection,
and what a failed run says."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.magrathea.secure.plugins.modules import cdr_sync
from ansible_collections.magrathea.secure.sandbox import pki
from ansible_collections.magrathea.secure.sandbox.cdr import generate_cdr_files
from ansible_collections.magrathea.secure.sandbox.ftps import EmbeddedFtpsServer

USER, PASSWORD = 'cdr-user', 'module-secret-Qz7'


@pytest.fixture(name='pki_paths', scope='module')
def pki_paths_fixture(tmp_path_factory):
    return pki.write_server_pki(str(tmp_path_factory.mktemp('pki')))


@pytest.fixture(name='site')
def site_fixture(pki_paths, tmp_path):
    """An embedded FTPS server with three CDR files, and the module arguments that reach it."""
    names = sorted(os.path.basename(path) for path in generate_cdr_files(str(tmp_path / 'ftp' / 'cdr'), count=3))
    server = EmbeddedFtpsServer(host='127.0.0.1', certfile=pki_paths['cert_file'], keyfile=pki_paths['key_file'], username=USER,
                                password=PASSWORD, root=str(tmp_path / 'ftp'), failed_login_delay=0).start()
    args = {'host': 'localhost', 'port': server.port, 'username': USER, 'password': PASSWORD, 'ca_path': pki_paths['ca_file'],
            'remote_dir': '/cdr', 'dest': str(tmp_path / 'dest'), 'retry_delay': 0}
    yield server, args, names
    server.stop()


def run(capsys, args, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    # A module's warnings are kept process-wide; each run here is a process of its own on a managed host.
    with pytest.MonkeyPatch.context() as patch, patch_module_args(args):
        patch.setattr(module_warnings, '_global_warnings', {})
        with pytest.raises(SystemExit):
            cdr_sync.main()
    return json.loads(capsys.readouterr().out)


def warnings_of(result):
    """The warning texts of a result (ansible-core 2.19 returns them as structured events)."""
    return [warning['event']['msg'] if isinstance(warning, dict) else warning for warning in result.get('warnings', [])]


def mode_of(path):
    return os.stat(path).st_mode & 0o7777


def test_symbolic_mode_and_numeric_owner_apply_to_files_and_manifest(site, capsys):
    server, args, names = site
    result = run(capsys, dict(args, mode='u=rw,g=r,o=', owner='0', group='0'))
    assert result['changed'] is True and result['fetched'] == names
    for name in names + ['.cdr_sync.manifest.json']:
        assert mode_of(os.path.join(args['dest'], name)) == 0o640 and os.stat(os.path.join(args['dest'], name)).st_uid == 0
    assert run(capsys, dict(args, mode='u=rw,g=r,o='))['changed'] is False


def test_mode_of_up_to_date_files_is_corrected_and_check_mode_only_says_so(site, capsys):
    server, args, names = site
    run(capsys, args)
    assert mode_of(os.path.join(args['dest'], names[0])) == 0o640  # the default mode
    would = run(capsys, dict(args, mode='0600'), check_mode=True)
    assert would['changed'] is True and would['attributes_changed'] == names and mode_of(os.path.join(args['dest'], names[0])) == 0o640
    done = run(capsys, dict(args, mode='g-r'))
    assert done['attributes_changed'] == names and mode_of(os.path.join(args['dest'], names[0])) == 0o600


@pytest.mark.parametrize('option, value, message', [
    ('mode', 'u=rwz', "mode 'u=rwz' is neither an octal mode"),
    ('mode', '0999', "mode '0999' is neither an octal mode"),
    ('owner', 'no-such-user-here', "owner 'no-such-user-here' is not a user on this host"),
    ('group', 'no-such-group-here', "group 'no-such-group-here' is not a group on this host"),
    ('retries', 11, 'retries must be between 0 and 10, not 11'),
    ('max_delete', 0, 'max_delete must be at least 1'),
    ('parallel', 33, 'parallel must be between 1 and 32'),
    ('retry_max_time', 0, 'retry_max_time must be more than 0 seconds'),
    ('newer_than', 'last tuesday', 'use YYYY-MM-DD'),
    ('remote_dir', '/cdr\nDELE x', "remote_dir '/cdr\\nDELE x' holds a line break"),
    ('patterns', ['*.zip\r'], "patterns '*.zip\\r' holds a line break"),
    ('ca_path', '/nonexistent/ca.pem', 'CA file /nonexistent/ca.pem'),
    ('owner', '\uff11\uff12', "owner '\uff11\uff12' is not a user on this host"),
])
def test_bad_options_fail_before_any_connection_or_write(site, capsys, option, value, message):
    server, args, names = site
    result = run(capsys, dict(args, **{option: value}))
    assert result['failed'] is True and message in result['msg']
    assert server.events.connections == 0 and not os.path.exists(args['dest'])


def test_more_than_max_delete_fails_and_deletes_nothing(site, capsys):
    server, args, names = site
    run(capsys, args)
    for day in range(1, 4):
        open(os.path.join(args['dest'], 'MAG000001_199901%02d.zip' % day), 'wb').close()
    result = run(capsys, dict(args, delete=True, max_delete=2))
    assert result['failed'] is True and result['deleted'] == [] and len(result['would_delete']) == 3
    assert '3 local file(s) are no longer on localhost:%d/cdr, more than max_delete (2), so none was deleted' % server.port in result['msg']
    assert 'raise max_delete' in result['msg']
    result = run(capsys, dict(args, delete=True, max_delete=3), check_mode=True)
    assert result['deleted'] == ['MAG000001_19990101.zip', 'MAG000001_19990102.zip', 'MAG000001_19990103.zip']
    assert len(os.listdir(args['dest'])) == 3 + 3 + 2  # nothing deleted yet (CDRs, strays, lock and manifest)


def test_files_gone_from_the_server_are_named_in_one_warning(site, capsys, tmp_path):
    server, args, names = site
    run(capsys, args)
    os.unlink(tmp_path / 'ftp' / 'cdr' / names[0])
    result = run(capsys, args)
    assert result['missing_on_server'] == [names[0]] and result['changed'] is False
    assert [warning for warning in warnings_of(result) if 'no longer on the server' in warning] == [
        '1 file(s) in %s are no longer on the server and were kept: %s (see missing_on_server)' % (args['dest'], names[0])]


def test_a_full_result_never_shows_the_password(site, capsys):
    server, args, names = site
    result = run(capsys, dict(args, fingerprint=['00' * 20]))
    assert result['failed'] is True and 'Nothing was sent' in result['msg'] and PASSWORD not in json.dumps(result)
