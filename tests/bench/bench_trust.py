# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""make bench-trust: what a no-op costs with the trust modules and the trust role.

    .venv/bin/python tests/bench/bench_trust.py

1. On one keystore (a copy of this host's JDK cacerts, 140-odd entries, already holding
   the sandbox root) and one certificate, the whole-process time of
   ``ansible localhost -m ping``, ``-m magrathea.secure.java_trust`` and
   ``-m community.general.java_cert`` (both a no-op), in interleaved rounds of one
   run. A module's own cost is its time minus ping's in the same round, the median
   over the rounds. Other figures are the best of the rounds (other processes on the
   machine can only add time); medians are shown too.
2. The magrathea.secure.trust role's no-op run (ansible-playbook, whole process) on
   a host with the system store (a private copy: unshare -m, as root), one JDK
   keystore and two NSS databases, including its trust_check against a sandbox,
   alternating with a playbook of four different ansible.builtin modules that change
   nothing (the floor of any role that runs four different modules).

community.general comes from the ``ansible`` PyPI package matching ansible-core
2.19 (12.x), installed with ``pip install --no-deps --target DIR ansible==12.3.0``;
DIR is $TRUST_BENCH_ANSIBLE_PKG (default /tmp/ansible-pkg), put on
ANSIBLE_COLLECTIONS_PATH after this checkout's collection path.

Prints the figures, then the ratios as ``RATIO <name> <value>`` on the last lines:
java_trust_vs_java_cert (own cost of java_trust / own cost of java_cert, at most 0.5)
and trust_role_noop_vs_5s (the role's no-op seconds / 5, under 1).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, '.venv', 'bin')
PYTHON = os.path.join(BIN, 'python')
PRIVATE_ROOT = os.path.join(ROOT, 'tests', 'integration', 'targets', 'setup_private_root', 'files', 'in_private_root.sh')
JDK_STORE = '/etc/ssl/certs/java/cacerts'
ALIAS = 'magrathea-bench'
ROUNDS = int(os.environ.get('TRUST_BENCH_ROUNDS', '5'))
PKG = os.environ.get('TRUST_BENCH_ANSIBLE_PKG', '/tmp/ansible-pkg')

# The same host, four different ansible.builtin modules that change nothing: the floor any role running four
# different modules pays, since Ansible builds (and caches for the rest of the run) one payload per module name.
FLOOR_PLAYBOOK = '''---
- name: Four different modules that change nothing, for scale
  hosts: localhost
  gather_facts: false
  tasks:
    - {name: One, ansible.builtin.ping: {}}
    - {name: Two, ansible.builtin.stat: {path: /}}
    - {name: Three, ansible.builtin.file: {path: /tmp, state: directory}}
    - {name: Four, ansible.builtin.wait_for: {path: /, timeout: 1}}
'''

ROLE_PLAYBOOK = '''---
- name: The trust role on the system store, one JDK keystore and two NSS databases
  hosts: localhost
  gather_facts: false
  roles:
    - role: magrathea.secure.trust
      vars:
        trust_ca_src: "{{ ca_file }}"
        trust_java_keystores: ["{{ keystore }}"]
        trust_browser_nssdbs: "{{ nssdbs }}"
        trust_check_enabled: true
        trust_check_endpoints: "{{ endpoints }}"
'''


def environment():
    env = dict(os.environ)
    env['ANSIBLE_COLLECTIONS_PATH'] = os.pathsep.join([os.path.join(ROOT, '.ansible', 'collections'), PKG])
    env['ANSIBLE_NOCOLOR'] = '1'
    env.pop('ANSIBLE_CONFIG', None)
    return env


def timed(argv, env, expect_unchanged=True):
    """Seconds of one whole process; fails loudly when it did not succeed or changed something."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or (expect_unchanged and ('CHANGED' in proc.stdout or 'changed: [' in proc.stdout)):
        sys.exit('bench-trust: %s did not run as a no-op (rc %d):\n%s' % (' '.join(argv[:4]), proc.returncode, proc.stdout[-3000:]))
    return elapsed


def check_community_general():
    manifest = os.path.join(PKG, 'ansible_collections', 'community', 'general', 'MANIFEST.json')
    if not os.path.exists(manifest):
        sys.exit('bench-trust: community.general not found under %s; install the ansible package that matches ansible-core 2.19 with\n'
                 '  %s -m pip install --no-deps --target %s ansible==12.3.0\n(or point TRUST_BENCH_ANSIBLE_PKG at such a directory)'
                 % (PKG, PYTHON, PKG))
    with open(manifest, encoding='utf-8') as handle:
        version = json.load(handle)['collection_info']['version']
    release = [name for name in os.listdir(PKG) if name.startswith('ansible-') and name.endswith('.dist-info')]
    return version, release[0][len('ansible-'):-len('.dist-info')] if release else 'unknown'


def make_pki(directory):
    sys.path.insert(0, ROOT)
    from sandbox import pki  # the sandbox's throwaway CA; the bench never trusts anything real
    authority = pki.CertificateAuthority('Magrathea Bench Root')
    path = os.path.join(directory, 'ca.pem')
    with open(path, 'wb') as handle:
        handle.write(pki.certificate_pem(authority.certificate))
    return path


def bench_modules(work, env):
    """Interleaved rounds of ping, java_trust and java_cert on the same keystore and certificate."""
    ca_file = make_pki(work)
    keystore = os.path.join(work, 'cacerts')
    shutil.copy(JDK_STORE, keystore)
    secrets = os.path.join(work, 'secrets.json')
    with os.fdopen(os.open(secrets, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as handle:
        json.dump({'bench_keystore_pass': 'changeit'}, handle)
    commands = {
        'ping': [os.path.join(BIN, 'ansible'), 'localhost', '-m', 'ping'],
        'java_trust': [os.path.join(BIN, 'ansible'), 'localhost', '-m', 'magrathea.secure.java_trust', '-a',
                       json.dumps({'src': ca_file, 'keystores': [keystore], 'alias': ALIAS})],
        'java_cert': [os.path.join(BIN, 'ansible'), 'localhost', '-m', 'community.general.java_cert', '-e', '@' + secrets, '-a',
                      json.dumps({'cert_path': ca_file, 'keystore_path': keystore, 'keystore_pass': '{{ bench_keystore_pass }}',
                                  'cert_alias': ALIAS})],
    }
    timed(commands['java_trust'], env, expect_unchanged=False)  # the one real import: the store now holds the root
    for command in commands.values():  # warm-up, and proof that both modules see a no-op
        timed(command, env)
    times = dict((name, []) for name in commands)
    names = list(commands)
    for round_index in range(ROUNDS):
        order = names[round_index % 3:] + names[:round_index % 3]
        for name in order:
            times[name].append(timed(commands[name], env))
    return times


def role_runs(work, rounds):
    """Inside the private mount namespace: the role's first run, then ``rounds`` no-op runs; JSON on stdout."""
    env = environment()
    playbook = os.path.join(work, 'bench_role.yml')
    argv = [os.path.join(BIN, 'ansible-playbook'), playbook, '-e', '@' + os.path.join(work, 'role_vars.json')]
    floor_argv = [os.path.join(BIN, 'ansible-playbook'), os.path.join(work, 'floor.yml')]
    first = timed(argv, env, expect_unchanged=False)
    noop, floor = [], []
    for dummy in range(rounds):
        noop.append(timed(argv, env))
        floor.append(timed(floor_argv, env))
    print(json.dumps({'first': first, 'noop': noop, 'floor': floor}))


def bench_role(work):
    subprocess.run([PYTHON, '-m', 'sandbox', 'up', '--dir', os.path.join(work, 'sandbox')], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    try:
        with open(os.path.join(work, 'sandbox', 'sandbox.json'), encoding='utf-8') as handle:
            sandbox = json.load(handle)
        keystore = os.path.join(work, 'role-cacerts')
        shutil.copy(JDK_STORE, keystore)
        nssdbs = [os.path.join(work, name) for name in ('chromium-nssdb', 'firefox-profile')]
        for path in nssdbs:
            os.mkdir(path, 0o700)
            subprocess.run(['certutil', '-N', '--empty-password', '-d', 'sql:' + path], check=True)
        with open(os.path.join(work, 'bench_role.yml'), 'w', encoding='utf-8') as handle:
            handle.write(ROLE_PLAYBOOK)
        with open(os.path.join(work, 'floor.yml'), 'w', encoding='utf-8') as handle:
            handle.write(FLOOR_PLAYBOOK)
        with open(os.path.join(work, 'role_vars.json'), 'w', encoding='utf-8') as handle:
            json.dump({'ca_file': sandbox['MAGRATHEA_CA_FILE'], 'keystore': keystore, 'nssdbs': nssdbs, 'endpoints': [
                {'name': 'NTSAPI', 'host': sandbox['MAGRATHEA_NTSAPI_HOST'], 'port': int(sandbox['MAGRATHEA_NTSAPI_PORT'])},
                {'name': 'CDR', 'host': sandbox['MAGRATHEA_CDR_HOST'], 'port': int(sandbox['MAGRATHEA_CDR_PORT']), 'protocol': 'ftps',
                 'fingerprint': sandbox['MAGRATHEA_CDR_SHA256']},
                {'name': 'REST', 'url': sandbox['MAGRATHEA_REST_URL']}]}, handle)
        proc = subprocess.run([PRIVATE_ROOT, PYTHON, os.path.abspath(__file__), '--role-runs', work, str(ROUNDS)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            sys.exit('bench-trust: the role runs failed (rc %d); run as root on a host with unshare' % proc.returncode)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([PYTHON, '-m', 'sandbox', 'down', '--dir', os.path.join(work, 'sandbox')], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == '--role-runs':
        role_runs(sys.argv[2], int(sys.argv[3]))
        return
    if os.geteuid() != 0:
        sys.exit('bench-trust: run as root (the role part uses a private mount namespace for the system store)')
    general_version, ansible_release = check_community_general()
    core = subprocess.run([os.path.join(BIN, 'ansible'), '--version'], stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()[0]
    work = tempfile.mkdtemp(prefix='magrathea-bench-trust-')
    os.chmod(work, 0o755)
    try:
        samples = bench_modules(work, environment())
        role = bench_role(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = dict((name, min(values)) for name, values in samples.items())
    # A module's own cost: per round, its time minus the same round's ping; the median over the rounds. Best-vs-best
    # is printed too, but one lucky ping (it varies by 0.3 s here) can make it negative.
    own = dict((name, statistics.median(value - ping for value, ping in zip(samples[name], samples['ping'])))
               for name in ('java_trust', 'java_cert'))
    role_noop = min(role['noop'])
    print('bench-trust: %s; community.general %s from the ansible %s package; best of %d rounds (median in brackets)'
          % (core, general_version, ansible_release, ROUNDS))
    print('  keystore: a copy of %s (JKS) already holding the certificate; every run a no-op' % JDK_STORE)
    for name in ('ping', 'java_trust', 'java_cert'):
        print('  ansible localhost -m %-28s %6.3f s  (%.3f s)  samples %s' % (
            {'ping': 'ping', 'java_trust': 'magrathea.secure.java_trust', 'java_cert': 'community.general.java_cert'}[name],
            best[name], statistics.median(samples[name]), ' '.join('%.2f' % value for value in samples[name])))
    print('  own cost (median over rounds of module minus ping): java_trust %.3f s, java_cert %.3f s; best minus best ping: %.3f s, %.3f s'
          % (own['java_trust'], own['java_cert'], best['java_trust'] - best['ping'], best['java_cert'] - best['ping']))
    print('  trust role (system store, one JDK keystore, two NSS databases, trust_check): first run %.2f s; no-op %.2f s (%.2f s)  samples %s'
          % (role['first'], role_noop, statistics.median(role['noop']), ' '.join('%.2f' % value for value in role['noop'])))
    floor = min(role['floor'])
    print('  for scale: a playbook of four different ansible.builtin modules that change nothing %.2f s (%.2f s)  samples %s;'
          % (floor, statistics.median(role['floor']), ' '.join('%.2f' % value for value in role['floor'])))
    print('  the role no-op is %.2f s above that floor; one ansible localhost -m ping takes %.2f s here'
          % (role_noop - floor, best['ping']))
    print('RATIO java_trust_vs_java_cert %.3f' % (own['java_trust'] / own['java_cert'] if own['java_cert'] > 0 else float('inf')))
    print('RATIO trust_role_noop_vs_5s %.3f' % (role_noop / 5.0))


if __name__ == '__main__':
    main()
