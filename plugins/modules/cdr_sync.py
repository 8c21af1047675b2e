#!/usr/bin/python
# Copyright: contributors to magrathea.secure
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
    is refused and nothing is sent. The optional O(fingerprint) pin is checked before login. Every data connection,
    listings included, is encrypted (PROT P) and resumes the control connection's TLS session, which strict servers require.
  - Incremental. A file whose size and modification time match the local copy is not downloaded again. Servers without
    MLSD (vsftpd) are read with C(LIST), and MDTM gives the exact time where the listing does not.
  - Safe writes. Each file is downloaded under a temporary name in O(dest), resumed with REST after a dropped connection,
    checked for its size (and, for ZIP files, for intact CRCs), synced to disk and only then renamed to its final name,
    with the server's modification time. A final name never holds a partial or corrupt file.
  - Listed names that contain C(/), a backslash, NUL, line breaks or control characters, that are C(.) or C(..), start with
    C(.cdr_sync) or would resolve outside O(dest) are refused and reported; nothing is ever written outside O(dest).
  - Keeps a manifest C(.cdr_sync.manifest.json) in O(dest) with the size, modification time, SHA-256 and fetch time of
    every file, for billing audits.
  - Downloads on O(parallel) connections, retries C(421), C(426), timeouts and dropped connections with backoff, and holds
    a lock on O(dest) so that two runs on one host never write it at once.
author:
  - magrathea.secure contributors (@magrathea-secure)
options:
  remote_dir:
    description:
      - Directory on the server that holds the CDR files.
      - Falls back to the environment variable E(MAGRATHEA_CDR_DIR).
    type: str
    default: /
  dest:
    description:
      - Local directory to mirror into. Created (mode V(0750)) when missing.
      - The module keeps its lock, manifest and temporary files in it, all named C(.cdr_sync*).
    type: path
    required: true
  patterns:
    description:
      - Shell globs (C(fnmatch), case-sensitive); only remote files whose name matches one of them are mirrored.
      - Magrathea does not publish a naming scheme, so the default takes every file.
    type: list
    elements: str
    default: ['*']
  newer_than:
    description:
      - Only mirror files modified on or after this date, V(YYYY-MM-DD) or V(YYYY-MM-DDTHH:MM:SS), UTC.
    type: str
  delete:
    description:
      - Delete local files that match O(patterns) but are no longer on the server.
      - An empty remote listing never deletes anything.
    type: bool
    default: false
  zip_check:
    description:
      - Read every downloaded file whose name ends in C(.zip) back and check the CRC of each member before it gets
        its final name. A corrupt file is discarded, reported in RV(corrupt), and the task fails.
    type: bool
    default: true
  parallel:
    description:
      - Number of simultaneous FTPS connections used to download, each logging in once and reusing its TLS session.
      - Keep it under the account's connection limit; connections refused with C(421) are retried with backoff.
    type: int
    default: 4
  retries:
    description:
      - How often a file or a connection is tried again after C(421), C(426), a timeout or a dropped connection.
      - Wrong credentials, certificate errors and a server without TLS are never retried.
    type: int
    default: 5
  retry_delay:
    description:
      - Seconds before the first retry; doubles with each further retry (with jitter), up to 30 seconds.
    type: float
    default: 1.0
  retry_max_time:
    description:
      - No retry starts later than this many seconds after the task began.
    type: float
    default: 300
  lock_timeout:
    description:
      - Seconds to wait for another run that is writing the same O(dest) before failing.
    type: float
    default: 300
  mode:
    description:
      - Octal mode of the downloaded files and the manifest, such as V('0640'). Symbolic modes are not supported.
      - Files already present with another mode are changed to it.
    type: raw
    default: '0640'
  owner:
    description:
      - User name or UID that should own the downloaded files and the manifest (needs root).
    type: str
  group:
    description:
      - Group name or GID of the downloaded files and the manifest.
    type: str
notes:
  - Use O(host) C(cdr.magrathea-telecom.co.uk) and pin the SHA-1 fingerprint that Magrathea publishes in its
    secure-access guide with O(fingerprint); update it when Magrathea announces a new certificate.
  - Without MLSD, the listing shows modification times to the minute. A file replaced within the same minute by one of
    the same size is only noticed when the manifest is removed.
seealso:
  - name: magrathea.secure.lftp role
    description: The vendor-recommended lftp client, configured for the same server.
    link: https://github.com/magrathea-secure/magrathea.secure/tree/main/roles/lftp
extends_documentation_fragment:
  - magrathea.secure.connection
  - magrathea.secure.connection.cdr
  - magrathea.secure.attributes
  - magrathea.secure.attributes.actiongroup_magrathea
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
    mode: "0640"
  register: cdr

- name: Show what was fetched
  ansible.builtin.debug:
    msg: "{{ cdr.counts.fetched }} new CDR files, {{ cdr.bytes }} bytes in {{ cdr.elapsed }} s"

- name: Only this year's files, and remove local copies Magrathea no longer serves
  magrathea.secure.cdr_sync:
    dest: /var/lib/billing/cdr
    newer_than: "2025-01-01"
    delete: true

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
attributes_changed:
  description: Files that were up to date but got their mode or owner corrected.
  returned: always
  type: list
  elements: str
refused:
  description: Listed names that were not written, with the reason.
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
  description: Counts of listed, matched, fetched, up-to-date, refused, deleted, failed and corrupt files.
  returned: always
  type: dict
  sample: {"listed": 31, "matched": 31, "fetched": 1, "up_to_date": 30, "refused": 0, "deleted": 0, "failed": 0, "corrupt": 0}
retried:
  description: Retries made after C(421), C(426), timeouts and dropped connections (connections and files together).
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
manifest:
  description: Path of the manifest in O(dest).
  returned: always
  type: str
  sample: /var/lib/billing/cdr/.cdr_sync.manifest.json
'''

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.magrathea.secure.plugins.module_utils._cdr import (
    CdrMirror,
    parse_mode,
    parse_newer_than,
    resolve_ids,
)
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    MagratheaError,
    connection_argument_spec,
    endpoint_from_module,
)


def main():
    argument_spec = connection_argument_spec('CDR')
    argument_spec.update(
        remote_dir=dict(type='str', default='/', fallback=(env_fallback, ['MAGRATHEA_CDR_DIR'])),
        dest=dict(type='path', required=True),
        patterns=dict(type='list', elements='str', default=['*']),
        newer_than=dict(type='str'),
        delete=dict(type='bool', default=False),
        zip_check=dict(type='bool', default=True),
        parallel=dict(type='int', default=4),
        retries=dict(type='int', default=5),
        retry_delay=dict(type='float', default=1.0),
        retry_max_time=dict(type='float', default=300.0),
        lock_timeout=dict(type='float', default=300.0),
        mode=dict(type='raw', default='0640'),
        owner=dict(type='str'),
        group=dict(type='str'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if not 1 <= params['parallel'] <= 32:
        module.fail_json(msg='parallel must be between 1 and 32, not %d' % params['parallel'])
    if params['retries'] < 0:
        module.fail_json(msg='retries must not be negative')
    try:
        mode = parse_mode(params['mode'])
        uid, gid = resolve_ids(params['owner'], params['group'])
        newer_than = parse_newer_than(params['newer_than']) if params['newer_than'] else None
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    endpoint = endpoint_from_module(module, 'CDR')

    mirror = CdrMirror(
        endpoint, params['username'], params['password'], params['remote_dir'], params['dest'],
        patterns=params['patterns'], newer_than=newer_than, mode=mode, uid=uid, gid=gid, delete=params['delete'],
        zip_check=params['zip_check'], parallel=params['parallel'], retries=params['retries'], retry_delay=params['retry_delay'],
        retry_max_time=params['retry_max_time'], lock_timeout=params['lock_timeout'], check_mode=module.check_mode,
    )
    try:
        result = mirror.run()
    except MagratheaError as exc:
        module.fail_json(msg=str(exc), changed=bool(mirror.fetched or mirror.deleted), fetched=sorted(mirror.fetched))
    except OSError as exc:
        module.fail_json(msg='cannot write to %s: %s' % (params['dest'], exc), changed=bool(mirror.fetched), fetched=sorted(mirror.fetched))

    for warning in mirror.warnings:
        module.warn(warning)
    for entry in result['refused']:
        module.warn('refused listed name %r from %s: %s' % (entry['name'], endpoint.describe(), entry['reason']))
    diff = result.pop('diff')
    if module._diff:
        result['diff'] = diff
    if result['errors'] or result['corrupt']:
        problems = ['%s (%s)' % (entry['name'], entry['error']) for entry in result['errors'] + result['corrupt']]
        module.fail_json(msg='%d CDR file(s) from %s%s were not stored (%d fetched): %s%s'
                         % (len(problems), endpoint.describe(), params['remote_dir'], result['counts']['fetched'], '; '.join(problems),
                            '; rerun to resume' if result['errors'] else ''), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
