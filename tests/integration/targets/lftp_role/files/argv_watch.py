# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Watch every process's argv until told to stop; report whether a secret ever appeared in one.

    argv_watch.py --settings sandbox.json --key MAGRATHEA_CDR_PASSWORD --stop FILE --report FILE --ready FILE

The secret is read from the settings file, so it is not in this watcher's own argv.
The report (JSON) says how often /proc was scanned, whether an lftp process was
seen (proof that the watch covered the mirror) and which argv held the secret.
"""

import argparse
import json
import os
import time


def scan(secret, own_pid):
    seen_lftp, leaks = False, []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == own_pid:
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                argv = handle.read().split(b'\0')
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b'lftp':
            seen_lftp = True
        if any(secret in arg for arg in argv):
            leaks.append({'pid': int(entry), 'program': argv[0].decode('utf-8', 'replace')})
    return seen_lftp, leaks


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--settings', required=True)
    parser.add_argument('--key', required=True)
    parser.add_argument('--stop', required=True)
    parser.add_argument('--report', required=True)
    parser.add_argument('--ready', required=True)
    parser.add_argument('--max-seconds', type=float, default=300)
    args = parser.parse_args()
    with open(args.settings, encoding='utf-8') as handle:
        secret = json.load(handle)[args.key].encode()
    own_pid = os.getpid()
    scans, lftp_scans, leaks = 0, 0, []
    deadline = time.monotonic() + args.max_seconds
    open(args.ready, 'w', encoding='ascii').close()
    while not os.path.exists(args.stop) and time.monotonic() < deadline:
        seen_lftp, found = scan(secret, own_pid)
        scans += 1
        lftp_scans += seen_lftp
        leaks.extend(found)
        time.sleep(0.005)
    with open(args.report, 'w', encoding='utf-8') as handle:
        json.dump({'scans': scans, 'lftp_scans': lftp_scans, 'leaks': leaks}, handle)


if __name__ == '__main__':
    main()
