#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: java_trust
short_description: Trust a CA certificate in Java keystores
version_added: 0.1.0
description:
  - Imports a CA certificate (normally the Magrathea root CA) as a trusted certificate into the C(cacerts) of every JDK
    found on the host (E(JAVA_HOME), C(/usr/lib/jvm/*), C(/usr/lib64/jvm/*), C(/usr/java/*) and the C(java) alternative),
    or into the O(keystores) given; or removes it.
  - Reads JKS and PKCS12 keystores itself, so a run with nothing to do starts no JVM; C(keytool) runs only to write,
    with the store password in its environment, never on its command line.
  - Presence is decided by the certificate's SHA-256. The same certificate under another alias is present; another
    certificate under O(alias) is a conflict that is reported and not overwritten unless O(replace=true).
  - Stores that the operating system regenerates from its own trust store (Debian's C(/etc/ssl/certs/java/cacerts),
    the RHEL family's C(/etc/pki/ca-trust/extracted/java/cacerts), SUSE's and Arch's) are reported with status
    V(managed) and left alone, because a keytool import there is lost at the next refresh; install and remove the
    certificate with M(magrathea.secure.ca_trust) and they follow (on Debian, M(magrathea.secure.ca_trust) deletes it
    from C(/etc/ssl/certs/java/cacerts) itself, since the system's hook only adds). With O(state=absent), a managed
    store that still trusts the certificate is reported with RV(results[].trusted=true) and a warning.
  - On removal (V(absent)) every alias holding the certificate (found by SHA-256) is deleted from every keystore it
    manages, and each keystore is read again to check that it is gone. A keystore it created stays, empty or not.
  - The owner, group, mode and SELinux context of the O(keystores) are set when given (as M(community.general.java_cert)
    does); a keystore created with O(create=true) is otherwise written by C(keytool) with the task's user and umask.
    They never apply to the discovered JDK stores.
author:
  - magrathea.secure contributors (@magrathea-secure)
extends_documentation_fragment:
  - magrathea.secure.trust
  - magrathea.secure.attributes
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows, per keystore, the aliases holding the certificate with its subject and SHA-256.
options:
  alias:
    description:
      - Alias of the trusted-certificate entry.
      - No control character, line break or leading C(-) (which keytool would read as an option), at most 200 characters;
        refused before anything is written.
      - Defaults to the certificate's common name in lower case with dashes; for a bundle each certificate gets
        C(<alias>-<first 8 hex digits of its SHA-256>).
    type: str
  keystores:
    description:
      - Keystore files to manage instead of the discovered JDK stores (JKS or PKCS12, recognised by their content).
    type: list
    elements: path
  keystore_password:
    description:
      - Password of the keystores. Never logged and never put on a command line.
      - Password-less PKCS12 stores (JDK 18 and newer C(cacerts)) are read whatever it is.
    type: str
    default: changeit
  create:
    description:
      - Create a keystore of O(keystores) that does not exist yet, of type O(keystore_type).
    type: bool
    default: false
  keystore_type:
    description:
      - Type of a keystore created with O(create=true). Existing keystores keep their type.
    type: str
    choices: [pkcs12, jks]
    default: pkcs12
  replace:
    description:
      - Replace another certificate found under O(alias). Without it that is reported as a conflict and nothing is written.
    type: bool
    default: false
  keytool:
    description:
      - Path of the keytool to use for writes.
      - Defaults to the keytool of the JDK that owns the store, then E(JAVA_HOME), E(PATH) and C(/usr/lib/jvm/*/bin/keytool).
    type: path
requirements:
  - A JDK or JRE (keytool) on the managed host, needed only when a keystore must change
  - For PKCS12 keystores, the Python C(cryptography) library on the managed host avoids starting keytool to read them
seealso:
  - module: magrathea.secure.ca_trust
  - module: magrathea.secure.trust_check
  - module: community.general.java_cert
'''

EXAMPLES = r'''
- name: Trust the Magrathea root CA in every JDK on the host
  magrathea.secure.java_trust:
    src: /home/certificate/mag-root-ca.crt
    fingerprint: "{{ magrathea_root_sha256 }}"
    alias: magrathea-root-ca
  become: true

- name: Build an application trust store holding only the Magrathea root
  magrathea.secure.java_trust:
    src: /home/certificate/mag-root-ca.crt
    keystores:
      - /opt/app/conf/truststore.p12
    keystore_password: "{{ app_truststore_password }}"
    create: true

- name: Remove it from every JDK
  magrathea.secure.java_trust:
    src: /home/certificate/mag-root-ca.crt
    state: absent
  become: true
'''

RETURN = r'''
certificates:
  description: The certificates of the input (subject, sha256, sha1, not_after).
  returned: always
  type: list
  elements: dict
results:
  description: One result per keystore file (several JDKs sharing one file give one result).
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The keystore file (for a discovered JDK, its real path).
      type: str
      sample: /usr/lib/jvm/temurin-25-jdk-amd64/lib/security/cacerts
    kind:
      description: V(java).
      type: str
    type:
      description: V(JKS) or V(PKCS12).
      type: str
    jdks:
      description: The JDK homes that use this keystore.
      type: list
      elements: str
    status:
      description: V(present), V(absent), V(managed) (left to M(magrathea.secure.ca_trust)), V(conflict) or V(failed).
      type: str
    managed_by:
      description: The module that manages this store.
      type: str
      returned: when status is managed
      sample: magrathea.secure.ca_trust
    trusted:
      description: Whether a managed store still trusts the certificate after O(state=absent) (it is V(false) with V(present)).
      type: bool
      returned: when status is managed
    changed:
      description: Whether this keystore changed.
      type: bool
    changes:
      description:
        - What was (or in check mode would be) done; C(action) is add or delete, C(entry) the alias.
        - C(action=attributes) when the owner, group, mode or SELinux context of a keystore of O(keystores) changed.
      type: list
      elements: dict
    cause:
      description: Short cause of a failure (V(wrong_password), V(tool_missing), V(conflict), V(keytool_failed), V(permission), ...).
      type: str
      returned: on failure
    msg:
      description: What went wrong and what to do, or why a store is managed elsewhere.
      type: str
      returned: on failure or when status is managed
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import trust_input_argument_spec, trust_input_from_module
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import run_trust_module
from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_java


def keystore_attributes(module):
    """After the stores: give the keystores of the keystores option the task's owner, group, mode and SELinux context."""
    def finish(results, diff):
        changed = False
        for row in results:
            path = row['path']
            if path not in (module.params['keystores'] or []) or row['status'] in ('failed', 'conflict') or not os.path.exists(path):
                continue  # in check mode a keystore still to be created does not exist yet
            attributes = dict(before=dict(path=path), after=dict(path=path))
            if module.set_fs_attributes_if_different(module.load_file_common_arguments(module.params, path=path), False, diff=attributes):
                changed = True
                row.update(changed=True, changes=row['changes'] + [dict(action='attributes', entry=path)])
                for side in ('before', 'after'):
                    diff[side].setdefault('files', {})[path] = attributes[side]
        return changed
    return finish


def main():
    argument_spec = trust_input_argument_spec()
    argument_spec.update(
        alias=dict(type='str'),
        keystores=dict(type='list', elements='path', no_log=False),
        keystore_password=dict(type='str', default='changeit', no_log=True),
        create=dict(type='bool', default=False),
        keystore_type=dict(type='str', default='pkcs12', choices=['pkcs12', 'jks']),
        replace=dict(type='bool', default=False),
        keytool=dict(type='path'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, add_file_common_args=True,
                           required_one_of=[('src', 'content')], mutually_exclusive=[('src', 'content')])
    params = module.params
    anchors, names = trust_input_from_module(module, 'alias', 'alias')
    stores = _truststore_java.discover(
        keystores=params['keystores'], password=params['keystore_password'], keytool=params['keytool'],
        create_type=params['keystore_type'].upper() if params['create'] else None, check_mode=module.check_mode,
        java_home=os.environ.get('JAVA_HOME'))
    run_trust_module(module, stores, anchors, names, 'Java keystores', finish=keystore_attributes(module))


if __name__ == '__main__':
    main()
