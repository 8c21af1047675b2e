#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: ntsapi_number_info
short_description: Read the state of Magrathea numbers over NTSAPI (TLS)
version_added: 0.1.0
description:
  - Reads, over one NTSAPI session inside TLS, the state of one or many telephone numbers with C(STAT)
    (active flag, expiry date, the three targets and their kind), optionally their block (C(BLKINFO)),
    their 999 emergency data (C(INFO <n> 999 STATUS) and C(DATA)) and their features (C(FEAT <n>)).
  - Lists the numbers available for allocation under a prefix with C(ALIST); this allocates nothing.
  - The reads are pipelined (many commands in flight at once), so thousands of numbers take about as long as a
    few round trips. A server that does not keep up is detected and the module carries on one command at a time,
    with a warning.
  - Never changes anything.
  - Every reply must be complete within O(timeout), and the whole session within an hour.
author:
  - magrathea.secure contributors (@magrathea-secure)
extends_documentation_fragment:
  - magrathea.secure.connection
  - magrathea.secure.connection.ntsapi
  - magrathea.secure.attributes
  - magrathea.secure.attributes.actiongroup_magrathea
  - magrathea.secure.attributes.info_module
options:
  numbers:
    description:
      - Numbers to read, in UK national format (V(01792100001), 10 or 11 digits), P instead of the leading 0 for a number
        ported in (V(P1792100001)), or V(+) international form. Spaces are ignored and V(+44) becomes V(0).
      - Quote every number in YAML. Unquoted, V(02012300002) is read as the octal integer 271155202; the module recognises
        such an integer and says which number it was.
      - A number this account does not hold is returned with RV(numbers[].state=unallocated), not as an error.
      - At least one of O(numbers) and O(prefix) is required.
    type: list
    elements: str
    aliases: [number]
  prefix:
    description:
      - List numbers available for allocation that start with this prefix (C(ALIST)), for example V(01792) (quote it in YAML).
        V(_) matches any one digit.
    type: str
  quantity:
    description:
      - How many available numbers to list under O(prefix), 1 to 1000.
    type: int
    default: 10
  block:
    description:
      - Also read which block each number belongs to (C(BLKINFO)).
    type: bool
    default: false
  emergency:
    description:
      - Also read each number's 999 emergency record and its status (C(INFO <n> 999 DATA) and C(STATUS)).
    type: bool
    default: false
  features:
    description:
      - Also read each number's enabled features (C(FEAT <n>) without a letter).
    type: bool
    default: false
  pipeline_depth:
    description:
      - How many read-only commands may be in flight at once. V(1) sends one command and waits for its reply
        before the next (lock-step). At most 1024.
    type: int
    default: 128
seealso:
  - module: magrathea.secure.ntsapi_number
  - module: magrathea.secure.ntsapi_command
'''

EXAMPLES = r'''
- name: Read three numbers (connection settings from MAGRATHEA_NTSAPI_* and MAGRATHEA_CA_FILE)
  magrathea.secure.ntsapi_number_info:
    numbers:
      - "01792100001"
      - "01792100002"
      - "P1632960001"
  register: numbers

- name: Show the targets of the first one
  ansible.builtin.debug:
    msg: "{{ numbers.numbers[0].targets | map(attribute='value') | list }}"

- name: Read every number of a range in one session, with the 999 data
  magrathea.secure.ntsapi_number_info:
    numbers: "{{ range(1792100000, 1792100200) | map('string') | map('regex_replace', '^', '0') | list }}"
    emergency: true
    ca_path: /home/certificate/mag-root-ca.crt
  register: range_state

- name: Which numbers under 01792 could be allocated
  magrathea.secure.ntsapi_number_info:
    prefix: "01792"
    quantity: 5
  register: free
'''

RETURN = r'''
numbers:
  description: One entry per requested number, in the order given (duplicates removed).
  returned: when O(numbers) is given
  type: list
  elements: dict
  contains:
    number:
      description: The number as sent to NTSAPI.
      type: str
      sample: "01792100001"
    state:
      description:
        - V(active) when this account holds the number and it is active, V(inactive) when it was deactivated and can still be reactivated,
          V(unallocated) when STAT refused it (not held by this account).
      type: str
      sample: active
    active:
      description: The STAT active flag (C(Y)).
      type: bool
    expiry:
      description: Expiry date (YYYY-MM-DD), null when unallocated.
      type: str
      sample: "2026-11-27"
    targets:
      description: The non-empty target slots. An IAX2 secret is shown as C(********).
      type: list
      elements: dict
      contains:
        index:
          description: Slot 1, 2 or 3.
          type: int
        value:
          description: The target as NTSAPI holds it (an IAX2 secret masked).
          type: str
          sample: "S:441792100001@sip.example.com"
        kind:
          description: V(sip), V(sip-inband), V(tls), V(iax2), V(fax2email), V(voice2email), V(divert) or V(unknown).
          type: str
          sample: sip
    message:
      description: The STAT refusal text, when unallocated.
      type: str
      returned: when RV(numbers[].state=unallocated)
    block:
      description: The block holding the number (C(first), C(quantity)), null when it is in none.
      type: dict
      returned: when O(block=true)
    emergency:
      description: 999 record fields (lower-case names such as C(name), C(postcode)), null when there is none.
      type: dict
      returned: when O(emergency=true)
    emergency_status:
      description: 999 status C(code) and C(text) (0 Accepted, 1 Info received, 3 Info submitted, 8 Rejected, 9 No record found...).
      type: dict
      returned: when O(emergency=true)
    features:
      description: Enabled feature letters, null when they cannot be read.
      type: list
      elements: str
      returned: when O(features=true)
available:
  description: Numbers available for allocation under O(prefix) (empty when none is).
  returned: when O(prefix) is given
  type: list
  elements: str
  sample: ["01792100123", "01792100456"]
available_message:
  description: The final line of the ALIST reply, for example C(End of list) or C(No range found for allocation).
  returned: when O(prefix) is given
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_grammar import check_prefix, normalize_numbers
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_module import (
    ntsapi_argument_spec,
    refuse_before_sending,
    run_module_session,
)
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_reads import available_numbers, read_numbers


def main():
    module = AnsibleModule(
        argument_spec=ntsapi_argument_spec(
            numbers=dict(type='list', elements='str', aliases=['number']),
            prefix=dict(type='str'),
            quantity=dict(type='int', default=10),
            block=dict(type='bool', default=False),
            emergency=dict(type='bool', default=False),
            features=dict(type='bool', default=False),
        ),
        required_one_of=[('numbers', 'prefix')],
        supports_check_mode=True,
    )
    params = module.params
    numbers, problems = normalize_numbers(params['numbers'], 'numbers')
    if not 1 <= params['quantity'] <= 1000:
        problems.append('quantity must be between 1 and 1000')
    if params['prefix'] is not None:
        try:
            check_prefix(params['prefix'])
        except ValueError as exc:
            problems.append(str(exc))
    refuse_before_sending(module, problems)
    shape = dict(block=params['block'], emergency=params['emergency'], features=params['features'])

    def work(session):
        result = {}
        if numbers:
            result['numbers'] = [model.to_dict(number=True, **shape) for model in read_numbers(session, numbers, **shape)]
        if params['prefix'] is not None:
            result['available'], result['available_message'] = available_numbers(session, params['prefix'], params['quantity'])
        return result

    result = run_module_session(module, work)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
