#!/usr/bin/env python
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CDR sync benchmark (make bench-cdr): magrathea.secure.cdr_sync against lftp mirror, on one strict vsftpd.

    .venv/bin/python tests/bench/bench_cdr.py [--files 500] [--size 102400] [--rounds 3] [--lftp-rounds 1] [--noop-rounds 7]

Starts its own sandbox with the real vsftpd (explicit FTPS, TLS session reuse required, no MLSD) on loopback,
serving --files CDR ZIPs of --size bytes, then measures whole-process wall time, in one run, of:

  - ``ansible localhost -m ping`` (the floor every module run pays),
  - ``ansible localhost -m magrathea.secure.cdr_sync`` full sync into an empty directory, and the no-op re-sync,
  - ``lftp mirror`` (sequential) and ``lftp mirror --parallel=4``, full and no-op, configured the way
    Magrathea's guide asks (what the magrathea.secure.lftp role writes), password from ~/.netrc.

Every copy is checked to be byte-identical to the server's files. Each figure is the best of its rounds (the
machine's other load only ever adds time); medians are printed too. The ping and the no-op re-sync cost about two
seconds each and the ping alone varies by 0.3 s from run to run here, so they are measured in --noop-rounds
alternating pairs (ping, then re-sync), and the median of the pairs' differences is printed beside the best-vs-best
difference the target is judged on. The last lines are the ratios, one per
line as ``RATIO <name> <value>``. Exit status 1 when a target of issue 4 is missed:
full sync <= 0.25x sequential lftp and <= 0.8x lftp --parallel=4; no-op re-sync within 0.5 s of the ping.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
ANSIBLE = os.path.join(BIN, 'ansible')
LFTP = shutil.which('lftp') or '/usr/bin/lftp'
MODULE = 'magrathea.secure.cdr_sync'
TARGETS = {
    'cdr_sync_full_vs_lftp_mirror': 0.25,
    'cdr_sync_full_vs_lftp_mirror_parallel4': 0.8,
    'cdr_sync_noop_minus_ansible_ping_seconds': 0.5,
}

# The settings of the magrathea.secure.lftp role (the guide's, plus bounded retries and temporary names).
LFTP_RC = """\
set ftp:ssl-force yes
set ftp:ssl-auth TLS
set ftp:ssl-protect-data yes
set ftp:ssl-protect-list yes
set ssl:check-hostname yes
set ssl:verify-certificate yes
set ssl:ca-file "{ca_file}"
set net:max-retries 5
set net:timeout 30
set net:reconnect-interval-base 5
set net:reconnect-interval-max 60
set xfer:use-temp-file yes
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--files', type=int, default=500)
    parser.add_argument('--size', type=int, default=100 * 1024)
    parser.add_argument('--rounds', type=int, default=3, help='rounds of every measurement but sequential lftp')
    parser.add_argument('--lftp-rounds', type=int, default=1, help='rounds of the (slow) sequential lftp mirror')
    parser.add_argument('--noop-rounds', type=int, default=7, help='alternating pairs of ping and no-op re-sync')
    parser.add_argument('--parallel', type=int, default=4, help="cdr_sync's parallel (its default is 4)")
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    return parser.parse_args()


def timed(argv, env, cwd=ROOT, what=None):
    """Wall seconds of one whole process; raises with its output when it fails."""
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError('%s failed (rc %d):\n%s\n%s' % (what or argv[0], done.returncode, done.stdout[-3000:], done.stderr[-3000:]))
    return elapsed, done.stdout


def digest_tree(directory):
    """name -> SHA-256 of the regular files directly in ``directory`` (not cdr_sync's own dot files)."""
    result = {}
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith('.'):
            with open(entry.path, 'rb') as handle:
                result[entry.name] = hashlib.sha256(handle.read()).hexdigest()
    return result


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.sandbox = os.path.join(work, 'sandbox')
        self.samples = {}
        self.settings = None
        self.env = None
        self.lftp_env = None
        self.source = None

    def record(self, name, seconds):
        self.samples.setdefault(name, []).append(seconds)

    def best(self, name):
        return min(self.samples[name])

    def up(self):
        # vsftpd's throwaway user must be able to reach the FTP root: every directory on the way is searchable.
        os.makedirs(self.sandbox, mode=0o755)
        os.chmod(self.work, 0o755)
        started = time.monotonic()
        timed([sys.executable, '-m', 'sandbox', 'up', '--dir', self.sandbox, '--ftps', 'vsftpd',
               '--cdr-files', str(self.args.files), '--cdr-size', str(self.args.size)], dict(os.environ), what='sandbox up')
        print('sandbox: vsftpd with %d files of %d bytes, up in %.1f s' % (self.args.files, self.args.size, time.monotonic() - started))
        with open(os.path.join(self.sandbox, 'sandbox.json'), encoding='utf-8') as handle:
            self.settings = json.load(handle)
        self.env = dict(os.environ, **self.settings)
        self.env['ANSIBLE_NOCOLOR'] = '1'
        self.source = digest_tree(self.settings['MAGRATHEA_CDR_LOCAL_DIR'])
        if len(self.source) != self.args.files:
            raise RuntimeError('the sandbox serves %d files, not %d' % (len(self.source), self.args.files))
        self._lftp_home()

    def _lftp_home(self):
        home = os.path.join(self.work, 'lftp-home')
        os.makedirs(home, mode=0o700)
        with open(os.path.join(home, '.lftprc'), 'w', encoding='utf-8') as handle:
            handle.write(LFTP_RC.format(ca_file=self.settings['MAGRATHEA_CA_FILE']))
        descriptor = os.open(os.path.join(home, '.netrc'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, 'w', encoding='utf-8') as handle:
            settings = self.settings
            handle.write('machine %s login %s password %s\n'
                         % (settings['MAGRATHEA_CDR_HOST'], settings['MAGRATHEA_CDR_USERNAME'], settings['MAGRATHEA_CDR_PASSWORD']))
        self.lftp_env = {key: value for key, value in os.environ.items() if not key.startswith('MAGRATHEA_')}
        self.lftp_env['HOME'] = home

    def down(self):
        subprocess.run([sys.executable, '-m', 'sandbox', 'down', '--dir', self.sandbox], cwd=ROOT, capture_output=True, check=False)

    def check_copy(self, directory, who):
        copy = digest_tree(directory)
        if copy != self.source:
            missing = sorted(set(self.source) - set(copy))
            differing = sorted(name for name in self.source if name in copy and copy[name] != self.source[name])
            raise RuntimeError('%s: %s is not a byte-identical copy (%d missing, %d differ, e.g. %s)'
                               % (who, directory, len(missing), len(differing), (missing + differing)[:3]))

    # -- contenders ---------------------------------------------------------------------

    def ping(self):
        seconds, dummy = timed([ANSIBLE, 'localhost', '-m', 'ping'], self.env, what='ansible -m ping')
        self.record('ansible -m ping', seconds)

    def module(self, dest, label):
        argv = [ANSIBLE, 'localhost', '-m', MODULE, '-a', 'dest=%s parallel=%d' % (dest, self.args.parallel)]
        seconds, output = timed(argv, self.env, what='ansible -m %s' % MODULE)
        self.record(label, seconds)
        return output

    def lftp(self, dest, parallel, label):
        option = ' --parallel=%d' % parallel if parallel > 1 else ''
        command = 'mirror%s %s %s; quit' % (option, self.settings['MAGRATHEA_CDR_DIR'], dest)
        argv = [LFTP, '-e', command, '-p', self.settings['MAGRATHEA_CDR_PORT'], self.settings['MAGRATHEA_CDR_HOST']]
        seconds, dummy = timed(argv, self.lftp_env, cwd=self.work, what='lftp mirror%s' % option)
        self.record(label, seconds)

    # -- the run ----------------------------------------------------------------------

    def run(self):
        rounds = self.args.rounds
        self.ping()  # warm-up: byte-compiled files, page cache; not recorded below
        self.samples.clear()

        for round_index in range(rounds):
            dest = os.path.join(self.work, 'cdr_sync-%d' % round_index)
            output = self.module(dest, 'cdr_sync full sync')
            if 'CHANGED' not in output:
                raise RuntimeError('the full sync reported no change:\n%s' % output[-2000:])
            self.check_copy(dest, 'cdr_sync')
        for dummy in range(self.args.noop_rounds):
            self.ping()
            output = self.module(dest, 'cdr_sync no-op re-sync')
            if 'SUCCESS' not in output or '"changed": false' not in output:
                raise RuntimeError('the re-sync was not a no-op:\n%s' % output[-2000:])

        for round_index in range(self.args.lftp_rounds):
            dest = os.path.join(self.work, 'lftp-%d' % round_index)
            self.lftp(dest, 1, 'lftp mirror full sync')
            self.check_copy(dest, 'lftp mirror')
        self.lftp(dest, 1, 'lftp mirror no-op re-sync')

        for round_index in range(rounds):
            dest = os.path.join(self.work, 'lftp-p4-%d' % round_index)
            self.lftp(dest, 4, 'lftp mirror --parallel=4 full sync')
            self.check_copy(dest, 'lftp mirror --parallel=4')
        for dummy in range(rounds):
            self.lftp(dest, 4, 'lftp mirror --parallel=4 no-op re-sync')

    def report(self):
        megabytes = self.args.files * self.args.size / 1e6
        print()
        print('%-42s %9s %9s %6s   (%d files, %.1f MB, whole-process wall time)' % ('', 'best s', 'median s', 'runs', self.args.files, megabytes))
        for name, values in self.samples.items():
            print('%-42s %9.3f %9.3f %6d' % (name, min(values), statistics.median(values), len(values)))
        full = self.best('cdr_sync full sync')
        print()
        print('cdr_sync full sync: %.1f MB/s over the whole process' % (megabytes / full))
        pairs = zip(self.samples['ansible -m ping'], self.samples['cdr_sync no-op re-sync'])
        print('no-op re-sync minus ping, median of %d alternating pairs: %.3f s'
              % (self.args.noop_rounds, statistics.median(noop - ping for ping, noop in pairs)))
        ratios = {
            'cdr_sync_full_vs_lftp_mirror': full / self.best('lftp mirror full sync'),
            'cdr_sync_full_vs_lftp_mirror_parallel4': full / self.best('lftp mirror --parallel=4 full sync'),
            'cdr_sync_noop_vs_ansible_ping': self.best('cdr_sync no-op re-sync') / self.best('ansible -m ping'),
            'cdr_sync_noop_minus_ansible_ping_seconds': self.best('cdr_sync no-op re-sync') - self.best('ansible -m ping'),
        }
        missed = [name for name, limit in TARGETS.items() if ratios[name] > limit]
        for name, limit in TARGETS.items():
            print('target %-44s %.3f <= %s: %s' % (name, ratios[name], limit, 'missed' if name in missed else 'met'))
        print()
        for name, value in ratios.items():
            print('RATIO %s %.3f' % (name, value))
        return 1 if missed else 0


def main():
    args = parse_args()
    if not os.access(LFTP, os.X_OK):
        print('bench_cdr: lftp is not installed (apt-get install lftp)', file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix='bench-cdr-')
    bench = Bench(args, work)
    try:
        bench.up()
        bench.run()
    except RuntimeError as exc:
        print('bench_cdr: %s' % exc, file=sys.stderr)
        return 2
    finally:
        bench.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return bench.report()


if __name__ == '__main__':
    sys.exit(main())
