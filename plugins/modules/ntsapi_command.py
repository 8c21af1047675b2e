#!/usr/bin/python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
module: ntsapi_command
short_description: Run raw NTSAPI commands over TLS in one session
version_added: 0.1.0
description:
  - Opens one NTSAPI session inside TLS (certificate and optional pin checked before the password is sent),
    logs in once, runs the given commands in order and logs out with C(QUIT).
  - Returns each command's reply code, message and, for multi-line replies (C(ALIST), C(INFO <n> 999 DATA)), its lines.
  - Stops and fails at the first reply whose code is not 0, unless O(accept_codes) or O(accept_messages) accept it.
    The reply to C(INFO <n> 999 STATUS) is a read whose digit is the status (0 Accepted, 1 Info received, 2 awaiting
    further validation, 3 Info submitted, 6 awaiting manual processing, 8 Rejected, 9 No record found), so none of those
    digits stops the run.
  - Consecutive read-only commands (C(STAT), C(ALIST), C(BLKINFO), C(INFO <n> 999 STATUS|DATA), C(FEAT <n>) without a letter)
    are pipelined; every other command is sent on its own and its reply awaited before the next one.
  - For the usual number changes prefer the declarative M(magrathea.secure.ntsapi_number), which reads the state first
    and only sends what differs.
  - The secret of an IAX2 target (C(I:user:secret@host)) is masked in everything returned, in messages and in the
    logged invocation.
author:
  - magrathea.secure contributors (@magrathea-secure)
extends_documentation_fragment:
  - magrathea.secure.connection
  - magrathea.secure.connection.ntsapi
  - magrathea.secure.attributes
  - magrathea.secure.attributes.actiongroup_magrathea
attributes:
  check_mode:
    support: partial
    details:
      - Only the read-only commands are sent; the others are returned with RV(results[].skipped=true) and the task reports changed.
  diff_mode:
    support: none
options:
  commands:
    description:
      - NTSAPI command lines, for example V(STAT 01792100001) or V(SET 01792100001 1 S:441792100001@sip.example.com).
      - C(AUTH) and C(QUIT) are refused before anything is sent; the module logs in with O(username) and O(password), and out, by itself.
      - Each command must be one line of printable ASCII, at most 512 characters; CR, LF, other control characters and
        characters beyond ASCII are refused before anything is sent.
      - C(ALTEN <pattern>) finds ten free numbers that differ only in their last digit (V(ALTEN 01792______));
        the first word of its reply names them with V(_) for the last digit; allocate the ten with
        M(magrathea.secure.ntsapi_number), as the examples show. Whether Magrathea's server holds the range for you is not
        published, so C(ALTEN) counts as a change; it is not sent in check mode and reports C(changed=true).
    type: list
    elements: str
    required: true
  accept_codes:
    description:
      - Reply codes besides 0 that do not stop the run, for example V(1) to carry on past C(No number found for allocation).
    type: list
    elements: int
    default: []
  accept_messages:
    description:
      - Python regular expressions; a non-zero reply whose message matches one of them does not stop the run.
    type: list
    elements: str
    default: []
  pipeline_depth:
    description:
      - How many read-only commands may be in flight at once. V(1) sends one command and waits for its reply
        before the next (lock-step). At most 1024.
    type: int
    default: 128
notes:
  - The task reports changed when a command other than a read-only one was answered with code 0 (in check mode, when one was skipped).
  - Magrathea forbids guessing credentials; the module sends C(AUTH) once per session and never retries it.
  - Every reply must be complete within O(timeout), and the whole session within an hour.
  - A server that takes one command per read rather than per line is detected on the first pipelined burst and then gets
    one command per write in the same session, with a warning.
seealso:
  - module: magrathea.secure.ntsapi_number
  - module: magrathea.secure.ntsapi_number_info
'''

EXAMPLES = r'''
- name: Allocate the first free number under 01792 and activate it at once
  magrathea.secure.ntsapi_command:
    commands:
      - "ALLO 01792______"
  register: allo

- name: Activate what ALLO offered
  magrathea.secure.ntsapi_command:
    commands:
      - "ACTI {{ allo.results[0].message.split()[0] }}"

- name: Several reads, pipelined, with an explicit CA file
  magrathea.secure.ntsapi_command:
    ca_path: /home/certificate/mag-root-ca.crt
    commands:
      - "STAT 01792100001"
      - "INFO 01792100001 999 STATUS"
      - "ALIST 01792 5"

- name: Find ten free numbers that differ in their last digit
  magrathea.secure.ntsapi_command:
    commands:
      - "ALTEN 01792______"
  register: alten

- name: Allocate and activate all ten, as Magrathea::API does after ALTEN
  vars:
    stem: "{{ alten.results[0].message.split()[0][:-1] }}"
  magrathea.secure.ntsapi_number:
    numbers: "{{ range(10) | map('string') | map('regex_replace', '^', stem) | list }}"

- name: Deactivate, carrying on when the number is not ours any more
  magrathea.secure.ntsapi_command:
    commands:
      - "DEAC 01792100001"
    accept_messages:
      - not allocated to this account
'''

RETURN = r'''
results:
  description: One entry per command run (or skipped), in order, up to and including the first one not accepted.
  returned: always
  type: list
  elements: dict
  contains:
    command:
      description: The command as sent (an IAX2 secret masked).
      type: str
      sample: STAT 01792100001
    code:
      description:
        - Reply digit, 0 for success; for a multi-line reply with data lines 0, otherwise the digit of its final line.
        - Null for a skipped command.
      type: int
      sample: 0
    message:
      description: Text after the digit of the (final) reply line (an IAX2 secret masked); null for a skipped command.
      type: str
      sample: 01792100001 Y 2026-11-27 S:441792100001@sip.example.com||
    lines:
      description: Texts of the C(0 ...) data lines of a multi-line reply (C(ALIST), C(INFO <n> 999 DATA)); empty otherwise.
      type: list
      elements: str
    read_only:
      description: Whether the command only reads.
      type: bool
    skipped:
      description: True for a command that changes something and was not sent because of check mode.
      type: bool
failed_command:
  description: The entry of RV(results) that stopped the run.
  returned: failure on a refused reply
  type: dict
'''

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_grammar import check_raw_commands, mask_text
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_module import (
    hide_target_secrets,
    ntsapi_argument_spec,
    refuse_before_sending,
    run_module_session,
)
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_reads import CommandOutcome, run_raw_commands


def main():
    module = AnsibleModule(
        argument_spec=ntsapi_argument_spec(
            commands=dict(type='list', elements='str', required=True),
            accept_codes=dict(type='list', elements='int', default=[]),
            accept_messages=dict(type='list', elements='str', default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    hide_target_secrets(module, params['commands'])
    problems = []
    try:
        check_raw_commands(params['commands'])
    except ValueError as exc:
        problems.append(str(exc))
    for index, pattern in enumerate(params['accept_messages']):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append('accept_messages[%d] is not a Python regular expression: %s' % (index, exc))
    refuse_before_sending(module, problems)
    if not params['commands']:
        module.exit_json(changed=False, results=[])

    outcome = CommandOutcome()

    def work(session):
        return run_raw_commands(session, params['commands'], check_mode=module.check_mode, accept_codes=params['accept_codes'],
                                accept_messages=params['accept_messages'], outcome=outcome)

    run_module_session(module, work, partial=lambda: {'results': outcome.results, 'changed': outcome.changed})
    if outcome.failed is not None:
        failed = outcome.failed
        module.fail_json(msg='%s answered %d %s; the commands after it were not sent (accept this reply with accept_codes or accept_messages)'
                         % (mask_text(failed['command']), failed['code'], mask_text(failed['message'])),
                         results=outcome.results, failed_command=failed, changed=outcome.changed)
    module.exit_json(changed=outcome.changed, results=outcome.results)


if __name__ == '__main__':
    main()
