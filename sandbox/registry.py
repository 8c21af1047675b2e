# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sandbox's model of one Magrathea account's telephone numbers.

Owns the state that the NTSAPI and REST imitations share: which numbers exist,
who holds each one (this account, another account, or nobody), whether it is
active and until when, its three targets, time-of-day order, PIN, features,
general information, 999 emergency record and block membership. Every public
method takes the lock, so one registry can serve many connections at once.

Methods raise NtsError with the message the NTSAPI puts after the digit; the
texts Magrathea publishes are kept word for word, the rest are inferred.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import re
import threading

NUMBER_LENGTH = 11
# UK national numbers have 11 digits, a few (such as 016977 xxxx) 10: the pool holds both.
DEFAULT_POOL = ("01792100000-01792100999", "02012300000-02012300999", "0169770000-0169770099")
DEFAULT_TAKEN = ("01792000001", "01792100007", "02012300002")
DEFAULT_PORTED = ("01632960001", "01632960002")
LARGEST_PREFIX_EXPANSION = 100_000

OURS = "ours"
OTHER = "other"
FREE = "free"

# Published NTSAPI error texts.
NOT_ACTIVATED = "Number not activated"
NO_NUMBER_FOUND = "No number found for allocation"
NO_RANGE_FOUND = "No range found for allocation"
NOT_IN_BLOCK = "Account not ACTIve"

NATIONAL_RE = re.compile(r"0[0-9]{9,10}")
INTERNATIONAL_RE = re.compile(r"\+[0-9]{6,15}")
PORTED_RE = re.compile(r"P[0-9]{9,10}")
# ALLO and ALTEN name a whole number (10 or 11 characters, _ for any one digit); ALIST a prefix.
PATTERN_RE = re.compile(r"[0-9_]{%d,%d}" % (NUMBER_LENGTH - 1, NUMBER_LENGTH))
PREFIX_RE = re.compile(r"[0-9_]{1,%d}" % NUMBER_LENGTH)

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
_EMAIL = r"[A-Za-z0-9._%+'=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
TARGET_FORMS = {
    "PSTN divert (international, no +)": re.compile(r"[1-9][0-9]{6,14}"),
    "SIP S:/s:, SIP over TLS E:": re.compile(r"[SsE]:[A-Za-z0-9._~+*#-]+@" + _HOST),
    "IAX2 I:user:pass@host": re.compile(r"I:[A-Za-z0-9._~+-]+:[!-9;-?A-{}~]+@" + _HOST),
    "fax F: or voicemail V: to email": re.compile(r"[FV]:" + _EMAIL),
}
_HHMM = r"(?:[01][0-9]|2[0-3])[0-5][0-9]"
PERIODS_RE = re.compile(r"%s(?:-%s)?(?:,%s(?:-%s)?)*" % (_HHMM, _HHMM, _HHMM, _HHMM))
PIN_RE = re.compile(r"[0-9]{4,8}")
FEATURE_RE = re.compile(r"[A-Z]")
GENERAL_INFO_LIMIT = 255
BLOCK_SIZES = (10, 100, 1000)

EMERGENCY_FIELDS = {
    "TITLE": 20, "FORENAME": 20, "NAME": 50, "HONOURS": 30, "BUSSUFFIX": 50,
    "PREMISES": 60, "THOROUGHFARE": 55, "LOCALITY": 30, "POSTCODE": 8,
}
EMERGENCY_STATUS_TEXT = {
    0: "Accepted", 1: "Info received", 2: "Info awaiting further validation", 3: "Info submitted",
    6: "Submitted - Awaiting manual processing", 8: "Rejected", 9: "No record found",
}
# Royal Mail shapes: A9 9AA, A99 9AA, A9A 9AA, AA9 9AA, AA99 9AA, AA9A 9AA, and GIR 0AA.
POSTCODE_RE = re.compile(r"GIR ?0AA|[A-PR-UWYZ](?:[0-9][0-9A-HJKPSTUW]?|[A-HK-Y][0-9][0-9ABEHMNPRV-Y]?) ?[0-9][ABD-HJLNP-UW-Z]{2}")


class NtsError(Exception):
    """A refused NTSAPI operation: ``code`` is the reply digit, str() the reply text."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def valid_target(target):
    """True when ``target`` is one of the NTSAPI target forms."""
    return any(form.fullmatch(target) for form in TARGET_FORMS.values())


def normalise_postcode(postcode):
    """Upper-case UK postcode with one space before the inward code, or None when it is not one."""
    compact = postcode.upper().replace(" ", "")
    if not POSTCODE_RE.fullmatch(compact):
        return None
    return compact[:-3] + " " + compact[-3:]


def expand_pool_entry(entry):
    """Numbers named by a pool entry: 'first-last', a number of 10 or 11 digits, or a shorter prefix (to 11 digits)."""
    entry = entry.strip()
    if "-" in entry:
        first, last = (part.strip() for part in entry.split("-", 1))
        if len(first) != len(last) or not (first + last).isdigit() or first > last:
            raise ValueError("pool range %r must be two numbers of one length, first <= last" % entry)
        return ["%0*d" % (len(first), value) for value in range(int(first), int(last) + 1)]
    if not entry.isdigit() or not entry.startswith("0"):
        raise ValueError("pool entry %r is not a national number, prefix or range" % entry)
    if len(entry) >= NUMBER_LENGTH - 1 and NATIONAL_RE.fullmatch(entry):
        return [entry]
    free_digits = NUMBER_LENGTH - len(entry)
    if 10 ** free_digits > LARGEST_PREFIX_EXPANSION:
        raise ValueError("pool prefix %r names more than %d numbers; give a range" % (entry, LARGEST_PREFIX_EXPANSION))
    return ["%s%0*d" % (entry, free_digits, value) for value in range(10 ** free_digits)]


def pattern_regex(pattern, prefix=False):
    """An ALLO/ALTEN pattern (``_`` = any one digit) as a compiled regex for whole numbers; an ALIST ``prefix`` for their start."""
    return re.compile("".join("[0-9]" if char == "_" else re.escape(char) for char in pattern) + ("[0-9]*" if prefix else ""))


@dataclasses.dataclass
class EmergencyRecord:
    """999 data for one number, as sent with INFO <n> 999 ..."""

    fields: dict = dataclasses.field(default_factory=dict)
    status: int = 1
    polls_until_accepted: int = 0


@dataclasses.dataclass
class NumberRecord:
    """One telephone number and everything the account has configured on it."""

    number: str
    owner: str = FREE
    ported: bool = False
    expiry: datetime.date | None = None
    previous_owner: str | None = None
    targets: list = dataclasses.field(default_factory=lambda: ["", "", ""])
    order: dict = dataclasses.field(default_factory=dict)
    pin: str = ""
    features: set = dataclasses.field(default_factory=set)
    general_info: str = ""
    emergency: EmergencyRecord | None = None
    block: str | None = None

    @property
    def active(self):
        return self.owner == OURS

    @property
    def reactivatable(self):
        return self.owner == FREE and self.previous_owner == OURS

    def configure_afresh(self, expiry):
        """Start a new tenancy for this account: nothing of a previous one survives."""
        self.owner = OURS
        self.expiry = expiry
        self.previous_owner = None
        self.targets = ["", "", ""]
        self.order = {}
        self.pin = ""
        self.features = set()
        self.general_info = ""
        self.emergency = None
        self.block = None

    def release(self):
        """Back to the pool; the configuration is kept so REAC can restore it."""
        self.owner = FREE
        self.previous_owner = OURS

    def give_to_other_account(self):
        self.owner = OTHER
        self.previous_owner = None
        self.block = None


class NumberRegistry:
    """Thread-safe state of the numbers one NTSAPI account can see and change.

    ``pool``: entries ('first-last', a full number or a prefix) free for allocation.
    ``taken``: numbers held by another account. ``ported``: numbers ported in to
    this account, addressed as P<digits> in SET, ORDE, STAT (and INFO).
    ``deferred_999``: VALIDATE answers ``1 Parsed OK...`` and STATUS goes
    3 (submitted) once before 0 (accepted), instead of ``0 Information Valid``.
    ``lost_allocations``: the first N ALLO answers are taken by another account
    before ACTI can follow (the race clients must retry).
    """

    def __init__(self, account="MAG000001", pool=None, taken=None, ported=None, term_days=365,
                 deferred_999=False, lost_allocations=0, seed=0, today=None):
        self.account = account
        self._lock = threading.RLock()
        self._term = datetime.timedelta(days=term_days)
        self._deferred_999 = deferred_999
        self._random = random.Random(seed)
        self._today = today or datetime.date.today
        self._races = lost_allocations
        self._deactivated_blocks = {}
        self._numbers = {}
        for entry in DEFAULT_POOL if pool is None else pool:
            for number in expand_pool_entry(entry):
                self._numbers[number] = NumberRecord(number)
        for number in DEFAULT_TAKEN if taken is None else taken:
            self._numbers[number] = NumberRecord(number, owner=OTHER)
        for number in DEFAULT_PORTED if ported is None else ported:
            self._numbers[number] = NumberRecord(number, owner=OURS, ported=True, expiry=self._expiry())
        self._ordered = sorted(self._numbers)

    # -- helpers (call with the lock held) ------------------------------------------------

    def _expiry(self):
        return self._today() + self._term

    def _record(self, token, ported_form=False):
        """The record ``token`` names; P<digits> only where ``ported_form`` allows it."""
        if PORTED_RE.fullmatch(token):
            if not ported_form:
                raise NtsError("Ported form %s is accepted by SET, ORDE, STAT and INFO only" % token)
            record = self._numbers.get("0" + token[1:])
            if record is None or not record.ported or record.owner != OURS:
                raise NtsError("Number %s is not ported to this account" % token)
            return record
        if not (NATIONAL_RE.fullmatch(token) or INTERNATIONAL_RE.fullmatch(token)):
            raise NtsError("Invalid number %s" % token)
        return self._numbers.get(token) or NumberRecord(token, owner=OTHER)

    def _own(self, token, ported_form=False, or_reactivatable=False):
        """The record of a number this account holds (or may still REAC), else NtsError.

        Where the P form is accepted (``ported_form``), a ported number must be given in it.
        """
        record = self._record(token, ported_form)
        if not (record.active or (or_reactivatable and record.reactivatable)):
            raise NtsError("Number %s is not allocated to this account" % token)
        if record.ported and ported_form and not token.startswith("P"):
            raise NtsError("Number %s is ported: address it as P%s" % (token, token[1:]))
        return record

    def _matching_free(self, pattern, prefix=False):
        regex = pattern_regex(pattern, prefix)
        return [number for number in self._ordered if self._numbers[number].owner == FREE and regex.fullmatch(number)]

    # -- allocation ---------------------------------------------------------------------

    def allocate(self, pattern):
        """ALLO: the first free number matching ``pattern``; nothing is reserved."""
        with self._lock:
            if not PATTERN_RE.fullmatch(pattern):
                raise NtsError("Invalid pattern %s: give a whole number (10 or 11 digits), _ for any one digit" % pattern)
            candidates = self._matching_free(pattern)
            if not candidates:
                raise NtsError(NO_NUMBER_FOUND)
            number = candidates[0]
            if self._races:
                # Another account activates it between our ALLO and ACTI.
                self._races -= 1
                self._numbers[number].give_to_other_account()
            return number

    def activate(self, number):
        with self._lock:
            record = self._record(number)
            if record.owner != FREE:
                raise NtsError(NOT_ACTIVATED)
            record.configure_afresh(self._expiry())

    def deactivate(self, number):
        with self._lock:
            record = self._own(number)
            if record.ported:
                raise NtsError("Number %s is ported in and cannot be deactivated" % number)
            if record.block:
                raise NtsError("Number %s is in the block starting %s: use BLKDEAC" % (number, record.block))
            record.release()

    def reactivate(self, number):
        with self._lock:
            record = self._record(number)
            if not record.reactivatable:
                raise NtsError("Number %s cannot be reactivated" % number)
            if record.block:
                raise NtsError("Number %s is in the block starting %s: use BLKREAC" % (number, record.block))
            record.owner = OURS
            record.previous_owner = None
            record.expiry = self._expiry()

    def find_range(self, pattern):
        """ALTEN: ten free numbers that differ only in their last digit (0 to 9), named as their first digits and ``_``.

        Nothing is reserved: clients follow with ALLO and ACTI for each of the ten, as Magrathea::API 0.9 does.
        """
        with self._lock:
            if not PATTERN_RE.fullmatch(pattern):
                raise NtsError("Invalid pattern %s: give a whole number (10 or 11 digits), _ for any one digit" % pattern)
            stem_regex = pattern_regex(pattern[:-1])
            for number in self._ordered:
                stem = number[:-1]
                if len(number) != len(pattern) or not number.endswith("0") or not stem_regex.fullmatch(stem):
                    continue
                if all(self._numbers.get(stem + digit, NumberRecord(stem, owner=OTHER)).owner == FREE for digit in "0123456789"):
                    return stem + "_"
            raise NtsError(NO_RANGE_FOUND)

    def available(self, prefix, quantity):
        """ALIST: up to ``quantity`` free numbers starting with ``prefix``, in no set order."""
        with self._lock:
            if not PREFIX_RE.fullmatch(prefix):
                raise NtsError("Invalid prefix %s" % prefix)
            candidates = self._matching_free(prefix, prefix=True)
            if not candidates:
                raise NtsError(NO_RANGE_FOUND)
            return self._random.sample(candidates, min(quantity, len(candidates)))

    # -- configuration ------------------------------------------------------------------

    def describe(self, token, ported_form=True):
        """STAT: dict with number (as asked), active, expiry (date), targets (three strings)."""
        with self._lock:
            record = self._own(token, ported_form, or_reactivatable=True)
            return {"number": token, "active": record.active, "expiry": record.expiry, "targets": list(record.targets)}

    def status(self, number):
        """REST number/status: {status, expiry, targets:[{index, value}]} or None when not ours."""
        with self._lock:
            record = self._numbers.get(number)
            if record is not None and record.ported:
                number = "P" + number[1:]
            try:
                view = self.describe(number)
            except NtsError:
                return None
        return {
            "status": "active" if view["active"] else "inactive",
            "expiry": view["expiry"].isoformat(),
            "targets": [{"index": index, "value": value} for index, value in enumerate(view["targets"], 1) if value],
        }

    def set_target(self, token, index, target):
        with self._lock:
            record = self._own(token, ported_form=True)
            if index not in (1, 2, 3):
                raise NtsError("Invalid index %s: use 1, 2 or 3" % index)
            if not valid_target(target):
                raise NtsError("Invalid target %s" % target)
            record.targets[index - 1] = target

    def set_order(self, token, index, periods):
        with self._lock:
            record = self._own(token, ported_form=True)
            if index not in (1, 2, 3):
                raise NtsError("Invalid index %s: use 1, 2 or 3" % index)
            if not PERIODS_RE.fullmatch(periods):
                raise NtsError("Invalid periods %s: use HHMM or HHMM-HHMM, comma separated" % periods)
            record.order[index] = periods

    def set_pin(self, token, pin):
        """SPIN: set the PIN, or remove it when ``pin`` is empty."""
        with self._lock:
            record = self._own(token)
            if pin and not PIN_RE.fullmatch(pin):
                raise NtsError("Invalid PIN: use 4 to 8 digits")
            record.pin = pin

    def set_feature(self, token, letter, enabled=True):
        with self._lock:
            record = self._own(token)
            if not FEATURE_RE.fullmatch(letter):
                raise NtsError("Invalid feature %s: use one letter A-Z" % letter)
            if enabled:
                record.features.add(letter)
            else:
                record.features.discard(letter)

    def features(self, token):
        with self._lock:
            return "".join(sorted(self._own(token).features))

    def set_general_info(self, token, text):
        with self._lock:
            record = self._own(token, ported_form=True)
            if not text or len(text) > GENERAL_INFO_LIMIT:
                raise NtsError("Information must be 1 to %d characters" % GENERAL_INFO_LIMIT)
            record.general_info = text

    def configuration(self, token):
        """Everything configured on a number held by this account (for tests and REST)."""
        with self._lock:
            record = self._record(token, ported_form=True)
            return dataclasses.asdict(record)

    # -- 999 emergency data ---------------------------------------------------------------

    def _emergency(self, token):
        record = self._own(token, ported_form=True)
        if record.emergency is None:
            raise NtsError("No record found: send CREATE first", code=2)
        return record.emergency

    def emergency_create(self, token):
        with self._lock:
            record = self._own(token, ported_form=True)
            record.emergency = EmergencyRecord()

    def emergency_set(self, token, field, value):
        with self._lock:
            emergency = self._emergency(token)
            value = " ".join(value.split())
            if field == "POSTCODE":
                postcode = normalise_postcode(value)
                if postcode is None:
                    raise NtsError("Invalid postcode %s" % value, code=2)
                value = postcode
            elif len(value) > EMERGENCY_FIELDS[field]:
                raise NtsError("%s is longer than %d characters" % (field, EMERGENCY_FIELDS[field]), code=2)
            if value:
                emergency.fields[field] = value
            else:
                emergency.fields.pop(field, None)
            emergency.status = 1

    def emergency_validate(self, token):
        """VALIDATE: 0 when accepted at once, 1 when parsed and checked later."""
        with self._lock:
            emergency = self._emergency(token)
            missing = [field for field in ("NAME", "POSTCODE") if not emergency.fields.get(field)]
            if missing:
                raise NtsError("Missing %s: NAME and POSTCODE are required" % " and ".join(missing), code=2)
            if self._deferred_999:
                emergency.status, emergency.polls_until_accepted = 3, 1
                return 1
            emergency.status = 0
            return 0

    def emergency_status(self, token):
        """STATUS digit: 0 Accepted, 1 received, 3 submitted, 9 no record..."""
        with self._lock:
            record = self._own(token, ported_form=True)
            emergency = record.emergency
            if emergency is None:
                return 9
            status = emergency.status
            if status == 3:
                if emergency.polls_until_accepted:
                    emergency.polls_until_accepted -= 1
                else:
                    emergency.status = status = 0
            return status

    def emergency_data(self, token):
        """DATA: (FIELD, value) pairs in the published field order; raises when there is no record."""
        with self._lock:
            record = self._own(token, ported_form=True)
            if record.emergency is None:
                raise NtsError(EMERGENCY_STATUS_TEXT[9], code=9)
            fields = record.emergency.fields
            return [(field, fields[field]) for field in EMERGENCY_FIELDS if field in fields]

    # -- blocks -----------------------------------------------------------------------

    def activate_block(self, prefix, quantity):
        """BLKACTI: activate ``quantity`` consecutive free numbers aligned on the block size; (first, last)."""
        with self._lock:
            if not prefix.isdigit() or len(prefix) > NUMBER_LENGTH:
                raise NtsError("Invalid prefix %s" % prefix)
            if quantity not in BLOCK_SIZES:
                raise NtsError("Invalid block size %s: use %s" % (quantity, ", ".join(map(str, BLOCK_SIZES))))
            free = set(self._matching_free(prefix.ljust(NUMBER_LENGTH, "_")))
            for first in sorted(free):
                if int(first) % quantity:
                    continue
                members = ["%0*d" % (NUMBER_LENGTH, int(first) + offset) for offset in range(quantity)]
                if all(member in free for member in members):
                    for member in members:
                        self._numbers[member].configure_afresh(self._expiry())
                        self._numbers[member].block = first
                    self._deactivated_blocks.pop(first, None)
                    return first, members[-1]
            raise NtsError(NO_RANGE_FOUND)

    def _block_members(self, first):
        return [number for number in self._ordered if self._numbers[number].block == first]

    def block_info(self, number):
        """BLKINFO: (first, quantity) of the active block holding ``number``."""
        with self._lock:
            record = self._record(number)
            if record.owner != OURS or not record.block:
                raise NtsError(NOT_IN_BLOCK)
            return record.block, len(self._block_members(record.block))

    def deactivate_block(self, first):
        with self._lock:
            record = self._record(first)
            if record.owner != OURS or record.block != first:
                raise NtsError("%s is not the first number of an active block" % first)
            members = self._block_members(first)
            for member in members:
                self._numbers[member].release()
            self._deactivated_blocks[first] = members

    def reactivate_block(self, first):
        with self._lock:
            self._record(first)
            members = self._deactivated_blocks.get(first)
            if not members or not all(self._numbers[member].reactivatable for member in members):
                raise NtsError("Block starting %s cannot be reactivated" % first)
            for member in members:
                record = self._numbers[member]
                record.owner, record.previous_owner, record.expiry = OURS, None, self._expiry()
            del self._deactivated_blocks[first]

    # -- what other accounts do (test hooks) ----------------------------------------------

    def take_by_other_account(self, number):
        """Another account activates ``number`` (if free): REAC of it must now fail."""
        with self._lock:
            record = self._numbers.get(number)
            if record is not None and record.owner == FREE:
                record.give_to_other_account()

    def lose_next_allocations(self, count):
        """The next ``count`` ALLO answers are taken by another account before ACTI can follow."""
        with self._lock:
            self._races += count
