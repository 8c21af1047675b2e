# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Declarative state of NTSAPI numbers: what to send so that numbers end up as described.

Private to this collection: not for use by other collections.

Owns the desired-state side of ``ntsapi_number``: checking the description of
the numbers before anything is sent (number formats, target forms, feature
letters, 999 field limits), reading their state in one pipelined burst (STAT,
and FEAT / INFO 999 DATA+STATUS when those are managed), choosing the smallest
list of mutating commands per number, sending them lock-step (or only
predicting them in check mode) and the before/after the module returns.
"""

from __future__ import annotations

import re

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi import (
    NumberStatus,
    emergency_status,
    international_digits,
    mask_target,
    national_form,
    normalize_number,
    parse_emergency_data,
    parse_features,
    target_error,
    target_kind,
)

# 999 fields in the order NTSAPI lists them, with their published maximum lengths (postcode: a UK postcode).
EMERGENCY_FIELDS = (('title', 20), ('forename', 20), ('name', 50), ('honours', 30), ('bussuffix', 50),
                    ('premises', 60), ('thoroughfare', 55), ('locality', 30), ('postcode', None))
EMERGENCY_REQUIRED = ('name', 'postcode')
# Royal Mail shapes: A9 9AA, A99 9AA, A9A 9AA, AA9 9AA, AA99 9AA, AA9A 9AA, and GIR 0AA.
POSTCODE_RE = re.compile(r'^(?:GIR ?0AA|[A-PR-UWYZ](?:\d[\dA-HJKPSTUW]?|[A-HK-Y]\d[\dABEHMNPRV-Y]?) ?\d[ABD-HJLNP-UW-Z]{2})$')
PERIODS_RE = re.compile(r'^[0-9][0-9:,-]*$')
FEATURE_RE = re.compile(r'^[A-Z]$')
ALLOCATION_ATTEMPTS = 3


def normalize_postcode(value):
    """``SA1 1AA`` form (upper case, one space before the inward code), or None when it is not a UK postcode."""
    compact = re.sub(r'\s', '', value).upper()
    if not POSTCODE_RE.match(compact):
        return None
    return compact[:-3] + ' ' + compact[-3:]


def _expand(template, number):
    """``{number}`` and ``{international}`` in a target become this number's national and international digits."""
    return template.replace('{number}', national_form(number)).replace('{international}', international_digits(number))


class NumberSpec:
    """The described state of one number."""

    def __init__(self, number, state, targets, features, order, emergency):
        self.number = number
        self.state = state
        self.targets = targets
        self.features = features
        self.order = order
        self.emergency = emergency


def build_specs(numbers, state='active', targets=None, features=None, order=None, emergency=None, to_bool=bool):
    """One NumberSpec per distinct number; ValueError listing every problem, before anything is sent."""
    problems = []
    targets, order, features = list(targets or []), list(order or []), dict(features or {})
    if state != 'active' and (any(targets) or features or any(order) or emergency):
        problems.append('targets, features, order and emergency describe an active number; they cannot be combined with state=%s' % state)
    if len(targets) > 3:
        problems.append('targets has %d entries; a number has three target slots (1-3)' % len(targets))
    if len(order) > 3:
        problems.append('order has %d entries; there is one time-of-day order per target slot (1-3)' % len(order))
    for index, periods in enumerate(order, 1):
        if periods and not PERIODS_RE.match(periods):
            problems.append('order[%d] %r: give the periods for target %d without spaces, e.g. 0800-1800' % (index - 1, periods, index))
    wanted_features = {}
    for letter, enabled in features.items():
        if not FEATURE_RE.match(str(letter)):
            problems.append('feature %r: use one capital letter, e.g. D (present called number as CLI) or J (anonymous call rejection)' % (letter,))
        try:
            wanted_features[str(letter)] = to_bool(enabled)
        except (TypeError, ValueError):
            problems.append('feature %s: %r is not true or false' % (letter, enabled))
    wanted_emergency = _check_emergency(emergency, problems) if emergency else None

    specs, seen = [], set()
    for raw in numbers or []:
        try:
            number = normalize_number(raw)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if number in seen:
            continue
        seen.add(number)
        slots = []
        for template in (targets + [None, None, None])[:3]:
            if not template:
                slots.append(None)
                continue
            target = _expand(template, number)
            error = target_error(target)
            if error:
                problems.append('%s: %s' % (number, error))
            slots.append(target)
        specs.append(NumberSpec(number, state, slots, wanted_features, (order + [None, None, None])[:3], wanted_emergency))
    if not specs and not problems:
        problems.append('numbers is empty: give at least one number')
    if problems:
        raise ValueError('; '.join(problems[:20]) + ('; and %d more problems' % (len(problems) - 20) if len(problems) > 20 else '')
                         + '. Nothing was sent.')
    return specs


def _check_emergency(emergency, problems):
    """999 fields as NTSAPI stores them (white space collapsed, postcode normalised); problems appended."""
    wanted = {}
    for field, limit in EMERGENCY_FIELDS:
        value = emergency.get(field)
        if value is None:
            if field in EMERGENCY_REQUIRED:
                problems.append('emergency.%s is required before the 999 data can be validated' % field)
            continue
        value = ' '.join(str(value).split())
        if any(ord(char) < 32 for char in value):
            problems.append('emergency.%s holds control characters' % field)
        if field in EMERGENCY_REQUIRED and not value:
            problems.append('emergency.%s must not be empty' % field)
        elif field == 'postcode':
            postcode = normalize_postcode(value)
            if postcode is None:
                problems.append('emergency.postcode %r is not a UK postcode (e.g. SA1 1AA)' % value)
            value = postcode
        elif len(value) > limit:
            problems.append('emergency.%s is %d characters long; NTSAPI allows at most %d' % (field, len(value), limit))
        wanted[field] = value
    return wanted


class NumberModel:
    """What is known (or, in check mode, predicted) about one number."""

    def __init__(self, number, state, expiry=None, targets=None, message=None, features=None, emergency=None, status=None):
        self.number = number
        self.state = state
        self.expiry = expiry
        self.targets = list(targets or ['', '', ''])
        self.message = message
        self.features = features
        self.emergency = emergency
        self.status = status

    @classmethod
    def from_replies(cls, number, stat, features=None, data=None, status=None):
        if stat.ok:
            parsed = NumberStatus.from_message(stat.message)
            model = cls(number, 'active' if parsed.active else 'inactive', parsed.expiry, parsed.targets)
        else:
            model = cls(number, 'unallocated', message=stat.message)
        if model.state == 'active':
            # FEAT and INFO 999 only answer for a number held now; a refusal digit is no 999 status.
            model.features = parse_features(features) if features is not None else None
            model.emergency = parse_emergency_data(data) if data is not None else None
            model.status = emergency_status(status) if status is not None else None
        return model

    def copy(self):
        return NumberModel(self.number, self.state, self.expiry, self.targets, self.message,
                           None if self.features is None else list(self.features),
                           None if self.emergency is None else dict(self.emergency),
                           None if self.status is None else dict(self.status))

    def to_dict(self, features=False, emergency=False):
        facts = {
            'state': self.state,
            'active': self.state == 'active',
            'expiry': self.expiry,
            'targets': [{'index': index, 'value': mask_target(value), 'kind': target_kind(value)}
                        for index, value in enumerate(self.targets, 1) if value],
        }
        if self.message:
            facts['message'] = self.message
        if features:
            facts['features'] = self.features
        if emergency:
            facts['emergency'] = self.emergency
            facts['emergency_status'] = self.status
        return facts


class _NumberFailed(Exception):
    """The server refused something for this one number; the others carry on."""


class NumberOutcome:
    """Everything done (or, in check mode, to be done) for one number."""

    def __init__(self, spec, before):
        self.spec = spec
        self.before = before
        self.current = before.copy()
        self.after = None
        self.commands = []
        self.allocated = False
        self.predicted = False
        self.changed_slots = set()
        self.failure = None

    def to_dict(self, features=False, emergency=False):
        result = {
            'number': self.spec.number,
            'changed': bool(self.commands),
            'failed': self.failure is not None,
            'commands': list(self.commands),
            'before': self.before.to_dict(features, emergency),
            'after': (self.after or self.current).to_dict(features, emergency),
        }
        if self.failure:
            result['msg'] = self.failure
        return result


def _shown(command):
    """The command as returned to the user: an IAX2 secret in a SET target is masked."""
    words = command.split(' ')
    if words[0] == 'SET' and len(words) == 4:
        words[3] = mask_target(words[3])
    return ' '.join(words)


class NumberReconciler:
    """Brings numbers to their NumberSpec over one session: read, decide, send lock-step, read back."""

    def __init__(self, session, specs, check_mode=False, send_order='on_change'):
        self.session = session
        self.specs = specs
        self.check_mode = check_mode
        self.send_order = send_order
        self.manage_features = any(spec.features for spec in specs)
        self.manage_emergency = any(spec.emergency for spec in specs)
        self.outcomes = []

    # -- reading --

    def read(self, numbers):
        """NumberModel per number from one pipelined burst of STAT (and FEAT, INFO 999 STATUS/DATA when managed)."""
        commands = []
        for number in numbers:
            commands.append('STAT %s' % number)
            if self.manage_features:
                commands.append('FEAT %s' % national_form(number))
            if self.manage_emergency:
                commands.extend(['INFO %s 999 STATUS' % number, 'INFO %s 999 DATA' % number])
        replies = iter(self.session.query(commands))
        models = {}
        for number in numbers:
            stat = next(replies)
            features = next(replies) if self.manage_features else None
            status, data = (next(replies), next(replies)) if self.manage_emergency else (None, None)
            models[number] = NumberModel.from_replies(number, stat, features, data, status)
        return models

    # -- sending --

    def _send(self, outcome, command, accept=(0,)):
        """Send one mutating command lock-step (in check mode: only record it); _NumberFailed when refused."""
        outcome.commands.append(_shown(command))
        if self.check_mode:
            return None
        reply = self.session.run(command)
        if reply.code not in accept:
            outcome.commands.pop()
            raise _NumberFailed('%s answered %d %s' % (_shown(command), reply.code, reply.message))
        return reply

    # -- the run --

    def run(self):
        models = self.read([spec.number for spec in self.specs])
        self.outcomes = [NumberOutcome(spec, models[spec.number]) for spec in self.specs]
        if self.check_mode:
            self._predict_allocations()
        self._each(self._apply_state)
        activated = [outcome for outcome in self.outcomes if outcome.commands and outcome.failure is None]
        if activated and not self.check_mode:
            fresh = self.read([outcome.spec.number for outcome in activated])
            for outcome in activated:
                outcome.current = fresh[outcome.spec.number]
        self._each(self._apply_configuration)
        touched = [outcome for outcome in self.outcomes if outcome.commands]
        if touched and not self.check_mode:
            after = self.read([outcome.spec.number for outcome in touched])
            for outcome in touched:
                outcome.after = after[outcome.spec.number]
        return self.outcomes

    def _each(self, step):
        for outcome in self.outcomes:
            if outcome.failure is None:
                try:
                    step(outcome)
                except _NumberFailed as exc:
                    outcome.failure = '%s: %s' % (outcome.spec.number, exc)

    def _predict_allocations(self):
        """Check mode: ask ALIST (which allocates nothing) whether each number to allocate is free, as ALLO would."""
        wanted = [outcome for outcome in self.outcomes if outcome.spec.state == 'active' and outcome.before.state == 'unallocated'
                  and national_form(outcome.spec.number) == outcome.spec.number and not outcome.spec.number.startswith('+')]
        replies = self.session.query(['ALIST %s 1' % outcome.spec.number for outcome in wanted])
        for outcome, reply in zip(wanted, replies):
            if outcome.spec.number not in [line.split()[0] for line in reply.lines if line.split()]:
                outcome.failure = ('%s: not available for allocation (STAT answered %r; ALIST %s 1 answered %d %s): another account may hold it'
                                   % (outcome.spec.number, outcome.before.message, outcome.spec.number, reply.code, reply.message))

    def _apply_state(self, outcome):
        spec, current = outcome.spec, outcome.current
        national = national_form(spec.number)
        if spec.state == 'inactive':
            if current.state == 'active':
                self._send(outcome, 'DEAC %s' % national)
                current.state = 'inactive'
            return
        if current.state == 'inactive':
            try:
                self._send(outcome, 'REAC %s' % national)
            except _NumberFailed as exc:
                raise _NumberFailed('%s; it was deactivated and another account may have taken it since' % exc) from None
            current.state = 'active'
            outcome.predicted = self.check_mode
        elif current.state == 'unallocated':
            self._allocate(outcome, national)

    def _allocate(self, outcome, national):
        """ALLO the exact number, then ACTI at once (ALLO reserves nothing); a lost race is retried."""
        number = outcome.spec.number
        if number.startswith('P') or number.startswith('+'):
            raise _NumberFailed('STAT answered %r and a %s number cannot be allocated with ALLO; check the number'
                                % (outcome.before.message, 'ported' if number.startswith('P') else 'non-UK'))
        last = None
        for dummy in range(ALLOCATION_ATTEMPTS):
            try:
                self._send(outcome, 'ALLO %s' % national)
            except _NumberFailed as exc:
                raise _NumberFailed('not available for allocation (STAT answered %r; %s): another account may hold it'
                                    % (outcome.before.message, exc)) from None
            try:
                self._send(outcome, 'ACTI %s' % national)
            except _NumberFailed as exc:
                last = exc
                continue
            outcome.allocated = True
            outcome.current = NumberModel(number, 'active', features=[], emergency=None,
                                          status={'code': 9, 'text': 'No record found'})
            return
        raise _NumberFailed('ALLO and ACTI failed %d times (%s); another account keeps taking it' % (ALLOCATION_ATTEMPTS, last))

    def _apply_configuration(self, outcome):
        spec, current = outcome.spec, outcome.current
        if spec.state != 'active':
            return
        for index, target in enumerate(spec.targets, 1):
            if target and current.targets[index - 1] != target:
                self._send(outcome, 'SET %s %d %s' % (spec.number, index, target))
                current.targets[index - 1] = target
                outcome.changed_slots.add(index)
        if spec.features:
            self._apply_features(outcome)
        for index, periods in enumerate(spec.order, 1):
            if periods and (self.send_order == 'always' or outcome.allocated or index in outcome.changed_slots):
                self._send(outcome, 'ORDE %s %d %s' % (spec.number, index, periods))
        if spec.emergency:
            self._apply_emergency(outcome)

    def _apply_features(self, outcome):
        spec, current = outcome.spec, outcome.current
        if current.features is None and outcome.predicted:
            # check mode: the number is only predicted to be active, so its features could not be read yet.
            current.features = []
        if current.features is None:
            raise _NumberFailed('cannot read its features with FEAT %s, so they cannot be compared; set them with '
                                'magrathea.secure.ntsapi_command instead' % national_form(spec.number))
        enabled = set(current.features)
        for letter, wanted in sorted(spec.features.items()):
            if wanted and letter not in enabled:
                self._send(outcome, 'FEAT %s %s' % (national_form(spec.number), letter))
                enabled.add(letter)
            elif not wanted and letter in enabled:
                self._send(outcome, 'FEAT %s -%s' % (national_form(spec.number), letter))
                enabled.discard(letter)
        current.features = sorted(enabled)

    def _apply_emergency(self, outcome):
        spec, current = outcome.spec, outcome.current
        have = current.emergency
        if have is None:
            self._send(outcome, 'INFO %s 999 CREATE' % spec.number)
            have = {}
        writes = [(field, spec.emergency[field]) for field, dummy in EMERGENCY_FIELDS
                  if field in spec.emergency and have.get(field, '') != spec.emergency[field]]
        for field, value in writes:
            self._send(outcome, ('INFO %s 999 %s %s' % (spec.number, field.upper(), value)).rstrip())
            if value:
                have[field] = value
            else:
                have.pop(field, None)
        current.emergency = dict(have)
        # Status 1 (Info received) means data that was never validated, e.g. after an interrupted run.
        received = current.status is not None and current.status.get('code') == 1
        if writes or received:
            # VALIDATE: 0 Information Valid, 1 Parsed OK. Check later for status; 2 and above refuse.
            self._send(outcome, 'INFO %s 999 VALIDATE' % spec.number, accept=(0, 1))
            current.status = None


def diff_of(outcomes, features=False, emergency=False):
    """Ansible diff of the numbers that change: before and after keyed by number."""
    changed = [outcome for outcome in outcomes if outcome.commands]
    return {
        'before': {outcome.spec.number: outcome.before.to_dict(features, emergency) for outcome in changed},
        'after': {outcome.spec.number: (outcome.after or outcome.current).to_dict(features, emergency) for outcome in changed},
    }
