#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
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
  - Runs on the Python standard library alone, so the host that runs it needs no third-party Python package.
  - Money is handled as exact decimal numbers, never as floating point, and funds plus promotional funds are added
    exactly; the server may send amounts as JSON strings or numbers.
  - With O(min_funds), fails (or warns, see O(on_low_funds)) when the balance is below the threshold, naming both.
  - The client only ever calls an allow-list of read-only REST paths (the REST API also has a GET that moves money),
    so the module never changes anything, reports RV(ignore:changed=false) and runs in check mode.
  - B(Deadline.) Each attempt (connection, proxy tunnel, TLS handshake, request, headers and body) ends within
    O(timeout) seconds, however slowly the server sends. The whole task ends within
    O(timeout) + O(retries) x (O(timeout) + 10) seconds (110 seconds with the defaults).
  - B(Retries.) Answers 500, 502, 503 and 504, timeouts and lost connections are retried at most O(retries) times
    (never more than 10), waiting 1, 2, 4... seconds in between, or what C(Retry-After) asks, but never less than 1 and
    never more than 10 seconds. A run therefore sends at most O(retries) + 1 requests, and never more than 11.
    A refused login (HTTP 401), HTTP 403 and 404, other errors, certificate and pin failures are never retried.
  - B(Checked before any connection.) The task fails, with a message that names the option and never repeats a
    password, for an O(account) other than 1 to 64 ASCII letters, digits, V(+), V(-) and V(_) (for example one that ends in a line break);
    a O(username) or O(password) with a control character or anything beyond ASCII, or a O(username) holding V(:),
    which HTTP Basic authentication cannot carry; a O(url) that is not C(https://), holds credentials, a query or a fragment;
    a O(timeout) of 0 or less; O(retries) outside 0 to 10; a O(min_funds) that is not a plain decimal number;
    a malformed O(fingerprint) or O(proxy).
  - B(Refused answers.) Amounts that are not plain ASCII decimal numbers (for example V(1_000), digits of other scripts,
    V(NaN) or V(Infinity)), and implausible amounts (more than 12 digits before the decimal point or more than 20
    decimal places), fail the task naming the field. A body of more than 1 MiB, also after gzip or deflate decoding, and a body
    that is not JSON fail it too. Redirects are never followed.
  - The password and its HTTP Basic authentication form never appear in a message, also when the server's answer
    repeats them; what a server says is shortened before it reaches a message.
  - The certificate is verified against O(ca_path) or the operating system's trust store, so a Magrathea root
    installed with M(magrathea.secure.ca_trust) or the C(magrathea.secure.trust) role is trusted.
author:
  - magrathea.secure contributors (@magrathea-secure)
requirements:
  - Python 3.8 or newer on the host that runs the module (the standard library only)
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
      - Must use C(https://) and must not hold credentials (a url that does is refused without being repeated).
      - The certificate must be valid for its host name unless O(validate_certs=false).
      - Falls back to E(MAGRATHEA_REST_URL) (on the controller, then on the managed host).
    type: str
    default: https://restapi.magrathea.net:8443/v1/
  fingerprint:
    description:
      - Pin the server certificate to one of these SHA-1 or SHA-256 fingerprints (hex, colons optional, any case).
      - Give two while Magrathea renews the certificate (the current one and the next one from their notice), so that
        the switch does not break a pinned fleet.
      - Checked right after the TLS handshake and before the request and its credentials are sent;
        on a mismatch nothing is sent and the task fails naming every pin and what the server presented.
      - A pin is checked in addition to the certificate verification and the host-name check, not instead of them;
        with O(validate_certs=false) only the pin is checked.
    type: list
    elements: str
  timeout:
    description:
      - Seconds each attempt may take as a whole (connection, TLS handshake, request, headers and body), and so also the
        longest wait for the next bytes; must be more than 0.
      - The whole task, retries and the waits between them included, ends within O(timeout) + O(retries) x (O(timeout) + 10) seconds.
    type: float
    default: 30
  retries:
    description:
      - How many times to retry after a timeout, a lost connection or an HTTP 500, 502, 503 or 504 answer,
        waiting 1, 2, 4... seconds (or what C(Retry-After) asks, at least 1 and at most 10 seconds) in between.
      - V(0) makes a single attempt; at most V(10).
    type: int
    default: 2
  proxy:
    description:
      - An HTTP proxy to tunnel through (C(CONNECT)), as V(http://host:port) or V(http://user:password@host:port).
      - When not set, C(https_proxy) (or C(HTTPS_PROXY)) of the environment of the host that runs the module is used,
        unless C(no_proxy) (or C(NO_PROXY)) names the REST host, as M(ansible.builtin.get_url) and M(ansible.builtin.uri) do.
      - TLS runs end to end through the tunnel, so the proxy sees neither the request nor the credentials, and the
        certificate and pins are checked on the REST server's certificate.
      - A password in the proxy URL never appears in the task's output.
    type: str
  use_proxy:
    description:
      - Whether to use a proxy at all. V(false) connects directly, whatever O(proxy) and the environment say.
    type: bool
    default: true
  account:
    description:
      - The Magrathea account whose balance is read.
      - Falls back to E(MAGRATHEA_ACCOUNT) (on the controller, then on the managed host).
    type: str
    required: true
  min_funds:
    description:
      - Threshold below which the funds are too low, as a plain decimal number (for example V('50.00')).
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
  - The CA bundles of other HTTP clients named in the environment (C(REQUESTS_CA_BUNDLE), C(CURL_CA_BUNDLE)) are
    ignored; trust comes only from O(ca_path) or the system store.
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

- name: Through the company's HTTP proxy (https_proxy and no_proxy of the environment are used when proxy is not set)
  magrathea.secure.balance_info:
    account: MAG012345
    proxy: http://proxy.example.com:3128
    fingerprint:
      - "{{ magrathea_rest_sha256_current }}"
      - "{{ magrathea_rest_sha256_next }}"

- name: Raise a ticket when the balance is low
  ansible.builtin.debug:
    msg: "Top up {{ magrathea_balance.balance.account }}: {{ magrathea_balance.balance.funds }} left"
  when: magrathea_balance.low_funds
'''

RETURN = r'''
balance:
  description:
    - The balance of the account. Amounts are given as exact decimal strings and, for templates, as floating-point numbers.
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
      description: Funds as a floating-point number, also when whole; use RV(balance.funds) for exact arithmetic.
      type: float
      sample: 125.5
    promofunds:
      description: Promotional funds, as an exact decimal string (V('0') when the server does not send them).
      type: str
      sample: '10.00'
    promofunds_number:
      description: Promotional funds as a floating-point number, also when whole.
      type: float
      sample: 10.0
    total:
      description: Funds plus promotional funds, as an exact decimal string.
      type: str
      sample: '135.50'
    total_number:
      description: Funds plus promotional funds as a floating-point number, also when whole.
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

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.magrathea.secure.plugins.module_utils._rest import (
    ACCOUNT_ENV,
    LowFunds,
    check_parameter,
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

    # Every option is checked before the one request: the connection options first, so that a password in a url is
    # kept out of every output, failures included.
    client = client_from_module(module)
    try:
        min_funds = parse_threshold(module.params['min_funds'])
        account = check_parameter('account', module.params['account'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    try:
        balance = client.balance(account)
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
