#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: cdr_sync
short_description: Mirror Magrathea's daily CDR files over explicit FTPS
version_added: 0.1.0
description:
  - Mirrors the CDR directory of the Magrathea CDR server (C(cdr.magrathea-telecom.co.uk), port 21) into a local directory
    over explicit FTP over TLS, the way Magrathea's secure-access guide asks for it.
  - The TLS handshake (AUTH TLS) happens before the user name and password are sent; a server that does not offer AUTH TLS
    is refused and nothing is sent. The optional O(fingerprint) pin is checked before login, and again on every data
    connection. Every data connection, listings included, is encrypted (PROT P) and resumes the control connection's TLS
    session, which strict servers require. Every reply of the server must be complete within O(timeout).
  - Incremental. A file whose size and modification time match the local copy is not downloaded again. Servers without
    MLSD (vsftpd) are read with C(LIST), which shows times to the minute only; MDTM gives the exact time of new files and
    of the few files whose listed minute had not yet ended when their exact time was last checked, so a file replaced
    within the same minute by one of the same size is still fetched.
  - Safe writes. Each file is downloaded under a temporary name in O(dest), resumed with REST after a dropped connection,
    read no further than its listed size, checked for its size (and, for ZIP files, for intact CRCs), synced to disk and
    only then renamed to its final name, with the server's modification time and the O(mode), O(owner) and O(group) it
    should have. A final name never holds a partial or corrupt file.
  - Listed names that contain C(/), a backslash, NUL, line breaks or control characters, that are C(.) or C(..), start with
    C(.cdr_sync) or would resolve outside O(dest) are refused and reported; nothing is ever written outside O(dest).
  - Keeps a manifest C(.cdr_sync.manifest.json) in O(dest) with the size, modification time, SHA-256, fetch time and last
    check of every file, for billing audits.
  - Downloads on O(parallel) connections, retries C(421), C(426), timeouts and dropped connections with backoff, and holds
    a lock on O(dest) so that two runs on one host never write it at once. A run opens at most
    O(parallel) x (O(retries) + 2) connections whatever fails, so that no fault becomes a storm of logins.
  - Deletion (O(delete)) is bounded. Local files are taken to be gone from the server only when the listing is complete
    (its data connection ended with a TLS close_notify and the server confirmed it) and every line of it could be read;
    a listing that names no matching file deletes nothing; and a run that would delete more than O(max_delete) files
    deletes none and fails, naming them in RV(would_delete), as rsync's C(--max-delete) stops deleting. Every deleted
    file is named in RV(deleted) and in the diff.
  - What a rerun does after each failure. A dropped connection, a timeout or C(426) - the file was retried up to
    O(retries) times; its temporary file is kept and the rerun resumes it from there.
  - A full disk or another local write error - the run stopped at once, without retrying and without deleting anything;
    the message names the path and the error (such as C(ENOSPC)). Free space; the rerun resumes the file.
  - An incomplete listing (read again up to O(retries) times) - the files it named were fetched, nothing was deleted and
    the task failed; the rerun lists again.
  - More than O(max_delete) files to delete - nothing was deleted and the task failed. Check that the server really
    dropped them, then raise O(max_delete) (or remove them yourself) and rerun.
  - A corrupt ZIP - it was not stored and the task failed; the rerun downloads it again (ask Magrathea to regenerate it
    if it stays corrupt).
  - A file that sent more bytes than listed - it was fetched again whole if SIZE showed that it had grown, else it was
    not stored and the task failed; the rerun tries again.
  - A refused login, an untrusted certificate or a pin mismatch - nothing was retried, and the message says what had
    been sent. Fix the settings and rerun.
  - The run's connection budget spent - the run stopped; files already stored stay, and the rerun resumes the others.
  - Another run holding the lock on O(dest) for O(lock_timeout) seconds - nothing was done; rerun later.
author:
  - magrathea.secure contributors (@magrathea-secure)
options:
  remote_dir:
    description:
      - Directory on the server that holds the CDR files.
      - Falls back to E(MAGRATHEA_CDR_DIR) (on the controller, then on the managed host).
    type: str
    default: /
  dest:
    description:
      - Local directory to mirror into. Created (mode V(0750), with O(owner) and O(group)) when missing.
      - The module keeps its lock, manifest and temporary files in it, all named C(.cdr_sync*).
    type: path
    required: true
  patterns:
    description:
      - Shell globs (C(fnmatch), case-sensitive); only remote files whose name matches one of them are mirrored.
      - Local files that match none of them are never deleted.
      - Magrathea does not publish a naming scheme, so the default takes every file.
    type: list
    elements: str
    default: ['*']
  newer_than:
    description:
      - Only mirror files modified on or after this date, V(YYYY-MM-DD) or V(YYYY-MM-DDTHH:MM:SS), UTC.
      - Older files still on the server are not fetched, and their local copies are not deleted.
    type: str
  delete:
    description:
      - Delete local files that match O(patterns) but are no longer on the server, within O(max_delete).
      - Nothing is deleted after an incomplete listing, a listing with lines that could not be read, or an empty listing.
      - Without it, such files are kept and listed in RV(missing_on_server), with a warning.
    type: bool
    default: false
  max_delete:
    description:
      - The most local files one run may delete. When O(delete) would remove more, it removes none, lists them in
        RV(would_delete) and the task fails, so that a wrong listing cannot empty O(dest).
      - Raise it on purpose when the server really dropped more files than that.
    type: int
    default: 10
    version_added: 1.0.0
  zip_check:
    description:
      - Read every downloaded file whose name ends in C(.zip) back and check the CRC of each member before it gets
        its final name. A corrupt file is discarded, reported in RV(corrupt), and the task fails.
    type: bool
    default: true
  parallel:
    description:
      - Number of simultaneous FTPS connections used to download (1 to 32), each logging in once and reusing its TLS session.
      - Keep it under the account's connection limit; a connection refused with C(421) is retried with backoff only when
        no other connection carries on.
    type: int
    default: 4
  retries:
    description:
      - How often a file, a connection or the listing is tried again after C(421), C(426), a timeout, a dropped
        connection or a listing cut short (0 to 10).
      - Wrong credentials, certificate errors, a server without TLS and local write errors are never retried.
    type: int
    default: 5
  retry_delay:
    description:
      - Seconds before the first retry; doubles with each further retry (with jitter), up to 30 seconds.
    type: float
    default: 1.0
  retry_max_time:
    description:
      - No retry starts later than this many seconds after the task began; must be more than 0.
    type: float
    default: 300
  lock_timeout:
    description:
      - Seconds to wait for another run that is writing the same O(dest) before failing.
    type: float
    default: 300
  mode:
    description:
      - Mode of the downloaded files and the manifest, in octal (V('0640')) or symbolic (V(u=rw,g=r,o=)) form, as
        M(ansible.builtin.file) takes it. A symbolic mode applies to the mode a file has; a new file starts from V(0600).
      - Files already present with another mode are changed to it.
      - Before 1.0.0 only octal modes were accepted; they mean what they meant.
    type: raw
    default: '0640'
notes:
  - Use O(host) C(cdr.magrathea-telecom.co.uk) and pin the SHA-1 fingerprint that Magrathea publishes in its
    secure-access guide with O(fingerprint); update it when Magrathea announces a new certificate.
  - O(owner), O(group), O(mode), the SELinux options and O(attributes) are Ansible's common file options, applied to
    every file the module writes and to the files already up to date. O(mode), O(owner) and O(group) are checked before
    any connection.
  - Without MLSD, listed times are taken as UTC (vsftpd's default); a server that lists local times makes MDTM decide more often.
  - Every control reply must end within O(timeout) seconds, and every data connection must bring at least 1 KiB (or the
    rest of the file) in every O(timeout) seconds, as curl's C(--speed-limit) asks; a server that trickles is treated as
    a dropped connection (retried within the budget; a rerun resumes the file), so it cannot hold the task.
seealso:
  - name: magrathea.secure.lftp role
    description: The vendor-recommended lftp client, configured for the same server.
    link: https://github.com/magrathea-secure/magrathea.secure/tree/main/roles/lftp
extends_documentation_fragment:
  - magrathea.secure.connection
  - magrathea.secure.connection.cdr
  - magrathea.secure.attributes
  - magrathea.secure.attributes.actiongroup_magrathea
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details: Lists what would be fetched, deleted or changed; connects and lists, but writes nothing.
  diff_mode:
    support: full
    details: Shows the files that are fetched (name, size, time) and those replaced or deleted.
'''

EXAMPLES = r'''
- name: Mirror yesterday's and older CDR ZIPs, pinned to the certificate Magrathea publishes
  magrathea.secure.cdr_sync:
    host: cdr.magrathea-telecom.co.uk
    username: "{{ magrathea_cdr_username }}"
    password: "{{ magrathea_cdr_password }}"
    fingerprint: "65:c6:5c:b2:88:23:6d:a7:74:77:00:55:c3:51:8f:20:e0:36:29:d1"
    ca_path: /usr/local/share/ca-certificates/magrathea-root-ca.crt
    remote_dir: /
    patterns:
      - "*.zip"
    dest: /var/lib/billing/cdr
    owner: billing
    group: billing
    mode: u=rw,g=r,o=
  register: cdr

- name: Show what was fetched
  ansible.builtin.debug:
    msg: "{{ cdr.counts.fetched }} new CDR files, {{ cdr.bytes }} bytes in {{ cdr.elapsed }} s"

- name: Only this year's files, and remove local copies Magrathea no longer serves (at most 31 in one run)
  magrathea.secure.cdr_sync:
    dest: /var/lib/billing/cdr
    newer_than: "2025-01-01"
    delete: true
    max_delete: 31

- name: Settings from the environment (MAGRATHEA_CDR_HOST, _PORT, _USERNAME, _PASSWORD, _DIR, MAGRATHEA_CA_FILE)
  magrathea.secure.cdr_sync:
    dest: /srv/cdr
  check_mode: true
  register: would
'''

RETURN = r'''
changed:
  description: Whether a file was fetched, deleted or had its mode or owner changed, or the manifest was rewritten.
  returned: always
  type: bool
fetched:
  description: Names of the files downloaded (in check mode, that would be downloaded).
  returned: always
  type: list
  elements: str
  sample: ["MAG000001_20250101.zip"]
deleted:
  description: Names of the local files deleted (in check mode, that would be deleted) because of O(delete).
  returned: always
  type: list
  elements: str
would_delete:
  description:
    - Local files no longer on the server that O(delete) would have removed, but did not because there are more than
      O(max_delete) of them. The task fails when not empty.
  returned: always
  type: list
  elements: str
  version_added: 1.0.0
missing_on_server:
  description:
    - Files the server no longer has that were kept in O(dest) (a warning names them, once per run), and listed files that
      were gone by the time they were to be fetched. The first are known only from a complete listing; the second are
      reported whatever the listing.
  returned: always
  type: list
  elements: str
  version_added: 1.0.0
attributes_changed:
  description: Files that were up to date but got their mode or owner corrected.
  returned: always
  type: list
  elements: str
refused:
  description:
    - Listed names that were not written, with the reason; a listing line that could not be read is reported under its
      text, with C(line=true). The first 100 are listed; RV(counts) counts them all.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "../x", "reason": "contains a path separator"}]
errors:
  description: Files that could not be downloaded after the retries, with the error. The task fails when not empty.
  returned: always
  type: list
  elements: dict
corrupt:
  description: Downloaded ZIP files that failed the integrity check and were discarded. The task fails when not empty.
  returned: always
  type: list
  elements: dict
counts:
  description: Counts of listed, matched, fetched, up-to-date, refused, deleted, would-delete, missing, failed and corrupt files.
  returned: always
  type: dict
  sample: {"listed": 31, "matched": 31, "fetched": 1, "up_to_date": 30, "refused": 0, "deleted": 0, "would_delete": 0,
           "missing_on_server": 0, "failed": 0, "corrupt": 0}
retried:
  description: Retries made after C(421), C(426), timeouts, dropped connections and cut listings, all together.
  returned: always
  type: int
bytes:
  description: Bytes downloaded (in check mode, the size of the files that would be downloaded).
  returned: always
  type: int
elapsed:
  description: Seconds the task took, connection and listing included.
  returned: always
  type: float
throughput:
  description: RV(bytes) divided by RV(elapsed), in bytes per second.
  returned: always
  type: float
connections:
  description: Control connections opened (logins).
  returned: always
  type: int
data_connections:
  description: TLS data connections opened (listings and downloads).
  returned: always
  type: int
tls_sessions_reused:
  description: Data connections that resumed the control connection's TLS session.
  returned: always
  type: int
tls_version:
  description: TLS version of the control connection.
  returned: always
  type: str
  sample: TLSv1.3
listing:
  description: How the directory was listed, V(MLSD) (exact facts) or V(LIST) (Unix format, with MDTM where needed).
  returned: always
  type: str
  sample: LIST
listing_complete:
  description:
    - Whether the listing ended with a TLS close_notify and the server's confirmation. When false, nothing was deleted,
      RV(missing_on_server) holds only files that vanished before they were fetched, and the task fails.
  returned: always
  type: bool
  version_added: 1.0.0
listing_problem:
  description: Why the listing was incomplete; null when it was complete.
  returned: always
  type: str
  version_added: 1.0.0
manifest:
  description: Path of the manifest in O(dest).
  returned: always
  type: str
  sample: /var/lib/billing/cdr/.cdr_sync.manifest.json
'''

import grp
import os
import pwd
import re
import stat

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.magrathea.secure.plugins.module_utils._cdr import CdrMirror, some_names
from ansible_collections.magrathea.secure.plugins.module_utils._cdr_plan import DEFAULT_MAX_DELETE, parse_newer_than
from ansible_collections.magrathea.secure.plugins.module_utils._retry import MAX_RETRIES
from ansible_collections.magrathea.secure.plugins.module_utils._text import is_decimal, shown_value, text_problem
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    MagratheaError,
    connection_argument_spec,
    endpoint_from_module,
)

MAX_PARALLEL = 32
# The mode a file has when a symbolic mode is checked before any file exists (what a new temporary file has).
NEW_FILE = os.stat_result((stat.S_IFREG | 0o600,) + (0,) * 9)


def option_problems(params):
    """Why the options cannot be used, checked before any connection or write (empty when they can)."""
    problems = []
    if not 1 <= params['parallel'] <= MAX_PARALLEL:
        problems.append('parallel must be between 1 and %d, not %d' % (MAX_PARALLEL, params['parallel']))
    if not 0 <= params['retries'] <= MAX_RETRIES:
        problems.append('retries must be between 0 and %d, not %d' % (MAX_RETRIES, params['retries']))
    if params['max_delete'] < 1:
        problems.append('max_delete must be at least 1, not %d; to delete nothing, leave delete off' % params['max_delete'])
    for option in ('retry_delay', 'lock_timeout'):
        if not 0 <= params[option] < float('inf'):
            problems.append('%s must be 0 or more seconds, not %s' % (option, params[option]))
    if not 0 < params['retry_max_time'] < float('inf'):
        problems.append('retry_max_time must be more than 0 seconds, not %s' % params['retry_max_time'])
    if not params['patterns'] or not all(params['patterns']):
        problems.append('patterns must name at least one glob, and none may be empty')
    # remote_dir reaches the FTP control connection (CWD): a line break would end the command there.
    for option, value in [('remote_dir', params['remote_dir'])] + [('patterns', pattern) for pattern in params['patterns'] or []]:
        problem = text_problem(value, printable=False)
        if problem:
            problems.append('%s %s %s' % (option, shown_value(value), problem))
    problems.append(mode_problem(params['mode']))
    problems.append(account_problem('owner', params['owner'], pwd.getpwnam, 'user'))
    problems.append(account_problem('group', params['group'], grp.getgrnam, 'group'))
    try:
        if params['newer_than']:
            parse_newer_than(params['newer_than'])
    except ValueError as exc:
        problems.append(str(exc))
    return [problem for problem in problems if problem]


def mode_problem(mode):
    """None when ``mode`` is an octal or symbolic mode as Ansible's file options take it, else why not."""
    if isinstance(mode, int) and not isinstance(mode, bool):
        return None if 0 <= mode <= 0o7777 else 'mode %r is out of range' % mode
    text = str(mode)
    if re.fullmatch(r'(0o)?[0-7]{1,4}', text):
        return None
    try:
        AnsibleModule._symbolic_mode_to_octal(NEW_FILE, text)  # pylint: disable=protected-access
    except (ValueError, KeyError, IndexError):
        return 'mode %r is neither an octal mode such as 0640 nor a symbolic one such as u=rw,g=r,o=' % text
    return None


def account_problem(option, value, lookup, what):
    if value in (None, '') or is_decimal(str(value)):
        return None
    try:
        lookup(value)
    except KeyError:
        return '%s %r is not a %s on this host' % (option, value, what)
    return None


def attribute_setters(module):
    """Ansible's common file options as two callables: for a file in dest, and for a dest the module creates."""
    # Read once; expand=False: a file named "$HOME.zip" is a name, not a variable.
    file_args = module.load_file_common_arguments(module.params, path=module.params['dest'])

    def attributes(path):
        return module.set_fs_attributes_if_different(dict(file_args, path=path), False, expand=False)

    def dest_attributes(path):
        return module.set_fs_attributes_if_different(dict(file_args, path=path, mode=None, attributes=None), False, expand=False)
    return attributes, dest_attributes


def failures(result, where, max_delete):
    """The sentences of a failed run, each saying what a rerun does; empty when the run succeeded."""
    problems = []
    if result['errors'] or result['corrupt']:
        stored = ['%s (%s)' % (entry['name'], entry['error']) for entry in result['errors'] + result['corrupt']]
        problems.append('%d CDR file(s) from %s were not stored (%d fetched): %s%s'
                        % (len(stored), where, result['counts']['fetched'], '; '.join(stored), '; rerun to resume' if result['errors'] else ''))
    if not result['listing_complete']:
        problems.append('%s; the files it named were fetched and nothing was deleted. A rerun lists again' % result['listing_problem'])
    if result['would_delete']:
        problems.append('%d local file(s) are no longer on %s, more than max_delete (%d), so none was deleted: %s. Check that the '
                        'server really dropped them, then raise max_delete or remove them yourself'
                        % (len(result['would_delete']), where, max_delete, some_names(result['would_delete'])))
    return problems


def main():
    argument_spec = connection_argument_spec('CDR')
    argument_spec.update(
        remote_dir=dict(type='str', default='/', fallback=(env_fallback, ['MAGRATHEA_CDR_DIR'])),
        dest=dict(type='path', required=True),
        patterns=dict(type='list', elements='str', default=['*']),
        newer_than=dict(type='str'),
        delete=dict(type='bool', default=False),
        max_delete=dict(type='int', default=DEFAULT_MAX_DELETE),
        zip_check=dict(type='bool', default=True),
        parallel=dict(type='int', default=4),
        retries=dict(type='int', default=5),
        retry_delay=dict(type='float', default=1.0),
        retry_max_time=dict(type='float', default=300.0),
        lock_timeout=dict(type='float', default=300.0),
        mode=dict(type='raw', default='0640'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, add_file_common_args=True)
    params = module.params
    problems = option_problems(params)
    if problems:
        module.fail_json(msg='; '.join(problems))
    endpoint = endpoint_from_module(module, 'CDR')
    attributes, dest_attributes = attribute_setters(module)

    mirror = CdrMirror(
        endpoint, params['username'], params['password'], params['remote_dir'], params['dest'],
        patterns=params['patterns'], newer_than=parse_newer_than(params['newer_than']) if params['newer_than'] else None,
        delete=params['delete'], max_delete=params['max_delete'], zip_check=params['zip_check'], parallel=params['parallel'],
        retries=params['retries'], retry_delay=params['retry_delay'], retry_max_time=params['retry_max_time'],
        lock_timeout=params['lock_timeout'], check_mode=module.check_mode, attributes=attributes, dest_attributes=dest_attributes,
    )
    try:
        result = mirror.run()
    except MagratheaError as exc:
        module.fail_json(msg=str(exc), changed=bool(mirror.fetched or mirror.deleted), fetched=sorted(mirror.fetched),
                         retried=mirror.retried, connections=mirror.connections.opened)

    for warning in mirror.warnings:
        module.warn(warning)
    refused = result['counts']['refused']
    if refused:
        shown = '; '.join('%r (%s)' % (entry['name'], entry['reason']) for entry in result['refused'][:5])
        module.warn('refused %d listed name(s) or line(s) from %s: %s%s' % (refused, endpoint.describe(), shown, '; see refused' if refused > 5 else ''))
    diff = result.pop('diff')
    if module._diff:
        result['diff'] = diff
    problems = failures(result, '%s%s' % (endpoint.describe(), params['remote_dir']), params['max_delete'])
    if problems:
        module.fail_json(msg='. '.join(problems), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
