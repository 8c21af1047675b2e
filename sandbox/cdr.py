# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Daily CDR files for the Magrathea sandbox.

Owns what the sandbox serves in its CDR directory: one ZIP per day holding one
CSV of that day's calls, with the column names Magrathea documents. Magrathea
publishes neither the file names nor the column order, so both are
configurable here; the content comes from a seed, so the same arguments give
the same bytes on every run.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import random
import time
import zipfile

KNOWN_COLUMNS = (
    "calldate", "calltime", "anumber", "bnumber", "origination", "dialled", "destination", "duration",
    "debit", "inbound", "outbound", "result", "cpacc", "cpstop", "LDLI", "PN", "privacy",
)
DEFAULT_NAME_FORMAT = "{account}_{date:%Y%m%d}.zip"
DEFAULT_SEED = "magrathea-sandbox"

# Ofcom's drama ranges: numbers that look real but never ring anyone.
_CALLER_PREFIXES = ("01632960", "07700900", "01134960", "01174960")
_ACCOUNT_NUMBER_PREFIX = "02079460"
_NETWORKS = ("BT", "VIRGIN", "VODAFONE", "O2", "EE", "THREE", "SIP")
_RESULTS = ("ANSWERED", "ANSWERED", "ANSWERED", "BUSY", "NOANSWER", "FAILED")
_TARGET_HOSTS = ("sip.example.net", "pbx.example.org")
_INBOUND_RATES = ("0.0010", "0.0025", "0.0100")
_OUTBOUND_RATES = ("0.0000", "0.0060", "0.0120")

# Bytes a one-member stored ZIP adds around its member: local header, central directory entry, end record.
_ZIP_OVERHEAD = 30 + 46 + 22


def _call_row(rng, calldate):
    """One call as a dict of the known columns.

    All fields come from one large random integer, cut with divmod: benchmarks
    write half a million of these, and one generator call per record is what
    keeps that to seconds.
    """
    bits = rng.getrandbits(160)
    bits, seconds = divmod(bits, 86400)
    bits, called = divmod(bits, 1000)
    bits, result = divmod(bits, len(_RESULTS))
    bits, duration = divmod(bits, 1800)
    bits, outbound = divmod(bits, len(_OUTBOUND_RATES))
    bits, inbound = divmod(bits, len(_INBOUND_RATES))
    bits, target = divmod(bits, 10 ** 7)
    bits, withheld = divmod(bits, 10)
    bits, caller = divmod(bits, 1000 * len(_CALLER_PREFIXES))
    bits, network = divmod(bits, len(_NETWORKS))
    bits, host = divmod(bits, len(_TARGET_HOSTS) + 1)
    bits, flags = divmod(bits, 32)
    bnumber = _ACCOUNT_NUMBER_PREFIX + "%03d" % called
    result = _RESULTS[result]
    duration = duration + 1 if result == "ANSWERED" else 0
    outbound = _OUTBOUND_RATES[outbound]
    target = "44" + bnumber[1:4] + "%07d" % target
    withheld = withheld == 0
    return {
        "calldate": calldate.isoformat(),
        "calltime": "%02d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60),
        "anumber": "" if withheld else _CALLER_PREFIXES[caller % len(_CALLER_PREFIXES)] + "%03d" % (caller // len(_CALLER_PREFIXES)),
        "bnumber": bnumber,
        "origination": _NETWORKS[network],
        "dialled": bnumber,
        "destination": "S:%s@%s" % (target, _TARGET_HOSTS[host - 1]) if host else target,
        "duration": str(duration),
        "debit": "%.4f" % (duration / 60 * float(outbound)),
        "inbound": _INBOUND_RATES[inbound],
        "outbound": outbound,
        "result": result,
        "cpacc": "YN"[flags & 1],
        "cpstop": "YN"[flags >> 1 & 1],
        "LDLI": "YN"[flags >> 2 & 1],
        "PN": "YN"[flags >> 3 & 1],
        "privacy": "Y" if withheld else "N",
    }


def _csv_line(values):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


def cdr_csv(calldate, account=None, rows=20, columns=KNOWN_COLUMNS, headers=None, seed=DEFAULT_SEED, min_bytes=0):
    """The CSV text of one day's calls.

    ``columns`` picks and orders the known columns; ``headers`` maps a known
    column to the name written in the header line. At least ``rows`` calls are
    written, more while the text is shorter than ``min_bytes``.
    """
    unknown = [name for name in columns if name not in KNOWN_COLUMNS]
    if unknown:
        raise ValueError("unknown CDR columns %s; known: %s" % (", ".join(unknown), ", ".join(KNOWN_COLUMNS)))
    headers = headers or {}
    rng = random.Random("%s|%s|%s" % (seed, account, calldate.isoformat()))
    header = _csv_line([headers.get(name, name) for name in columns])
    calls, length = [], len(header)
    while len(calls) < rows or length < min_bytes:
        call = _call_row(rng, calldate)
        line = ",".join([call[name] for name in columns]) + "\r\n"  # the values hold no comma or quote
        calls.append((call["calltime"], line))
        length += len(line)
    return header + "".join(line for calltime, line in sorted(calls))


def _parse_date(value):
    if value is None or isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(value)


# Magrathea publishes the file for a day's calls at 01:00 UTC the next day.
_PUBLISHED_AFTER = datetime.timedelta(days=1, hours=1)
# How long the newest default file has been out: long enough for a sync and its rerun to agree (a file that changed in
# the minute a listing shows, or minutes before, needs an MDTM on the rerun, and cdr_sync then rewrites its manifest).
_SETTLED = datetime.timedelta(hours=1)


def _published_at(calldate):
    return datetime.datetime.combine(calldate, datetime.time(0, 0), datetime.timezone.utc) + _PUBLISHED_AFTER


def _newest_settled(now):
    """The call date of the newest file that had been published for _SETTLED at ``now`` (seconds since the epoch)."""
    moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc) - _SETTLED - _PUBLISHED_AFTER
    return moment.date()


def write_cdr_zip(path, calldate, csv_text, compress=True, now=None):
    """Write ``csv_text`` as the only member of the ZIP ``path`` (member named like the ZIP, ending .csv).

    Its mtime is when Magrathea publishes the file, or ``now`` if that is still to come.
    """
    member = zipfile.ZipInfo(os.path.splitext(os.path.basename(path))[0] + ".csv", date_time=(calldate.year, calldate.month, calldate.day, 23, 59, 58))
    member.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    member.external_attr = 0o644 << 16
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, csv_text.encode("utf-8"))
    available = min(_published_at(calldate).timestamp(), time.time() if now is None else now)
    os.utime(path, (available, available))


def generate_cdr_files(directory, count=7, name_format=DEFAULT_NAME_FORMAT, account="MAG000001", start=None, rows=20, size=None,
                       columns=KNOWN_COLUMNS, headers=None, seed=DEFAULT_SEED, now=None):
    """Write ``count`` daily CDR ZIP files into ``directory``; returns their paths, oldest first.

    ``start`` (a date or YYYY-MM-DD) is the first call date; by default the
    files end with the newest one published an hour or more before ``now``
    (seconds since the epoch; the clock by default): yesterday's calls from
    02:00 UTC, the day before's until then. ``name_format`` is formatted with
    ``account`` and ``date``. Each file's mtime is when it was published,
    01:00 UTC the day after its call date. With ``size`` the CSV is stored
    uncompressed and grown with calls until the ZIP is about ``size`` bytes.
    """
    now = time.time() if now is None else now
    start = _parse_date(start) or _newest_settled(now) - datetime.timedelta(days=count - 1)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for offset in range(count):
        calldate = start + datetime.timedelta(days=offset)
        path = os.path.join(directory, name_format.format(account=account, date=calldate))
        min_bytes = size - _ZIP_OVERHEAD - 2 * len(os.path.basename(path)) if size else 0
        text = cdr_csv(calldate, account=account, rows=rows, columns=columns, headers=headers, seed=seed, min_bytes=min_bytes)
        write_cdr_zip(path, calldate, text, compress=not size, now=now)
        paths.append(path)
    return paths
