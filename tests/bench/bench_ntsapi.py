# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""NTSAPI at a UK data centre's distance: pipelined reads and one-session bulk changes against lock-step.

Starts a sandbox of its own and a delay line in front of its NTSAPI port that holds every
chunk 10 ms in each direction (20 ms round trip), then, in one run:

  stat_1000     magrathea.secure.ntsapi_number_info on 1,000 numbers (one task; the median of three runs,
                because a task's fixed cost swings with the machine's load), against a lock-step client
                sending the same 1,000 STATs one at a time through the same delay line;
  retarget_200  magrathea.secure.ntsapi_number moving 200 numbers to a new target in one task,
                against a loop of 200 single-number tasks doing the same to a newer target.

Task times are taken inside the playbook (timestamps before and after each task), so
ansible-playbook's start-up is not counted on either side. The playbook runs with
ANSIBLE_PIPELINING=1, as production controllers usually do: it trims Ansible's cost per task,
which shortens the loop (so the comparison is harder for the one-task side) and the bench.
Prints the figures, then one `RATIO <name> <value>` line per comparison, last.

    .venv/bin/python tests/bench/bench_ntsapi.py
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, '.ansible', 'collections'))

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_session import NtsapiSession  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.magrathea.secure.plugins.module_utils._tls import Endpoint  # noqa: E402 pylint: disable=wrong-import-position

ONE_WAY_DELAY = 0.010
STAT_NUMBERS = ['0179210%04d' % index for index in range(1000)]       # 01792100007 belongs to another account
RETARGET_NUMBERS = ['0179210%04d' % index for index in range(200, 400)]
SETUP_NUMBERS = [number for number in STAT_NUMBERS if number != '01792100007']


class DelayLine:
    """A TCP proxy on 127.0.0.1 that delivers every chunk ``delay`` seconds after it arrived, in order, both ways."""

    def __init__(self, upstream_port, delay):
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = None
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def stop(self):
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _shutdown(self):
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._connection, '127.0.0.1', 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _connection(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection('127.0.0.1', self.upstream_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(self._pump(client_reader, upstream_writer), self._pump(upstream_reader, client_writer))
        except asyncio.CancelledError:
            # stop() cancels connections still open; the bench is over.
            client_writer.close()
            upstream_writer.close()

    async def _pump(self, reader, writer):
        """Read as it comes; a second task writes each chunk once its time is due, so chunks overlap in flight."""
        queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await queue.get()
                pause = due - self.loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            writer.close()

        delivery = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((self.loop.time() + self.delay, data))
                if not data:
                    break
        except OSError:
            await queue.put((self.loop.time(), b''))
        try:
            await delivery
        except OSError:
            pass


INFO_RUN = r'''
    - ansible.builtin.set_fact: {t_info%(run)d_start: "{{ now().timestamp() }}"}
    - name: 1,000 STATs through the delay line in one task (run %(run)d of 3)
      magrathea.secure.ntsapi_number_info:
        numbers: "{{ stat_numbers }}"
      environment: "{{ delayed }}"
      register: info%(run)d
    - ansible.builtin.set_fact: {t_info%(run)d_end: "{{ now().timestamp() }}"}
'''
INFO_RUNS = 3

PLAYBOOK = r'''
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Settings and number lists, templated once (not timed)
      ansible.builtin.set_fact:
        direct: "{{ lookup('ansible.builtin.file', settings_dir ~ '/direct.json') | from_json }}"
        delayed: "{{ lookup('ansible.builtin.file', settings_dir ~ '/delayed.json') | from_json }}"
        stat_numbers: "{{ lookup('ansible.builtin.file', settings_dir ~ '/stat_numbers.json') | from_json }}"
        setup_numbers: "{{ lookup('ansible.builtin.file', settings_dir ~ '/setup_numbers.json') | from_json }}"
        retarget_numbers: "{{ lookup('ansible.builtin.file', settings_dir ~ '/retarget_numbers.json') | from_json }}"

    - name: Setup, straight to the sandbox (not timed) - 999 numbers active on the old SBC
      magrathea.secure.ntsapi_number:
        numbers: "{{ setup_numbers }}"
        targets: ["S:{international}@old-sbc.example.com"]
      environment: "{{ direct }}"

    - name: Warm-up, so the timed task does not include building the module payload (not timed)
      magrathea.secure.ntsapi_number_info:
        numbers: "{{ stat_numbers[:1] }}"
      environment: "{{ delayed }}"

%(info_runs)s

    - ansible.builtin.set_fact: {t_bulk_start: "{{ now().timestamp() }}"}
    - name: 200 numbers to a new SBC in one task
      magrathea.secure.ntsapi_number:
        numbers: "{{ retarget_numbers }}"
        targets: ["S:{international}@new-sbc.example.com"]
      environment: "{{ delayed }}"
      register: bulk
    - ansible.builtin.set_fact: {t_bulk_end: "{{ now().timestamp() }}"}

    - ansible.builtin.set_fact: {t_loop_start: "{{ now().timestamp() }}"}
    - name: The same 200 numbers to a newer SBC, one task per number
      magrathea.secure.ntsapi_number:
        number: "{{ item }}"
        targets: ["S:{international}@newer-sbc.example.com"]
      environment: "{{ delayed }}"
      loop: "{{ retarget_numbers }}"
      register: looped
    - ansible.builtin.set_fact: {t_loop_end: "{{ now().timestamp() }}"}

    - name: Write the figures
      ansible.builtin.copy:
        dest: "{{ settings_dir }}/figures.json"
        mode: "0600"
        content: "{{ {
          'info_seconds': [%(info_seconds)s],
          'info_numbers': info1.numbers | length,
          'info_active': info1.numbers | selectattr('state', 'equalto', 'active') | list | length,
          'info_warnings': info1.warnings | default([]) + info2.warnings | default([]) + info3.warnings | default([]),
          'bulk_seconds': (t_bulk_end | float) - (t_bulk_start | float),
          'bulk_changed': bulk.numbers | selectattr('changed') | list | length,
          'loop_seconds': (t_loop_end | float) - (t_loop_start | float),
          'loop_changed': looped.results | selectattr('changed') | list | length,
        } | to_json }}"
'''


def start_sandbox(directory):
    subprocess.run([sys.executable, '-m', 'sandbox', 'up', '--dir', directory], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(directory, 'sandbox.json'), encoding='utf-8') as handle:
        return json.load(handle)


def write_json(path, value):
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump(value, handle)
    os.chmod(path, 0o600)


def lock_step_stats(settings, port):
    """The baseline: one STAT, wait for its reply, the next STAT... over one session through the delay line."""
    endpoint = Endpoint(settings['MAGRATHEA_NTSAPI_HOST'], port, ca_path=settings['MAGRATHEA_CA_FILE'], timeout=30)
    started = time.monotonic()
    with NtsapiSession(endpoint, settings['MAGRATHEA_NTSAPI_USERNAME'], settings['MAGRATHEA_NTSAPI_PASSWORD'], pipeline_depth=1) as session:
        connected = time.monotonic()
        replies = [session.run('STAT %s' % number) for number in STAT_NUMBERS]
        finished = time.monotonic()
    assert sum(reply.ok for reply in replies) == len(SETUP_NUMBERS), 'the lock-step client did not see the numbers set up'
    return time.monotonic() - started, (finished - connected) / len(STAT_NUMBERS)


def main():
    work = tempfile.mkdtemp(prefix='bench-ntsapi-')
    sandbox_dir = os.path.join(work, 'sandbox')
    proxy = None
    try:
        settings = start_sandbox(sandbox_dir)
        proxy = DelayLine(int(settings['MAGRATHEA_NTSAPI_PORT']), ONE_WAY_DELAY).start()
        write_json(os.path.join(work, 'direct.json'), settings)
        write_json(os.path.join(work, 'delayed.json'), dict(settings, MAGRATHEA_NTSAPI_PORT=str(proxy.port)))
        write_json(os.path.join(work, 'stat_numbers.json'), STAT_NUMBERS)
        write_json(os.path.join(work, 'setup_numbers.json'), SETUP_NUMBERS)
        write_json(os.path.join(work, 'retarget_numbers.json'), RETARGET_NUMBERS)
        playbook = os.path.join(work, 'bench.yml')
        with open(playbook, 'w', encoding='utf-8') as handle:
            handle.write(PLAYBOOK % {
                'info_runs': ''.join(INFO_RUN % {'run': run} for run in range(1, INFO_RUNS + 1)),
                'info_seconds': ', '.join("(t_info%d_end | float) - (t_info%d_start | float)" % (run, run) for run in range(1, INFO_RUNS + 1)),
            })

        print('NTSAPI bench: sandbox NTSAPI on localhost:%s, delay line on localhost:%d adding %d ms each way'
              % (settings['MAGRATHEA_NTSAPI_PORT'], proxy.port, ONE_WAY_DELAY * 1000), flush=True)
        print('running the playbook (setup, 1,000-number info task, 200-number task, 200-item loop)...', flush=True)
        started = time.monotonic()
        env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_PIPELINING='1')
        run = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                              '-e', 'ansible_python_interpreter=%s' % sys.executable, '-e', 'settings_dir=%s' % work, playbook],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        playbook_seconds = time.monotonic() - started
        if run.returncode != 0:
            print(run.stdout[-6000:])
            raise SystemExit('bench playbook failed (rc=%d)' % run.returncode)
        with open(os.path.join(work, 'figures.json'), encoding='utf-8') as handle:
            figures = json.load(handle)

        print('running the lock-step client (1,000 STATs, one at a time)...', flush=True)
        lock_step_seconds, round_trip = lock_step_stats(settings, proxy.port)

        assert figures['info_numbers'] == 1000 and figures['info_active'] == len(SETUP_NUMBERS), figures
        assert figures['bulk_changed'] == 200 and figures['loop_changed'] == 200, figures
        info_seconds = sorted(figures['info_seconds'])[len(figures['info_seconds']) // 2]
        stat_ratio = info_seconds / lock_step_seconds
        retarget_ratio = figures['bulk_seconds'] / figures['loop_seconds']
        print()
        print('round trip through the delay line (lock-step STAT):   %8.1f ms' % (round_trip * 1000))
        print('stat_1000     lock-step client, 1,000 STATs:            %8.2f s' % lock_step_seconds)
        print('stat_1000     ntsapi_number_info task, 1,000 numbers:   %8.2f s  (median of %s)%s'
              % (info_seconds, ', '.join('%.2f' % seconds for seconds in figures['info_seconds']),
                 '  (warnings: %s)' % figures['info_warnings'] if figures['info_warnings'] else ''))
        print('retarget_200  ntsapi_number, one task of 200 numbers:   %8.2f s' % figures['bulk_seconds'])
        print('retarget_200  ntsapi_number, 200-item loop:             %8.2f s  (%.2f s per item)'
              % (figures['loop_seconds'], figures['loop_seconds'] / 200))
        print('whole playbook including setup and start-up:           %8.2f s' % playbook_seconds)
        print('targets: stat_1000 <= 0.1, retarget_200 <= 0.2')
        print('RATIO stat_1000 %.3f' % stat_ratio)
        print('RATIO retarget_200 %.3f' % retarget_ratio)
        return 0 if stat_ratio <= 0.1 and retarget_ratio <= 0.2 else 1
    finally:
        if proxy is not None:
            proxy.stop()
        subprocess.run([sys.executable, '-m', 'sandbox', 'down', '--dir', sandbox_dir], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
