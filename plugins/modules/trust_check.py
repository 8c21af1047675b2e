#!/usr/bin/python
# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: trust_check
short_description: Check that every trust store of a host trusts the Magrathea endpoints
version_added: 0.1.0
description:
  - Connects to each endpoint and reports, per trust store of the managed host, whether the server's certificate chain
    verifies (host name included) with only that store's CA certificates (the system bundle, each Java keystore and each
    NSS database). Also reports whether the server certificate matches a pinned fingerprint.
  - Protocols are V(tls) (TLS from the first byte, like NTSAPI), V(ftps) (explicit FTPS; the module sends C(AUTH TLS) first)
    and V(https) (TLS, then a C(GET) of the URL's path without credentials, to report the HTTP status).
  - Fails when a required store (O(required)) does not trust an endpoint, when an endpoint cannot be reached, or when a
    pinned fingerprint does not match. This is what CI jobs run after installing a certificate with
    M(magrathea.secure.ca_trust), M(magrathea.secure.java_trust) and M(magrathea.secure.browser_trust).
  - Sends nothing but C(AUTH TLS), C(QUIT) or a C(GET) without credentials.
author:
  - magrathea.secure contributors (@magrathea-secure)
extends_documentation_fragment:
  - magrathea.secure.attributes
  - magrathea.secure.attributes.INFO_MODULE
options:
  endpoints:
    description:
      - The endpoints to check.
    type: list
    elements: dict
    required: true
    suboptions:
      host:
        description: Host name; the certificate must be valid for it. Required unless O(endpoints[].url) is given.
        type: str
      port:
        description: TCP port. Defaults to 21 for V(ftps) and 443 for V(https).
        type: int
      protocol:
        description: How to reach TLS on the port.
        type: str
        choices: [tls, ftps, https]
        default: tls
      url:
        description:
          - An C(https://) URL; sets host, port and V(https) at once, and the path of the C(GET) whose status is reported.
          - A URL holding credentials, a query or a fragment is refused.
        type: str
      fingerprint:
        description: SHA-1 or SHA-256 fingerprint (hex, colons optional) the server certificate must have.
        type: str
      name:
        description: Label for the results (defaults to C(host:port), or the URL).
        type: str
  stores:
    description:
      - Kinds of stores to check. V(system) is the extracted bundle of the operating system store, V(java) every
        discovered JDK keystore (or O(keystores)), V(nss) every discovered NSS database (or O(users)/O(nssdbs)).
    type: list
    elements: str
    choices: [system, java, nss]
    default: [system, java, nss]
  keystores:
    description: Java keystores to check instead of the discovered JDK stores.
    type: list
    elements: path
  keystore_password:
    description: Password of the Java keystores. Never logged.
    type: str
    default: changeit
  users:
    description: Users whose NSS databases to check; by default every local user's and C(/etc/pki/nssdb).
    type: list
    elements: str
  nssdbs:
    description: NSS database directories to check instead of (or in addition to those of O(users)) the discovered ones.
    type: list
    elements: path
  required:
    description:
      - Stores that must trust every endpoint. V(all) means every checked store; V(system), V(java) and V(nss) mean every
        store of that kind; any other value is a store path.
      - Use V([]) to only report.
    type: list
    elements: str
    default: [all]
  timeout:
    description: Seconds to wait for each connection and answer.
    type: float
    default: 10
requirements:
  - C(certutil) is needed only to read legacy (C(cert8.db)) NSS databases.
seealso:
  - module: magrathea.secure.ca_trust
  - module: magrathea.secure.java_trust
  - module: magrathea.secure.browser_trust
'''

EXAMPLES = r'''
- name: Check that every store trusts the Magrathea services
  magrathea.secure.trust_check:
    endpoints:
      - host: secure.magrathea-telecom.co.uk
        port: 777
      - host: cdr.magrathea-telecom.co.uk
        port: 21
        protocol: ftps
        fingerprint: "65:c6:5c:b2:88:23:6d:a7:74:77:00:55:c3:51:8f:20:e0:36:29:d1"
      - url: https://restapi.magrathea.net:8443/v1/

- name: Only the system store and one application keystore must trust the NTSAPI
  magrathea.secure.trust_check:
    endpoints:
      - host: secure.magrathea-telecom.co.uk
        port: 777
    stores: [system, java]
    keystores: [/opt/app/conf/truststore.p12]
    keystore_password: "{{ app_truststore_password }}"
  register: trust

- name: Report only, never fail
  magrathea.secure.trust_check:
    endpoints: "{{ magrathea_endpoints }}"
    required: []
'''

RETURN = r'''
endpoints:
  description: One entry per endpoint.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The endpoint's label.
      type: str
    endpoint:
      description: host:port.
      type: str
    protocol:
      description: tls, ftps or https.
      type: str
    sha256:
      description: SHA-256 fingerprint of the server certificate.
      type: str
    sha1:
      description: SHA-1 fingerprint of the server certificate.
      type: str
    http_status:
      description: HTTP status of the C(GET) (V(https) only).
      type: int
      returned: for https endpoints that answered
    fingerprint_matches:
      description: Whether the server certificate matches the pinned fingerprint; null when none was pinned.
      type: bool
    error:
      description: Why the endpoint could not be reached, or the pin mismatch.
      type: str
      returned: on a problem
results:
  description: One entry per endpoint and store.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The endpoint's label.
      type: str
    endpoint:
      description: host:port.
      type: str
    store:
      description: The store (bundle file, keystore or NSS database directory).
      type: str
      sample: /etc/ssl/certs/ca-certificates.crt
    kind:
      description: system, java or nss.
      type: str
    trusted:
      description: Whether the chain verified with only this store's CA certificates.
      type: bool
    required:
      description: Whether this store is required to trust.
      type: bool
    error:
      description: Why it did not verify.
      type: str
      returned: when not trusted
untrusted:
  description: The entries of RV(results) that are required and not trusted.
  returned: always
  type: list
  elements: dict
problems:
  description:
    - Every problem once, the rows of RV(table) - an endpoint that cannot be reached or does not match its pin
      (from RV(endpoints), without C(store)), and each required store that does not trust a reachable endpoint (from RV(results)).
  returned: always
  type: list
  elements: dict
table:
  description: A plain-text table of RV(problems).
  returned: always
  type: str
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.magrathea.secure.plugins.module_utils._trust_check import Target, check, table
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import TrustStoreError
from ansible_collections.magrathea.secure.plugins.module_utils import _truststore_java, _truststore_nss, _truststore_os


def discover_stores(params):
    """The stores to check, in a fixed order: system, Java, NSS."""
    stores = []
    if 'system' in params['stores']:
        stores.extend(_truststore_os.discover())
    if 'java' in params['stores']:
        stores.extend(_truststore_java.discover(keystores=params['keystores'], password=params['keystore_password'],
                                                java_home=os.environ.get('JAVA_HOME')))
    if 'nss' in params['stores']:
        stores.extend(_truststore_nss.discover(users=params['users'], nssdbs=params['nssdbs']))
    return stores


def main():
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(type='list', elements='dict', required=True, options=dict(
                host=dict(type='str'),
                port=dict(type='int'),
                protocol=dict(type='str', default='tls', choices=['tls', 'ftps', 'https']),
                url=dict(type='str'),
                fingerprint=dict(type='str'),
                name=dict(type='str'),
            ), mutually_exclusive=[('url', 'host'), ('url', 'port')], required_one_of=[('url', 'host')]),
            stores=dict(type='list', elements='str', default=['system', 'java', 'nss'], choices=['system', 'java', 'nss']),
            keystores=dict(type='list', elements='path', no_log=False),
            keystore_password=dict(type='str', default='changeit', no_log=True),
            users=dict(type='list', elements='str'),
            nssdbs=dict(type='list', elements='path'),
            required=dict(type='list', elements='str', default=['all']),
            timeout=dict(type='float', default=10.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        targets = [Target.from_option(item) for item in params['endpoints']]
    except ValueError as exc:
        module.fail_json(msg='endpoints: %s' % exc)
    try:
        stores = discover_stores(params)
    except TrustStoreError as exc:
        module.fail_json(msg=str(exc))
    endpoints, results = check(targets, stores, params['required'], params['timeout'])
    untrusted = [row for row in results if row['required'] and not row['trusted']]
    reachable = set(row['name'] for row in endpoints if row.get('sha256'))
    problems = [row for row in endpoints if row.get('error')] + [row for row in untrusted if row['name'] in reachable]
    result = dict(changed=False, endpoints=endpoints, results=results, untrusted=untrusted, problems=problems,
                  table=table(problems) if problems else '')
    if problems:
        module.fail_json(msg='%d problem(s) with %d endpoint(s) and %d store(s):\n%s' % (len(problems), len(endpoints), len(stores), result['table']),
                         **result)
    module.exit_json(msg='%d endpoint(s) trusted by %d required store(s)' % (len(endpoints), len({row['store'] for row in results if row['required']})),
                     **result)


if __name__ == '__main__':
    main()
