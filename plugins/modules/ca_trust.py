#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: ca_trust
short_description: Trust a CA certificate in the operating system store
version_added: 0.1.0
description:
  - Installs a CA certificate (normally the Magrathea root CA) as an anchor of the operating system's trust store,
    or removes it, and rebuilds the extracted bundle so that curl, OpenSSL, Python and every other client of the
    system store trust it (or no longer do).
  - "Knows the families and their anchor directories: Debian and Ubuntu (C(/usr/local/share/ca-certificates/*.crt),
    C(update-ca-certificates)), the RHEL family (C(/etc/pki/ca-trust/source/anchors/*.pem), C(update-ca-trust extract)),
    SUSE (C(/etc/pki/trust/anchors/*.pem), C(update-ca-certificates)), Alpine (C(/usr/local/share/ca-certificates/*.crt),
    C(update-ca-certificates)) and Arch (C(/etc/ca-certificates/trust-source/anchors/*.crt), C(trust extract-compat)).
    The refresh tools are called by absolute path."
  - The certificate counts as present when the extracted bundle holds it, whichever anchor file (or the distribution's
    CA set) put it there.
  - "On removal (V(absent)) it deletes every anchor file that holds the certificate (found by SHA-256, whatever its name),
    rebuilds the bundle (Debian and Ubuntu with C(update-ca-certificates --fresh)) and checks that the bundle no longer
    holds it. A certificate that comes from the distribution's CA set is reported (cause V(distribution_ca)), not
    disabled. A file that holds other certificates too is reported (cause V(shared_file)) and left alone."
  - Java stores that the system regenerates from this store (Debian's C(/etc/ssl/certs/java/cacerts), the RHEL family's
    extracted Java store) follow it, and M(magrathea.secure.java_trust) leaves them to this module. Debian's
    C(ca-certificates-java) hook only ever adds certificates, so on Debian and Ubuntu V(absent) also deletes every
    entry holding the certificate from C(/etc/ssl/certs/java/cacerts) itself (found by SHA-256, not by alias, with
    C(keytool) and the password of C(/etc/default/cacerts)) and checks it is gone; the other families' refresh
    rebuilds their Java store without it.
  - For Windows hosts use M(ansible.windows.win_certificate_store) with C(store_name=Root)
    (its default V(My) is the personal store, a common mistake); the C(magrathea.secure.trust) role does that.
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
    details: The diff shows the anchor files with the subject and SHA-256 of the certificate each holds.
options:
  name:
    description:
      - Base name of the anchor file, without directory or extension (the family's extension is added).
      - Letters, digits, dots, dashes, underscores and plus signs, starting with a letter or digit, at most 200 characters;
        anything else (a line break, a C(/)) is refused before anything is written.
      - Defaults to the certificate's common name in lower case with dashes (C(Magrathea Root CA) becomes C(magrathea-root-ca)).
      - For a bundle each certificate gets its own file, C(<name>-<first 8 hex digits of its SHA-256>).
    type: str
  replace:
    description:
      - Replace another certificate found in the anchor file O(name). Without it that is reported as a conflict and nothing is written.
    type: bool
    default: false
requirements:
  - The family's CA tools (package C(ca-certificates); C(p11-kit) on Arch)
  - On Debian and Ubuntu with C(ca-certificates-java), a JDK's C(keytool) to remove a certificate from its Java store
  - Root privileges (use become)
seealso:
  - module: magrathea.secure.java_trust
  - module: magrathea.secure.browser_trust
  - module: magrathea.secure.trust_check
'''

EXAMPLES = r'''
- name: Trust the Magrathea root CA system-wide
  magrathea.secure.ca_trust:
    src: /home/certificate/mag-root-ca.crt
    fingerprint: "{{ magrathea_root_sha256 }}"
    name: magrathea-root-ca
  become: true

- name: Trust a root given as PEM text
  magrathea.secure.ca_trust:
    content: "{{ lookup('ansible.builtin.file', 'files/mag-root-ca.pem') }}"
  become: true

- name: Stop trusting it
  magrathea.secure.ca_trust:
    src: /home/certificate/mag-root-ca.crt
    state: absent
  become: true
'''

RETURN = r'''
certificates:
  description: The certificates of the input (a bundle gives several).
  returned: always
  type: list
  elements: dict
  contains:
    subject:
      description: Subject in RFC 4514 form.
      type: str
      sample: CN=Magrathea Root CA,O=Magrathea
    sha256:
      description: SHA-256 fingerprint of the DER certificate, colon hex.
      type: str
    sha1:
      description: SHA-1 fingerprint, colon hex.
      type: str
    not_after:
      description: End of validity (UTC, ISO 8601).
      type: str
      sample: "2035-01-01T00:00:00Z"
results:
  description: One result for the system store.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The anchor directory.
      type: str
      sample: /usr/local/share/ca-certificates
    kind:
      description: V(system).
      type: str
    family:
      description: The detected family (debian, redhat, suse, alpine, arch).
      type: str
    bundle:
      description: The extracted bundle that decides what is trusted.
      type: str
      sample: /etc/ssl/certs/ca-certificates.crt
    status:
      description: V(present), V(absent), V(conflict) or V(failed).
      type: str
    changed:
      description: Whether this store changed.
      type: bool
    changes:
      description:
        - What was (or in check mode would be) done; C(action) is add, delete, trust or refresh.
        - A deletion from the Java store the system generates names the keystore and the alias, for example
          C(/etc/ssl/certs/java/cacerts (debian:magrathea-root-ca.pem)).
      type: list
      elements: dict
    cause:
      description: Short cause of a failure (for example V(tool_missing), V(conflict), V(distribution_ca), V(permission)).
      type: str
      returned: on failure
    msg:
      description: What went wrong and what to do.
      type: str
      returned: on failure
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import trust_input_argument_spec, trust_input_from_module
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import TrustStoreError, run_trust_module
from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_os


def main():
    argument_spec = trust_input_argument_spec()
    argument_spec.update(
        name=dict(type='str'),
        replace=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_one_of=[('src', 'content')], mutually_exclusive=[('src', 'content')])
    anchors, names = trust_input_from_module(module, 'name', 'file')
    try:
        stores = _truststore_os.discover(check_mode=module.check_mode)
    except TrustStoreError as exc:
        module.fail_json(msg=str(exc))
    run_trust_module(module, stores, anchors, names, 'system stores')


if __name__ == '__main__':
    main()
