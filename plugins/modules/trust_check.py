#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
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
  - With O(expect=untrusted), after a removal, it fails instead when a required store still trusts an endpoint, or when
    it cannot show that the store refuses it (the endpoint is down, the store cannot be read).
  - Reports the days until each server certificate expires and warns when fewer than O(expiry_warning_days) are left.
  - V(https) endpoints go through the HTTP proxy of E(https_proxy) (unless E(no_proxy) names the host) or O(proxy), as
    M(ansible.builtin.get_url) does; V(tls) (NTSAPI) and V(ftps) (CDR) endpoints always connect directly.
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
        description:
          - SHA-1 or SHA-256 fingerprints (hex, colons optional) the server certificate must match one of.
          - Give the current and the next certificate's when Magrathea announces a renewal, so that the switch breaks nothing.
        type: list
        elements: str
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
  expect:
    description:
      - V(trusted) (the default) checks that every required store trusts every endpoint.
      - V(untrusted) checks the opposite after a removal; every required store must refuse the certificate of every endpoint.
        A store refuses when the chain does not verify with its CA certificates; a store that trusts no CA at all refuses too.
    type: str
    choices: [trusted, untrusted]
    default: trusted
  expiry_warning_days:
    description: Warn when a server certificate expires within this many days.
    type: int
    default: 30
  proxy:
    description:
      - HTTP proxy (C(http://[user:password@]host:port)) for the V(https) endpoints, instead of E(https_proxy) and E(no_proxy).
      - Its credentials are never shown.
    type: str
  use_proxy:
    description: Whether V(https) endpoints may go through a proxy at all; V(false) connects directly whatever the environment says.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each connection and answer.
    type: float
    default: 10
requirements:
  - C(certutil) is needed only to read legacy (C(cert8.db)) NSS databases
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

- name: After removing the root, prove that no store trusts the services any more
  magrathea.secure.trust_check:
    endpoints: "{{ magrathea_endpoints }}"
    expect: untrusted

- name: Pin the REST certificate and its announced successor, through the office proxy
  magrathea.secure.trust_check:
    endpoints:
      - url: https://restapi.magrathea.net:8443/v1/
        fingerprint:
          - "{{ rest_sha256_current }}"
          - "{{ rest_sha256_next }}"
    proxy: http://proxy.example:3128
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
      description: Whether the server certificate matches one of the pinned fingerprints; null when none was pinned.
      type: bool
    not_after:
      description: End of the server certificate's validity (UTC, ISO 8601).
      type: str
      returned: when the endpoint answered
      sample: "2027-03-31T12:00:00Z"
    days_left:
      description: Whole days until the server certificate expires (negative once it has).
      type: int
      returned: when the endpoint answered
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
    protocol:
      description: tls, ftps or https.
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
    refused:
      description:
        - Whether the store refused the server's certificate (the chain did not verify with its CA certificates, or it trusts
          none). V(false) when it trusted it, and when the check could not tell (the endpoint or the store failed).
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
    - Every problem once, the rows of RV(table) - an endpoint that cannot be reached or does not match its pins
      (from RV(endpoints), without C(store)), and each required store that does not trust a reachable endpoint (from RV(results));
      with O(expect=untrusted), each required store that still trusts one, or cannot show that it refuses it.
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

from ansible_collections.magrathea.secure.plugins.module_utils._trust_check import EXPECTATIONS, Target, check, expiry_warnings, problems, table
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import TrustStoreError
from ansible_collections.magrathea.secure.plugins.module_utils._tls import check_timeout, url_secrets
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
                fingerprint=dict(type='list', elements='str'),
                name=dict(type='str'),
            ), mutually_exclusive=[('url', 'host'), ('url', 'port')], required_one_of=[('url', 'host')]),
            stores=dict(type='list', elements='str', default=['system', 'java', 'nss'], choices=['system', 'java', 'nss']),
            keystores=dict(type='list', elements='path', no_log=False),
            keystore_password=dict(type='str', default='changeit', no_log=True),
            users=dict(type='list', elements='str'),
            nssdbs=dict(type='list', elements='path'),
            required=dict(type='list', elements='str', default=['all']),
            expect=dict(type='str', default='trusted', choices=list(EXPECTATIONS)),
            expiry_warning_days=dict(type='int', default=30),
            proxy=dict(type='str'),
            use_proxy=dict(type='bool', default=True),
            timeout=dict(type='float', default=10.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    module.no_log_values.update(url_secrets(params['proxy']))
    for item in params['endpoints']:
        module.no_log_values.update(url_secrets(item.get('url')))
    try:
        check_timeout(params['timeout'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        targets = [Target.from_option(item, params['proxy'], params['use_proxy']) for item in params['endpoints']]
    except ValueError as exc:
        module.fail_json(msg='endpoints: %s' % exc)
    try:
        stores = discover_stores(params)
    except TrustStoreError as exc:
        module.fail_json(msg=str(exc))
    endpoints, results = check(targets, stores, params['required'], params['timeout'])
    for warning in expiry_warnings(endpoints, params['expiry_warning_days']):
        module.warn(warning)
    untrusted = [row for row in results if row['required'] and not row['trusted']]
    found = problems(endpoints, results, params['expect'])
    result = dict(changed=False, endpoints=endpoints, results=results, untrusted=untrusted, problems=found,
                  table=table(found) if found else '')
    if found:
        module.fail_json(msg='%d problem(s) with %d endpoint(s) and %d store(s):\n%s' % (len(found), len(endpoints), len(stores), result['table']),
                         **result)
    module.exit_json(msg='%d endpoint(s) %s by %d required store(s)' % (
        len(endpoints), 'trusted' if params['expect'] == 'trusted' else 'refused', len({row['store'] for row in results if row['required']})),
        **result)


if __name__ == '__main__':
    main()
