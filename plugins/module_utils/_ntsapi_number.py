# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Declarative state of NTSAPI numbers: what to send so that numbers end up as described.

Private to this collection: not for use by other collections.

Owns the desired-state side of ``ntsapi_number``: the description of every
number checked, and every command that may be sent for it built and
line-checked, before anything is sent; choosing the smallest list of mutating
commands per number from its NumberModel; sending them lock-step (or only
predicting them in check mode), one option at a time, so that an option the
server refuses is reported by name while the others are still applied; and the
before/after the module returns. Formats come from ``_ntsapi_grammar``; reads
and the number model from ``_ntsapi_reads``.
"""

from __future__ import annotations

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_grammar import (
    EMERGENCY_FIELDS,
    EMERGENCY_REQUIRED,
    FEATURE_RE,
    PERIODS_RE,
    command,
    emergency_field_problem,
    expand_target,
    mask_text,
    national_form,
    normalize_numbers,
    normalize_postcode,
    refusal,
    target_error,
)
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_reads import NumberModel, read_numbers
from ansible_collections.magrathea.secure.plugins.module_utils._text import shown_value, text_problem

ALLOCATION_ATTEMPTS = 3
# The options applied to an active number, in the order they are sent.
OPTIONS = ('targets', 'features', 'order', 'emergency')


class NumberSpec:
    """The described state of one number and every command that may be sent for it, each built and checked up front."""

    def __init__(self, number, state, targets, features, order, emergency):
        self.number = number
        self.state = state
        self.targets = targets
        self.features = features
        self.order = order
        self.emergency = emergency
        self.commands = {}

    def build_commands(self):
        """Every command this number may need, keyed by what it does; ValueError when one cannot travel as an NTSAPI line."""
        national = national_form(self.number)
        commands = {verb: command(verb, national) for verb in ('ALLO', 'ACTI', 'REAC', 'DEAC')}
        commands['ALIST'] = command('ALIST', national, '1')
        for index, target in enumerate(self.targets, 1):
            if target:
                commands['SET', index] = command('SET', self.number, index, target)
        for letter, wanted in self.features.items():
            commands['FEAT', letter, wanted] = command('FEAT', national, letter if wanted else '-' + letter)
        for index, periods in enumerate(self.order, 1):
            if periods:
                commands['ORDE', index] = command('ORDE', self.number, index, periods)
        if self.emergency:
            for sub in ('CREATE', 'VALIDATE'):
                commands['INFO', sub] = command('INFO', self.number, '999', sub)
            for field, value in self.emergency.items():
                commands['INFO', field] = command('INFO', self.number, '999', field.upper(), *([value] if value else []))
        self.commands = commands
        return self


def _check_option_text(option, value, problems, **rules):
    problem = text_problem(value, printable=True, **rules)
    if problem:
        problems.append('%s %s %s' % (option, shown_value(mask_text(value)) if isinstance(value, str) else repr(value), problem))
    return problem is None


def build_specs(numbers, state='active', targets=None, features=None, order=None, emergency=None, to_bool=bool):
    """One NumberSpec per distinct number, with its commands; ValueError listing every problem, before anything is sent."""
    problems = []
    targets, order, features = list(targets or []), list(order or []), dict(features or {})
    if state != 'active' and (any(targets) or features or any(order) or emergency):
        problems.append('targets, features, order and emergency describe an active number; they cannot be combined with state=%s' % state)
    if len(targets) > 3:
        problems.append('targets has %d entries; a number has three target slots (1-3)' % len(targets))
    if len(order) > 3:
        problems.append('order has %d entries; there is one time-of-day order per target slot (1-3)' % len(order))
    # Only a template that is clean text is expanded and checked against the target forms (its problem is already listed).
    templates = [template if template and _check_option_text('targets[%d]' % index, template, problems) else None
                 for index, template in enumerate(targets)]
    for index, periods in enumerate(order):
        if periods and _check_option_text('order[%d]' % index, periods, problems) and not PERIODS_RE.fullmatch(periods):
            problems.append('order[%d] %s: give the periods for target %d without spaces, e.g. "0800-1800"'
                            % (index, shown_value(periods), index + 1))
    wanted_features = {}
    for letter, enabled in features.items():
        if _check_option_text('features key', letter, problems) and not FEATURE_RE.fullmatch(letter):
            problems.append('features key %s: use one capital letter, e.g. D (present called number as CLI) or J (anonymous call rejection)'
                            % shown_value(letter))
        try:
            wanted_features[letter] = to_bool(enabled)
        except (TypeError, ValueError):
            problems.append('features.%s: %r is not true or false' % (letter, enabled))
    wanted_emergency = _check_emergency(emergency, problems) if emergency else None

    normalized, number_problems = normalize_numbers(numbers, 'numbers')
    problems.extend(number_problems)
    specs = []
    for number in normalized:
        slots = [expand_target(template, number) if template else None for template in (templates + [None, None, None])[:3]]
        errors = ['%s: %s' % (number, target_error(target)) for target in slots if target and target_error(target)]
        problems.extend(errors)
        spec = NumberSpec(number, state, slots, wanted_features, (order + [None, None, None])[:3], wanted_emergency)
        if not errors:
            try:
                spec.build_commands()
            except ValueError as exc:
                problems.append('%s: %s' % (number, exc))
        specs.append(spec)
    if not specs and not problems:
        problems.append('numbers is empty: give at least one number')
    if problems:
        raise ValueError(refusal(problems))
    return specs


def _check_emergency(emergency, problems):
    """999 fields as NTSAPI stores them (runs of spaces collapsed, postcode normalised); problems appended."""
    wanted = {}
    for field, dummy in EMERGENCY_FIELDS:
        value = emergency.get(field)
        option = 'emergency.%s' % field
        if value is None:
            if field in EMERGENCY_REQUIRED:
                problems.append('%s is required before the 999 data can be validated' % option)
            continue
        if not _check_option_text(option, value, problems):
            continue
        value = ' '.join(value.split())
        problem = emergency_field_problem(field, value)
        if problem:
            problems.append('%s %s %s' % (option, shown_value(value), problem) if field == 'postcode' else '%s %s' % (option, problem))
            continue
        wanted[field] = normalize_postcode(value) if field == 'postcode' else value
    return wanted


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
        self.failures = []

    @property
    def failure(self):
        """What was refused for this number, or None."""
        return '; '.join(self.failures) if self.failures else None

    def to_dict(self, features=False, emergency=False):
        result = {
            'number': self.spec.number,
            'changed': bool(self.commands),
            'failed': bool(self.failures),
            'commands': list(self.commands),
            'before': self.before.to_dict(features=features, emergency=emergency),
            'after': (self.after or self.current).to_dict(features=features, emergency=emergency),
        }
        if self.failures:
            result['msg'] = self.failure
        return result


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

    def read(self, numbers):
        """NumberModel per number from one pipelined burst of STAT (and FEAT, INFO 999 STATUS/DATA when managed)."""
        models = read_numbers(self.session, numbers, emergency=self.manage_emergency, features=self.manage_features)
        return {model.number: model for model in models}

    # -- sending --

    def _send(self, outcome, key, accept=(0,)):
        """Send the spec's command ``key`` lock-step (in check mode: only record it); _NumberFailed when refused."""
        line = outcome.spec.commands[key]
        outcome.commands.append(mask_text(line))
        if self.check_mode:
            return None
        reply = self.session.run(line)
        if reply.code not in accept:
            outcome.commands.pop()
            raise _NumberFailed('%s answered %d %s' % (mask_text(line), reply.code, mask_text(reply.message)))
        return reply

    # -- the run --

    def run(self):
        models = self.read([spec.number for spec in self.specs])
        self.outcomes = [NumberOutcome(spec, models[spec.number]) for spec in self.specs]
        if self.check_mode:
            self._predict_allocations()
        for outcome in self.outcomes:
            self._attempt(outcome, None, self._apply_state)
        activated = [outcome for outcome in self.outcomes if outcome.commands and not outcome.failures]
        if activated and not self.check_mode:
            fresh = self.read([outcome.spec.number for outcome in activated])
            for outcome in activated:
                outcome.current = fresh[outcome.spec.number]
        for outcome in self.outcomes:
            if not outcome.failures and outcome.spec.state == 'active':
                for option in OPTIONS:
                    self._attempt(outcome, option, getattr(self, '_apply_' + option))
        touched = [outcome for outcome in self.outcomes if outcome.commands]
        if touched and not self.check_mode:
            after = self.read([outcome.spec.number for outcome in touched])
            for outcome in touched:
                outcome.after = after[outcome.spec.number]
        return self.outcomes

    def _attempt(self, outcome, option, step):
        """Apply one step; a refusal is recorded for this number (naming the option) and the next option is still applied."""
        try:
            step(outcome)
        except _NumberFailed as exc:
            if option is None:
                outcome.failures.append('%s: %s' % (outcome.spec.number, exc))
            else:
                outcome.failures.append('%s: %s could not be applied: %s' % (outcome.spec.number, option, exc))

    def _predict_allocations(self):
        """Check mode: ask ALIST (which allocates nothing) whether each number to allocate is free, as ALLO would."""
        wanted = [outcome for outcome in self.outcomes if outcome.spec.state == 'active' and outcome.before.state == 'unallocated'
                  and national_form(outcome.spec.number) == outcome.spec.number and not outcome.spec.number.startswith('+')]
        replies = self.session.query([outcome.spec.commands['ALIST'] for outcome in wanted])
        for outcome, reply in zip(wanted, replies):
            if outcome.spec.number not in [line.split()[0] for line in reply.lines if line.split()]:
                outcome.failures.append('%s: not available for allocation (STAT answered %r; ALIST %s 1 answered %d %s): another account '
                                        'may hold it' % (outcome.spec.number, outcome.before.message, outcome.spec.number, reply.code,
                                                         reply.message))

    def _apply_state(self, outcome):
        spec, current = outcome.spec, outcome.current
        if spec.state == 'inactive':
            if current.state == 'active':
                self._send(outcome, 'DEAC')
                current.state = 'inactive'
            return
        if current.state == 'inactive':
            try:
                self._send(outcome, 'REAC')
            except _NumberFailed as exc:
                raise _NumberFailed('%s; it was deactivated and another account may have taken it since' % exc) from None
            current.state = 'active'
            outcome.predicted = self.check_mode
        elif current.state == 'unallocated':
            self._allocate(outcome)

    def _allocate(self, outcome):
        """ALLO the exact number, then ACTI at once (ALLO reserves nothing); a lost race is retried."""
        number = outcome.spec.number
        if number.startswith('P') or number.startswith('+'):
            raise _NumberFailed('STAT answered %r and a %s number cannot be allocated with ALLO; check the number'
                                % (outcome.before.message, 'ported' if number.startswith('P') else 'non-UK'))
        last = None
        for dummy in range(ALLOCATION_ATTEMPTS):
            try:
                self._send(outcome, 'ALLO')
            except _NumberFailed as exc:
                raise _NumberFailed('not available for allocation (STAT answered %r; %s): another account may hold it'
                                    % (outcome.before.message, exc)) from None
            try:
                self._send(outcome, 'ACTI')
            except _NumberFailed as exc:
                last = exc
                continue
            outcome.allocated = True
            outcome.current = NumberModel(number, 'active', features=[], emergency=None, status={'code': 9, 'text': 'No record found'})
            return
        raise _NumberFailed('ALLO and ACTI failed %d times (%s); another account keeps taking it' % (ALLOCATION_ATTEMPTS, last))

    def _apply_targets(self, outcome):
        spec, current = outcome.spec, outcome.current
        for index, target in enumerate(spec.targets, 1):
            if target and current.targets[index - 1] != target:
                self._send(outcome, ('SET', index))
                current.targets[index - 1] = target
                outcome.changed_slots.add(index)

    def _apply_features(self, outcome):
        spec, current = outcome.spec, outcome.current
        if not spec.features:
            return
        if current.features is None and outcome.predicted:
            # check mode: the number is only predicted to be active, so its features could not be read yet.
            current.features = []
        if current.features is None:
            raise _NumberFailed('FEAT %s (the feature listing, whose reply NTSAPI does not publish) was refused or answered in a form '
                                'this module cannot read, so no feature was compared or switched; switch them with '
                                'magrathea.secure.ntsapi_command' % national_form(spec.number))
        enabled = set(current.features)
        for letter, wanted in sorted(spec.features.items()):
            if wanted != (letter in enabled):
                self._send(outcome, ('FEAT', letter, wanted))
                if wanted:
                    enabled.add(letter)
                else:
                    enabled.discard(letter)
        current.features = sorted(enabled)

    def _apply_order(self, outcome):
        spec = outcome.spec
        for index, periods in enumerate(spec.order, 1):
            if periods and (self.send_order == 'always' or outcome.allocated or index in outcome.changed_slots):
                self._send(outcome, ('ORDE', index))

    def _apply_emergency(self, outcome):
        spec, current = outcome.spec, outcome.current
        if not spec.emergency:
            return
        have = current.emergency
        if have is None:
            self._send(outcome, ('INFO', 'CREATE'))
            have = {}
        writes = [(field, spec.emergency[field]) for field, dummy in EMERGENCY_FIELDS
                  if field in spec.emergency and have.get(field, '') != spec.emergency[field]]
        for field, value in writes:
            self._send(outcome, ('INFO', field))
            if value:
                have[field] = value
            else:
                have.pop(field, None)
        current.emergency = dict(have)
        # Status 1 (Info received) means data that was never validated, e.g. after an interrupted run.
        received = current.status is not None and current.status.get('code') == 1
        if writes or received:
            # VALIDATE: 0 Information Valid, 1 Parsed OK. Check later for status; 2 and above refuse.
            self._send(outcome, ('INFO', 'VALIDATE'), accept=(0, 1))
            current.status = None


def diff_of(outcomes, features=False, emergency=False):
    """Ansible diff of the numbers that change: before and after keyed by number."""
    changed = [outcome for outcome in outcomes if outcome.commands]
    return {
        'before': {outcome.spec.number: outcome.before.to_dict(features=features, emergency=emergency) for outcome in changed},
        'after': {outcome.spec.number: (outcome.after or outcome.current).to_dict(features=features, emergency=emergency)
                  for outcome in changed},
    }
