#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: ntsapi_number
short_description: Keep Magrathea numbers active or inactive, with their targets, features and 999 data, over NTSAPI (TLS)
version_added: 0.1.0
description:
  - Declarative management of one or many telephone numbers over one NTSAPI session inside TLS.
  - Reads the state of every number first (C(STAT), pipelined; C(FEAT) and C(INFO <n> 999 STATUS|DATA) when those are managed),
    then sends only the commands that make a difference, one at a time, each reply checked before the next command.
  - O(state=active) allocates the exact number with C(ALLO) and activates it with C(ACTI) at once when this account does not hold it
    (a race lost to another account is retried twice), or reactivates it with C(REAC) when it was deactivated.
    O(state=inactive) deactivates it with C(DEAC).
  - Hundreds of numbers are handled in one task and one session; a number the server refuses is reported
    in RV(numbers) and fails the task at the end, without stopping the others. When the server refuses one option of a number
    (O(targets), O(features), O(order) or O(emergency)), the message names that option and the other options are still applied.
  - Everything given is checked (number formats, target forms, feature letters, order periods, 999 field limits; printable
    ASCII only, no line breaks or other control characters), and every command that may be sent for every number is built
    and checked, before anything is sent. A task that fails on its input has changed nothing.
  - The secret of an IAX2 target is masked in everything returned, in the diff, in messages and in the logged invocation.
author:
  - magrathea.secure contributors (@magrathea-secure)
extends_documentation_fragment:
  - magrathea.secure.connection
  - magrathea.secure.connection.ntsapi
  - magrathea.secure.attributes
  - magrathea.secure.attributes.actiongroup_magrathea
attributes:
  check_mode:
    support: full
    details:
      - Only read-only commands are sent; RV(numbers[].commands) lists what would be sent and RV(numbers[].after) the predicted state.
  diff_mode:
    support: full
options:
  numbers:
    description:
      - The numbers to manage, in UK national format (V(01792100001), 10 or 11 digits), P instead of the leading 0 for a number
        ported in (V(P1792100001)), or V(+) international form. Spaces are ignored and V(+44) becomes V(0).
      - Quote every number in YAML. Unquoted, V(02012300002) is read as the octal integer 271155202 (and a number
        without 8 or 9 loses its leading 0); the module recognises such an integer and says which number it was.
      - A single number may be given as a string with the alias O(number).
    type: list
    elements: str
    required: true
    aliases: [number]
  state:
    description:
      - V(active) allocates (exact number), activates or reactivates as needed, then applies the targets, features, order and 999 data.
      - V(inactive) deactivates a number this account has active; a number that is not active is left alone.
    type: str
    choices: [active, inactive]
    default: active
  targets:
    description:
      - Targets for slots 1, 2 and 3, in that order (at most three). An empty or null entry leaves that slot as it is;
        NTSAPI has no command that empties a slot.
      - "Accepted forms: V(441234567890) (divert to a phone number, international digits without +), V(S:user@host) (SIP, RFC2833 DTMF),
        V(s:user@host) (SIP, inband DTMF), V(E:user@host) (SIP over TLS/SRTP), V(I:user:secret@host) (IAX2),
        V(F:fax@example.com) (fax to email), V(V:voicemail@example.com) (voicemail to email)."
      - C({number}) and C({international}) in a target are replaced by each number in national form and in international digits,
        so one O(targets) serves many numbers (V(S:{international}@sip.example.com)).
      - A slot is set with C(SET) only when C(STAT) shows something else.
    type: list
    elements: str
  features:
    description:
      - Feature letters to switch on (V(true)) or off (V(false)), for example C(D) (present the called number as CLI)
        on and C(J) (anonymous call rejection) off, see the examples. Letters not named are left alone.
      - Read with C(FEAT <number>) and changed with C(FEAT <number> <letter>) or C(FEAT <number> -<letter>).
        Neither the listing nor the C(-) form is published; when the server refuses them, this option fails by name and the
        others are still applied (switch features with M(magrathea.secure.ntsapi_command) then).
    type: dict
  order:
    description:
      - Time-of-day periods for target slots 1, 2 and 3 (C(ORDE)), for example V(0800-1800); an empty or null entry leaves the slot alone.
      - The period format is not published; the sandbox takes C(HHMM) or C(HHMM-HHMM), comma separated. When the server
        refuses it, this option fails by name and the others are still applied.
      - NTSAPI cannot read the order back, see O(send_order).
    type: list
    elements: str
  send_order:
    description:
      - When to send O(order).
      - V(on_change) sends a slot's order when the number was allocated in this run or that slot's target was set in this run,
        so a second identical run changes nothing.
      - V(always) sends it on every run, and the task then always reports changed.
    type: str
    choices: [on_change, always]
    default: on_change
  emergency:
    description:
      - 999 emergency data for the number. Fields are checked against the NTSAPI limits before anything is sent.
      - Fields that differ from C(INFO <n> 999 DATA) are written (after C(CREATE) when there is no record), then C(VALIDATE) is sent
        and the resulting status is returned in RV(numbers[].after.emergency_status).
      - Fields not given are left alone; an empty string removes a field.
    type: dict
    suboptions:
      title:
        description: Title, at most 20 characters.
        type: str
      forename:
        description: Forename, at most 20 characters.
        type: str
      name:
        description: Surname or business name, at most 50 characters.
        type: str
        required: true
      honours:
        description: Honours, at most 30 characters.
        type: str
      bussuffix:
        description: Business suffix (for example Ltd), at most 50 characters.
        type: str
      premises:
        description: Premises (house name or number), at most 60 characters.
        type: str
      thoroughfare:
        description: Street, at most 55 characters.
        type: str
      locality:
        description: Town, at most 30 characters.
        type: str
      postcode:
        description: UK postcode; sent upper case with one space before the inward code.
        type: str
        required: true
  pipeline_depth:
    description:
      - How many read-only commands may be in flight at once while the state is read. V(1) reads in lock-step. At most 1024.
      - Commands that change something are always sent one at a time.
    type: int
    default: 128
notes:
  - A number held by another account cannot be allocated; the task fails for it and says so.
  - Every reply must be complete within O(timeout), and the whole session within an hour.
  - To allocate a range of ten, find it with C(ALTEN) through M(magrathea.secure.ntsapi_command) and give the ten numbers here.
seealso:
  - module: magrathea.secure.ntsapi_number_info
  - module: magrathea.secure.ntsapi_command
'''

EXAMPLES = r'''
- name: One number, active, SIP to our PBX
  magrathea.secure.ntsapi_number:
    number: "01792100001"
    targets:
      - "S:441792100001@pbx.example.com"

- name: Two hundred numbers moved to the new SBC in one task and one session
  magrathea.secure.ntsapi_number:
    numbers: "{{ our_numbers }}"
    targets:
      - "S:{international}@sbc2.example.com"
      - "441792000000"

- name: With features, time-of-day order and 999 data, pinned to the server certificate
  magrathea.secure.ntsapi_number:
    number: "01792100001"
    fingerprint: "{{ ntsapi_sha256 }}"
    targets:
      - "S:441792100001@pbx.example.com"
      - "V:voicemail@example.com"
    order:
      - "0800-1800"
      - "1800-0800"
    features:
      D: true
      J: false
    emergency:
      name: Example Widgets
      bussuffix: Ltd
      premises: Unit 4
      thoroughfare: Harbour Road
      locality: Swansea
      postcode: sa1 1aa

- name: Give a number back
  magrathea.secure.ntsapi_number:
    number: "01792100002"
    state: inactive
'''

RETURN = r'''
numbers:
  description: One entry per number, in the order given (duplicates removed).
  returned: always
  type: list
  elements: dict
  contains:
    number:
      description: The number as sent to NTSAPI.
      type: str
      sample: "01792100001"
    changed:
      description: Whether a command was sent for it (in check mode, would be sent).
      type: bool
    failed:
      description: Whether the server refused something for this number.
      type: bool
    msg:
      description: What was refused for this number, naming the option (targets, features, order, emergency) when only that option failed.
      type: str
      returned: when failed
    commands:
      description: The commands that changed something (in check mode, that would be sent). An IAX2 secret is masked.
      type: list
      elements: str
      sample: ["SET 01792100001 1 S:441792100001@sbc2.example.com"]
    before:
      description:
        - State before the task, with the same keys as RV(numbers[].after).
      type: dict
    after:
      description:
        - State after the task, read back from the server; in check mode the predicted state (values that cannot be predicted are null).
        - Shaped like an entry of the C(numbers) list of M(magrathea.secure.ntsapi_number_info).
      type: dict
      contains:
        state:
          description: V(active), V(inactive) (deactivated, can be reactivated) or V(unallocated) (not held by this account).
          type: str
          sample: active
        active:
          description: The STAT active flag.
          type: bool
        expiry:
          description: Expiry date (YYYY-MM-DD), null when unallocated or not yet known.
          type: str
          sample: "2026-11-27"
        targets:
          description: The non-empty target slots, each with C(index), C(value) (an IAX2 secret masked) and C(kind).
          type: list
          elements: dict
          sample: [{index: 1, value: "S:441792100001@sbc2.example.com", kind: sip}]
        message:
          description: The STAT refusal text.
          type: str
          returned: when unallocated
        features:
          description: Enabled feature letters.
          type: list
          elements: str
          returned: when O(features) is given
        emergency:
          description: The 999 record fields (lower-case names), null when there is no record.
          type: dict
          returned: when O(emergency) is given
        emergency_status:
          description: The 999 status C(code) and C(text) (0 Accepted, 1 Info received, 3 Info submitted, 8 Rejected, 9 No record found).
          type: dict
          returned: when O(emergency) is given
          sample: {code: 0, text: Accepted}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_module import (
    hide_target_secrets,
    ntsapi_argument_spec,
    run_module_session,
)
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_number import (
    NumberReconciler,
    build_specs,
    diff_of,
)

EMERGENCY_OPTIONS = dict(
    title=dict(type='str'), forename=dict(type='str'), name=dict(type='str', required=True), honours=dict(type='str'),
    bussuffix=dict(type='str'), premises=dict(type='str'), thoroughfare=dict(type='str'), locality=dict(type='str'),
    postcode=dict(type='str', required=True),
)


def main():
    module = AnsibleModule(
        argument_spec=ntsapi_argument_spec(
            numbers=dict(type='list', elements='str', required=True, aliases=['number']),
            state=dict(type='str', choices=['active', 'inactive'], default='active'),
            targets=dict(type='list', elements='str'),
            features=dict(type='dict'),
            order=dict(type='list', elements='str'),
            send_order=dict(type='str', choices=['on_change', 'always'], default='on_change'),
            emergency=dict(type='dict', options=EMERGENCY_OPTIONS),
        ),
        supports_check_mode=True,
    )
    params = module.params
    hide_target_secrets(module, params['targets'] or [])
    try:
        specs = build_specs(params['numbers'], params['state'], params['targets'], params['features'], params['order'],
                            params['emergency'], to_bool=lambda value: boolean(value, strict=True))
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    reconciler = NumberReconciler(None, specs, check_mode=module.check_mode, send_order=params['send_order'])
    shape = dict(features=reconciler.manage_features, emergency=reconciler.manage_emergency)

    def report():
        outcomes = reconciler.outcomes
        return {'numbers': [outcome.to_dict(**shape) for outcome in outcomes], 'changed': any(outcome.commands for outcome in outcomes)}

    def work(session):
        reconciler.session = session
        return reconciler.run()

    outcomes = run_module_session(module, work, partial=report)
    result = report()
    if module._diff:
        result['diff'] = diff_of(outcomes, **shape)
    failures = [outcome.failure for outcome in outcomes if outcome.failure]
    if failures:
        shown = '; '.join(failures[:5]) + ('; ...' if len(failures) > 5 else '')
        module.fail_json(msg='%d of %d numbers failed: %s' % (len(failures), len(outcomes), shown), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
