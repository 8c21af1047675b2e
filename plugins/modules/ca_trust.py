#!/usr/bin/python
# Copyright: contributors to magrathea.secure
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
    CA set) put it there. V(absent) deletes every anchor file that holds it, rebuilds the bundle and checks that the
    bundle no longer holds it.
  - Java stores that the system regenerates from this store (Debian's C(/etc/ssl/certs/java/cacerts), the RHEL family's
    extracted Java store) follow it; M(magrathea.secure.java_trust) leaves them to this module.
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
      - Defaults to the certificate's common name in lower case with dashes (C(Magrathea Root CA) becomes C(magrathea-root-ca)).
      - For a bundle each certificate gets its own file, C(<name>-<first 8 hex digits of its SHA-256>).
    type: str
  replace:
    description:
      - Replace another certificate found in the anchor file O(name). Without it that is reported as a conflict and nothing is written.
    type: bool
    default: false
requirements:
  - The family's CA tools (package C(ca-certificates); C(p11-kit) on Arch).
  - Root privileges (use become).
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
      description: What was (or in check mode would be) done; C(action) is add, delete, trust or refresh.
      type: list
      elements: dict
    cause:
      description: Short cause of a failure (for example V(tool_missing), V(conflict), V(distribution_ca)).
      type: str
      returned: on failure
    msg:
      description: What went wrong and what to do.
      type: str
      returned: on failure
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import anchors_from_module, entry_names, trust_input_argument_spec
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
    name = module.params['name']
    if name is not None and (not name or '/' in name or name.startswith('.')):
        module.fail_json(msg='name %r must be a plain file name without directory or leading dot, for example magrathea-root-ca' % name)
    anchors = anchors_from_module(module)
    try:
        stores = _truststore_os.discover(check_mode=module.check_mode)
    except TrustStoreError as exc:
        module.fail_json(msg=str(exc))
    run_trust_module(module, stores, anchors, entry_names(anchors, name), 'system stores')


if __name__ == '__main__':
    main()
