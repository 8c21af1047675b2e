# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the NTSAPI modules read and run through a session: the one model of a number's state.

Private to this collection: not for use by other collections.

Owns ``NumberModel`` (a number's state built from its STAT, BLKINFO, FEAT and
INFO 999 STATUS/DATA replies, and the shape every module returns it in),
``read_numbers`` (those reads for many numbers in one pipelined burst), the
ALIST listing, and running a user's raw command list. Formats come from
``_ntsapi_grammar``; the wire from ``_ntsapi_session``.
"""

from __future__ import annotations

import re

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_grammar import (
    EMERGENCY_STATUS_TEXT,
    NumberStatus,
    block_facts,
    check_prefix,
    command,
    emergency_status,
    is_emergency_status,
    is_read_only,
    mask_text,
    national_form,
    parse_emergency_data,
    parse_features,
    target_kind,
)

# What a number's facts can hold beyond STAT, with the command that reads each (ported numbers keep their P form
# where NTSAPI takes it; BLKINFO and FEAT take the national form).
EXTRA_READS = (
    ('block', lambda number: command('BLKINFO', national_form(number))),
    ('status', lambda number: command('INFO', number, '999', 'STATUS')),
    ('data', lambda number: command('INFO', number, '999', 'DATA')),
    ('features', lambda number: command('FEAT', national_form(number))),
)


class NumberModel:
    """What is known (or, in check mode, predicted) about one number.

    ``state`` is active, inactive (deactivated, can be reactivated) or unallocated (STAT refused it). ``features``,
    ``emergency``, ``status`` and ``block`` are None when not read, not readable, or not held (those commands only
    answer for a number held now; a refusal digit is no 999 status).
    """

    def __init__(self, number, state, expiry=None, targets=None, message=None, features=None, emergency=None, status=None, block=None):
        self.number = number
        self.state = state
        self.expiry = expiry
        self.targets = list(targets or ['', '', ''])
        self.message = message
        self.features = features
        self.emergency = emergency
        self.status = status
        self.block = block

    @classmethod
    def from_replies(cls, number, stat, block=None, data=None, status=None, features=None):
        if stat.ok:
            parsed = NumberStatus.from_message(stat.message)
            model = cls(number, 'active' if parsed.active else 'inactive', parsed.expiry, parsed.targets)
        else:
            model = cls(number, 'unallocated', message=stat.message)
        if model.state == 'active':
            model.block = block_facts(block) if block is not None else None
            model.features = parse_features(features) if features is not None else None
            model.emergency = parse_emergency_data(data) if data is not None else None
            model.status = emergency_status(status) if status is not None else None
        return model

    def copy(self):
        return NumberModel(self.number, self.state, self.expiry, self.targets, self.message,
                           None if self.features is None else list(self.features),
                           None if self.emergency is None else dict(self.emergency),
                           None if self.status is None else dict(self.status),
                           None if self.block is None else dict(self.block))

    def to_dict(self, number=False, block=False, features=False, emergency=False):
        """The facts as the modules return them (an IAX2 secret masked); ``number`` adds the number itself."""
        facts = {
            'state': self.state,
            'active': self.state == 'active',
            'expiry': self.expiry,
            'targets': [{'index': index, 'value': mask_text(value), 'kind': target_kind(value)}
                        for index, value in enumerate(self.targets, 1) if value],
        }
        if number:
            facts['number'] = self.number
        if self.message:
            facts['message'] = mask_text(self.message)
        if block:
            facts['block'] = self.block
        if features:
            facts['features'] = self.features
        if emergency:
            facts['emergency'] = self.emergency
            facts['emergency_status'] = self.status
        return facts


def read_numbers(session, numbers, block=False, emergency=False, features=False):
    """NumberModel per number, in order, from one pipelined burst of STAT (and BLKINFO, INFO 999 STATUS/DATA, FEAT when asked)."""
    wanted = {'block': block, 'status': emergency, 'data': emergency, 'features': features}
    kinds = [(kind, build) for kind, build in EXTRA_READS if wanted[kind]]
    commands = []
    for number in numbers:
        commands.append(command('STAT', number))
        commands.extend(build(number) for dummy, build in kinds)
    replies = iter(session.query(commands))
    models = []
    for number in numbers:
        stat = next(replies)
        models.append(NumberModel.from_replies(number, stat, **{kind: next(replies) for kind, dummy in kinds}))
    return models


def available_numbers(session, prefix, quantity):
    """ALIST: (numbers, final message); an empty list when none is available. Allocates nothing."""
    reply = session.query([command('ALIST', check_prefix(prefix), '%d' % quantity)])[0]
    return [line.split()[0] for line in reply.lines], reply.message


class CommandOutcome:
    """What running a user's list of raw commands did: one entry per command, and the first refused one."""

    def __init__(self):
        self.results = []
        self.failed = None
        self.changed = False


def run_raw_commands(session, commands, check_mode=False, accept_codes=(), accept_messages=(), outcome=None):
    """Run ``commands`` in order: read-only runs pipelined, the others lock-step; stop at the first reply not accepted.

    In check mode the mutating commands are not sent and are reported as skipped. A reply is accepted when its code
    is 0 or in ``accept_codes``, its message matches one of ``accept_messages`` (regex), or it answers
    ``INFO <n> 999 STATUS`` with a status digit (that digit is the status, not a failure).
    """
    patterns = [re.compile(pattern) for pattern in accept_messages]

    def accepted(line, reply):
        if reply.ok or reply.code in accept_codes or any(pattern.search(reply.message) for pattern in patterns):
            return True
        return is_emergency_status(line) and reply.code in EMERGENCY_STATUS_TEXT

    outcome = CommandOutcome() if outcome is None else outcome
    position = 0
    while position < len(commands) and outcome.failed is None:
        if is_read_only(commands[position]):
            end = position
            while end < len(commands) and is_read_only(commands[end]):
                end += 1
            batch = commands[position:end]
            replies = session.query(batch)
        else:
            end = position + 1
            batch = commands[position:end]
            if check_mode:
                outcome.results.append({'command': mask_text(batch[0]), 'code': None, 'message': None, 'lines': [], 'read_only': False,
                                        'skipped': True})
                outcome.changed = True
                position = end
                continue
            replies = [session.run(batch[0])]
        for line, reply in zip(batch, replies):
            result = reply.to_dict()
            result.update(read_only=is_read_only(line), skipped=False)
            outcome.results.append(result)
            if not is_read_only(line) and reply.ok:
                outcome.changed = True
            if not accepted(line, reply):
                outcome.failed = result
                break
        position = end
    return outcome
