#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: browser_trust
short_description: Trust a CA certificate in the NSS databases of Chromium and Firefox
version_added: 0.1.0
description:
  - Adds a CA certificate (normally the Magrathea root CA) with trust C(C,,) (trusted CA for TLS servers) to NSS
    databases, or removes it.
  - "Finds the databases of the O(users) given, or of every local user (root and C(UID_MIN)..C(UID_MAX) of
    C(/etc/login.defs)) plus the system-wide C(/etc/pki/nssdb) when neither O(users) nor O(nssdbs) is given:
    Chromium's C(~/.pki/nssdb), C(~/.local/share/pki/nssdb) (Chromium 146 and newer) and
    C(~/snap/chromium/current/.pki/nssdb); Flatpak browsers (Chromium, Chrome, Brave) under
    C(~/.var/app/<app-id>/.pki/nssdb) and C(~/.var/app/<app-id>/data/pki/nssdb); Firefox profiles listed in
    C(profiles.ini) under C(~/.mozilla/firefox), C(~/.config/mozilla/firefox) (Firefox 147 and newer, E(XDG_CONFIG_HOME)
    for the module's own user), the snap C(~/snap/firefox/common/.mozilla/firefox) and Flatpak
    C(~/.var/app/<app-id>/.mozilla/firefox) and C(~/.var/app/<app-id>/config/mozilla/firefox)."
  - Writes with C(certutil) as the owner of each database, so that the browser can still open it. Reads C(cert9.db)
    directly, so a run with nothing to do starts no process.
  - One result per database; a database that fails gets a precise cause (such as V(SEC_ERROR_READ_ONLY), or V(in_use)
    when a running browser or another process holds its lock) and does not stop the others. The task fails when any
    database failed.
  - On removal (V(absent)) every nickname holding the certificate (found by SHA-256) is deleted from every database,
    and each database is read again to check that it is gone. A database created with O(create_chromium_db) stays.
  - Optionally adds the certificate to the Firefox enterprise policy (O(firefox_policy)), merged into the existing
    policies and validated before it is written.
author:
  - magrathea.secure contributors (@magrathea-secure)
extends_documentation_fragment:
  - magrathea.secure.trust
  - magrathea.secure.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows, per database, the nicknames holding the certificate with its subject, SHA-256 and trust.
options:
  nickname:
    description:
      - Nickname of the certificate in the databases.
      - No control character, line break, leading C(-) or C(:) (NSS reads C(token:nickname)), no white space at either end,
        at most 200 characters; refused before anything is written.
      - Defaults to the certificate's common name; for a bundle each certificate gets C(<nickname>-<first 8 hex digits of its SHA-256>).
    type: str
  users:
    description:
      - Local users whose browser databases to manage.
      - When neither O(users) nor O(nssdbs) is given, every local user's databases and C(/etc/pki/nssdb) are managed.
    type: list
    elements: str
  nssdbs:
    description:
      - NSS database directories to manage (with or without a C(sql:) prefix), in addition to those of O(users).
      - Each must already be a database (hold C(cert9.db) or C(cert8.db)).
    type: list
    elements: path
  create_chromium_db:
    description:
      - Create C(~/.pki/nssdb) (owned by the user, empty password) for each selected user who has no Chromium database yet.
    type: bool
    default: false
  firefox_policy:
    description:
      - Also list the certificate under C(Certificates.Install) of the Firefox enterprise policy file O(firefox_policy_file),
        which packaged and snap Firefox read at start (new profiles included).
      - The certificate is written next to it in C(certificates/<nickname>.pem). Other policies are kept; a file that is not
        valid JSON is reported and left untouched, because Firefox ignores every policy while it is broken.
      - With O(state=absent) the certificate file and its entry are removed; when nothing of this collection is left, the
        C(certificates) directory goes, and so do the policy file and the directories this collection created, if no other
        policy or file is in them. A policy file someone else wrote is never deleted, only rewritten without our entry.
    type: bool
    default: false
  firefox_policy_file:
    description:
      - The Firefox enterprise policy file.
    type: path
    default: /etc/firefox/policies/policies.json
  replace:
    description:
      - Replace another certificate found under O(nickname). Without it that is reported as a conflict and nothing is written.
    type: bool
    default: false
  certutil:
    description:
      - Path of C(certutil). Defaults to C(/usr/bin/certutil) or the one on E(PATH).
    type: path
requirements:
  - C(certutil) on the managed host (Debian/Ubuntu C(libnss3-tools), RHEL C(nss-tools), SUSE C(mozilla-nss-tools)),
    needed only when a database must change
  - Root privileges (become) to write other users' databases
notes:
  - A browser that has never been started has no database; use O(create_chromium_db) for Chromium, or start Firefox once.
  - Chromium and Firefox also trust their built-in roots, which are not in these databases.
seealso:
  - module: magrathea.secure.ca_trust
  - module: magrathea.secure.trust_check
'''

EXAMPLES = r'''
- name: Trust the Magrathea root CA in every browser of every user
  magrathea.secure.browser_trust:
    src: /home/certificate/mag-root-ca.crt
    fingerprint: "{{ magrathea_root_sha256 }}"
    nickname: Magrathea Root CA
  become: true

- name: Alice's browsers only, creating her Chromium database if needed, and Firefox's policy
  magrathea.secure.browser_trust:
    src: /home/certificate/mag-root-ca.crt
    users: [alice]
    create_chromium_db: true
    firefox_policy: true
  become: true

- name: A database of a kiosk application
  magrathea.secure.browser_trust:
    content: "{{ magrathea_root_pem }}"
    nssdbs:
      - /srv/kiosk/.pki/nssdb
'''

RETURN = r'''
certificates:
  description: The certificates of the input (subject, sha256, sha1, not_after).
  returned: always
  type: list
  elements: dict
results:
  description: One result per NSS database (and one for the Firefox policy when O(firefox_policy=true)).
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The database directory (or the policy file).
      type: str
      sample: /home/alice/.pki/nssdb
    kind:
      description: V(nss) or V(firefox_policy).
      type: str
    database:
      description: The database as certutil names it.
      type: str
      sample: sql:/home/alice/.pki/nssdb
    source:
      description: >-
        Where it was found (V(chromium), V(chromium-snap), V(chromium-flatpak), V(firefox), V(firefox-xdg), V(firefox-snap),
        V(firefox-flatpak), V(system), V(given)).
      type: str
    owner:
      description: The user the database belongs to (and is written as).
      type: str
    status:
      description: V(present), V(absent), V(conflict) or V(failed).
      type: str
    changed:
      description: Whether this database changed.
      type: bool
    changes:
      description: What was (or in check mode would be) done; C(action) is create, add, trust or delete, C(entry) the nickname.
      type: list
      elements: dict
    cause:
      description: >-
        The NSS error (V(SEC_ERROR_READ_ONLY), V(SEC_ERROR_BAD_DATABASE), ...) or V(in_use), V(tool_missing), V(not_a_database),
        V(permission), V(conflict).
      type: str
      returned: on failure
    msg:
      description: What went wrong with this database and what to do.
      type: str
      returned: on failure
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import trust_input_argument_spec, trust_input_from_module
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import TrustStoreError, run_trust_module
from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_firefox, _truststore_nss


def main():
    argument_spec = trust_input_argument_spec()
    argument_spec.update(
        nickname=dict(type='str'),
        users=dict(type='list', elements='str'),
        nssdbs=dict(type='list', elements='path'),
        create_chromium_db=dict(type='bool', default=False),
        firefox_policy=dict(type='bool', default=False),
        firefox_policy_file=dict(type='path', default=_truststore_firefox.FIREFOX_POLICY_FILE),
        replace=dict(type='bool', default=False),
        certutil=dict(type='path'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_one_of=[('src', 'content')], mutually_exclusive=[('src', 'content')])
    params = module.params
    anchors, names = trust_input_from_module(module, 'nickname', 'nickname')
    try:
        stores = _truststore_nss.discover(users=params['users'], nssdbs=params['nssdbs'], create_chromium_db=params['create_chromium_db'],
                                          certutil=params['certutil'], check_mode=module.check_mode)
    except TrustStoreError as exc:
        module.fail_json(msg=str(exc))
    if params['firefox_policy']:
        stores.append(_truststore_firefox.FirefoxPolicy(params['firefox_policy_file'], check_mode=module.check_mode))
    run_trust_module(module, stores, anchors, names, 'NSS databases')


if __name__ == '__main__':
    main()
