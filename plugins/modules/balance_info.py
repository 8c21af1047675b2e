#!/usr/bin/python
# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: balance_info
short_description: Read a Magrathea account balance over the REST API and check it against a threshold
version_added: 0.1.0
description:
  - Reads the funds and promotional funds of a Magrathea account with C(GET account/balance/{account}) over HTTPS,
    with HTTP Basic authentication.
  - Money is handled as decimal numbers, never as floating point; the server may send amounts as JSON strings or numbers.
  - With O(min_funds), fails (or warns, see O(on_low_funds)) when the balance is below the threshold, naming both.
  - The client only ever calls an allow-list of read-only REST paths (the REST API also has a GET that moves money),
    so the module never changes anything, reports RV(ignore:changed=false) and runs in check mode.
  - Answers 500, 502, 503 and 504, timeouts and lost connections are retried a bounded number of times (O(retries)).
    A refused login (HTTP 401) is never retried.
  - The certificate is verified against O(ca_path) or the operating system's trust store (not the CA bundle
    that the Python C(requests) library ships), so a Magrathea root installed with M(magrathea.secure.ca_trust) or the
    C(magrathea.secure.trust) role is trusted.
author:
  - magrathea.secure contributors (@magrathea-secure)
requirements:
  - requests (Python library) on the host that runs the module
extends_documentation_fragment:
  - magrathea.secure.connection
  - magrathea.secure.connection.rest
  - magrathea.secure.attributes
  - magrathea.secure.attributes.actiongroup_magrathea
  - magrathea.secure.attributes.info_module
options:
  url:
    description:
      - Base URL of the REST API, ending in the API version (V(/v1/)).
      - Must use C(https://) and must not hold credentials.
      - The certificate must be valid for its host name unless O(validate_certs=false).
      - Falls back to the environment variable E(MAGRATHEA_REST_URL).
    type: str
    default: https://restapi.magrathea.net:8443/v1/
  fingerprint:
    description:
      - Pin the server certificate to this SHA-1 or SHA-256 fingerprint (hex, colons optional, any case).
      - Checked right after the TLS handshake and before the request and its credentials are sent;
        on a mismatch nothing is sent and the task fails naming both fingerprints.
      - With a pin, the certificate must be exactly the pinned one and chain to a trusted CA; its host name is not checked again.
  retries:
    description:
      - How many times to retry after a timeout, a lost connection or an HTTP 500, 502, 503 or 504 answer,
        waiting 0.5, 1, 2... seconds (or what C(Retry-After) asks, up to 10 seconds) in between.
      - V(0) makes a single attempt.
    type: int
    default: 2
  account:
    description:
      - The Magrathea account whose balance is read.
      - Falls back to E(MAGRATHEA_ACCOUNT).
    type: str
    required: true
  min_funds:
    description:
      - Threshold below which the funds are too low, as a decimal number (for example V('50.00')).
      - A string or a number; quote it in YAML to keep it exact.
      - When not set, the balance is only read.
    type: raw
  include_promofunds:
    description:
      - Compare funds plus promotional funds with O(min_funds), instead of the funds alone.
    type: bool
    default: false
  on_low_funds:
    description:
      - What to do when the balance is below O(min_funds).
      - V(fail) fails the task with a message giving the balance and the threshold.
      - V(warn) only warns with the same message and sets RV(low_funds=true).
    type: str
    choices: [fail, warn]
    default: fail
notes:
  - Proxy settings and C(REQUESTS_CA_BUNDLE) from the environment are ignored on purpose; trust comes only from
    O(ca_path) or the system store.
  - Magrathea forbids large numbers of requests; run the check once per play, not in a loop.
'''

EXAMPLES = r'''
- name: Read the balance (connection settings from MAGRATHEA_REST_* and MAGRATHEA_ACCOUNT)
  magrathea.secure.balance_info:
  register: magrathea_balance

- name: Show it
  ansible.builtin.debug:
    msg: "{{ magrathea_balance.balance.funds }} (promotional {{ magrathea_balance.balance.promofunds }})"

- name: Fail the play when the account has less than 50.00
  magrathea.secure.balance_info:
    url: https://restapi.magrathea.net:8443/v1/
    username: "{{ magrathea_rest_username }}"
    password: "{{ magrathea_rest_password }}"
    account: MAG012345
    ca_path: /usr/local/share/ca-certificates/magrathea-root-ca.crt
    min_funds: '50.00'

- name: Only warn, counting promotional funds too
  magrathea.secure.balance_info:
    account: MAG012345
    min_funds: '20'
    include_promofunds: true
    on_low_funds: warn
  register: magrathea_balance

- name: Raise a ticket when the balance is low
  ansible.builtin.debug:
    msg: "Top up {{ magrathea_balance.balance.account }}: {{ magrathea_balance.balance.funds }} left"
  when: magrathea_balance.low_funds
'''

RETURN = r'''
balance:
  description: The balance of the account. Amounts are given as exact decimal strings and, for templates, as numbers.
  returned: success
  type: dict
  contains:
    account:
      description: The account name.
      type: str
      sample: MAG012345
    funds:
      description: Funds, as an exact decimal string.
      type: str
      sample: '125.50'
    funds_number:
      description: Funds as a number (an integer when whole); use RV(balance.funds) for exact arithmetic.
      type: float
      sample: 125.5
    promofunds:
      description: Promotional funds, as an exact decimal string (V('0') when the server does not send them).
      type: str
      sample: '10.00'
    promofunds_number:
      description: Promotional funds as a number.
      type: float
      sample: 10.0
    total:
      description: Funds plus promotional funds, as an exact decimal string.
      type: str
      sample: '135.50'
    total_number:
      description: Funds plus promotional funds as a number.
      type: float
      sample: 135.5
min_funds:
  description: The threshold the balance was compared with, as a decimal string.
  returned: when O(min_funds) is set
  type: str
  sample: '50.00'
low_funds:
  description: Whether the balance is below O(min_funds) (always V(false) when O(min_funds) is not set).
  returned: success
  type: bool
  sample: false
url:
  description: The base URL that was used.
  returned: success
  type: str
  sample: https://restapi.magrathea.net:8443/v1/
'''

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.magrathea.secure.plugins.module_utils._rest import (
    ACCOUNT_ENV,
    HAS_REQUESTS,
    REQUESTS_IMPORT_ERROR,
    LowFunds,
    client_from_module,
    money_text,
    parse_threshold,
    rest_argument_spec,
)
from ansible_collections.magrathea.secure.plugins.module_utils._tls import MagratheaError


def main():
    argument_spec = rest_argument_spec()
    argument_spec.update(
        account=dict(type='str', required=True, fallback=(env_fallback, [ACCOUNT_ENV])),
        min_funds=dict(type='raw'),
        include_promofunds=dict(type='bool', default=False),
        on_low_funds=dict(type='str', choices=['fail', 'warn'], default='fail'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib('requests'), exception=REQUESTS_IMPORT_ERROR)

    try:
        min_funds = parse_threshold(module.params['min_funds'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    client = client_from_module(module)
    try:
        with client:
            balance = client.balance(module.params['account'])
    except MagratheaError as exc:
        module.fail_json(msg=str(exc))

    check = LowFunds(balance, min_funds, include_promofunds=module.params['include_promofunds'])
    result = dict(changed=False, balance=balance.as_dict(), low_funds=check.low, url=client.url)
    if min_funds is not None:
        result['min_funds'] = money_text(min_funds)
    if check.low:
        if module.params['on_low_funds'] == 'fail':
            module.fail_json(msg=check.message(), **result)
        module.warn(check.message())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
