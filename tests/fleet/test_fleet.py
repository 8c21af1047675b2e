# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection over SSH on a fleet, as a controller or AWX runs it (make fleet-test; the hosts: tests/fleet/fleet.py).

A rollout, in file order, against one sandbox whose FTPS server answers 421 beyond the account's 4 connections:
  1. ad hoc tasks on every host take their connection settings from the controller's MAGRATHEA_* environment,
     exactly as the collection's AWX credential type injects it (before the action plugins they failed with
     "missing required arguments: account"); where each setting is read, and in which order;
  2. billing_server.yml in check mode on the fresh fleet, for real, a second time, and in check mode again: every
     healthy host converges, then nothing changes; one host that fails in the middle (a read-only CDR disk) and one
     unreachable host do not stop the others and are named in the summary; the account-level reads run once per run;
     the FTPS server never sees more than the limit;
  3. each host proves its stores by trust_check (verify_trust.yml) and by real clients (curl, openssl, Java, lftp);
     passwords are in no file on any host but the lftp user's ~/.netrc (0600), and in no output;
  4. the no-op run timed on all healthy hosts and on one (build/fleet/figures.txt);
  5. the fleet playbooks through ansible-runner with exactly the environment AWX's injectors define;
  6. a control: while another client holds most of the account's connections, the server does count the fleet's
     syncs over the limit (and answers 421, which they retry).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

import awx_credential as awx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEET = os.environ.get("FLEET_DIR", os.path.join(ROOT, "build", "fleet"))
BIN = os.path.join(ROOT, ".venv", "bin")
INVENTORY = os.path.join(FLEET, "inventory.yml")
CREDENTIAL_TYPE = os.path.join(ROOT, "extensions", "awx", "magrathea_credential_type.yml")
CONNECTION_LIMIT = 4
CDR_FILES = 12
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# What changes on a host when billing_server.yml changes something (its trust stores, lftp, CDR files, users).
HOST_PATHS = ("/usr/local/share/ca-certificates", "/etc/ssl/certs", "/var/lib/ca-certificates-java", "/root/.pki",
              "/etc/pki/nssdb", "/etc/firefox", "/etc/lftp.conf", "/var/lib/magrathea", "/var/lib/magrathea-cdr",
              "/etc/passwd", "/etc/group", "/etc/shadow")


def fleet_state():
    path = os.path.join(FLEET, "fleet.json")
    if not os.path.exists(path):
        pytest.fail("the fleet is not up: run `make fleet-test` (or tests/fleet/fleet.py up --dir %s)" % FLEET)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


STATE = None


@pytest.fixture(scope="module", name="fleet")
def fleet_fixture():
    global STATE  # pylint: disable=global-statement
    STATE = fleet_state()
    return STATE


@pytest.fixture(scope="module", name="sandbox")
def sandbox_fixture(fleet):  # pylint: disable=unused-argument
    directory = os.path.join(FLEET, "sandbox")
    subprocess.run([os.path.join(BIN, "python"), "-m", "sandbox", "up", "--dir", directory, "--ftps-max-connections",
                    str(CONNECTION_LIMIT), "--cdr-files", str(CDR_FILES), "--cdr-size", "20000"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(directory, "sandbox.json"), encoding="utf-8") as handle:
        settings = json.load(handle)
    yield settings
    subprocess.run([os.path.join(BIN, "python"), "-m", "sandbox", "down", "--dir", directory], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module", name="credential")
def credential_fixture(sandbox):
    """The MAGRATHEA_* environment an AWX job gets from the collection's credential type, filled with the sandbox's."""
    credential_type = awx.load(CREDENTIAL_TYPE)
    with open(sandbox["MAGRATHEA_CA_FILE"], encoding="ascii") as handle:
        ca_pem = handle.read()
    inputs = {
        "account": sandbox["MAGRATHEA_ACCOUNT"], "ca_certificate": ca_pem,
        "ntsapi_username": sandbox["MAGRATHEA_NTSAPI_USERNAME"], "ntsapi_password": sandbox["MAGRATHEA_NTSAPI_PASSWORD"],
        "cdr_username": sandbox["MAGRATHEA_CDR_USERNAME"], "cdr_password": sandbox["MAGRATHEA_CDR_PASSWORD"],
        "rest_username": sandbox["MAGRATHEA_REST_USERNAME"], "rest_password": sandbox["MAGRATHEA_REST_PASSWORD"],
        "ntsapi_host": sandbox["MAGRATHEA_NTSAPI_HOST"], "ntsapi_port": sandbox["MAGRATHEA_NTSAPI_PORT"],
        "cdr_host": sandbox["MAGRATHEA_CDR_HOST"], "cdr_port": sandbox["MAGRATHEA_CDR_PORT"], "cdr_dir": sandbox["MAGRATHEA_CDR_DIR"],
        "rest_url": sandbox["MAGRATHEA_REST_URL"],
    }
    private_data_dir = os.path.join(FLEET, "awx")
    shutil.rmtree(private_data_dir, ignore_errors=True)
    os.makedirs(private_data_dir, mode=0o700)
    return awx.inject(credential_type, inputs, private_data_dir)


def secrets_of(sandbox):
    return [sandbox["MAGRATHEA_%s_PASSWORD" % service] for service in ("NTSAPI", "CDR", "REST")]


def ansible_settings(pipelining=True):
    """The controller's Ansible settings for every run: this checkout's ansible.cfg, the fleet's SSH control sockets.

    Playbooks run with SSH pipelining (a module reaches the host on stdin), as fleets usually do; the ad hoc tests run
    without it, so that the modules and the controller's CA file reach each host as files in its temporary directory.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MAGRATHEA_", "ANSIBLE_"))}
    env.update(ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_FORKS="10", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_SSH_CONTROL_PATH_DIR=os.path.join(FLEET, "cp"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               ANSIBLE_PIPELINING="1" if pipelining else "0")
    return env


class ServerLogs:
    """What the sandbox logged between ``ServerLogs(sandbox)`` and ``stop()``: NTSAPI logins, balance requests, FTPS
    connections."""

    def __init__(self, sandbox):
        self.paths = {"ntsapi": sandbox["MAGRATHEA_NTSAPI_LOG"], "rest": sandbox["MAGRATHEA_REST_LOG"],
                      "ftps": sandbox["MAGRATHEA_CDR_LOG"]}
        self.marks = {name: os.path.getsize(path) if os.path.exists(path) else 0 for name, path in self.paths.items()}
        self.lines = None

    def stop(self):
        self.lines = {}
        for name, path in self.paths.items():
            with open(path, "rb") as handle:
                handle.seek(self.marks[name])
                self.lines[name] = handle.read().decode("utf-8").splitlines()
        return self

    def _new_lines(self, name):
        if self.lines is None:
            self.stop()
        return self.lines[name]

    def ntsapi_commands(self):
        return [json.loads(line)["command"] for line in self._new_lines("ntsapi")]

    def ntsapi_logins(self):
        return sum(1 for command in self.ntsapi_commands() if command and command.startswith("AUTH "))

    def balance_requests(self):
        return sum(1 for line in self._new_lines("rest") if " GET /v1/account/balance/" in line)

    def ftps_events(self):
        return [json.loads(line) for line in self._new_lines("ftps")]

    def ftps_peak(self):
        return max([event["open"] for event in self.ftps_events() if event["event"] == "connect"] or [0])

    def ftps_refused(self):
        return sum(1 for event in self.ftps_events() if event["event"] == "refused")

    @staticmethod
    def refusals_since(logs):
        """Whether the FTPS server refused a connection since ``logs`` started, read now (not frozen)."""
        with open(logs.paths["ftps"], "rb") as handle:
            handle.seek(logs.marks["ftps"])
            return b'"event": "refused"' in handle.read()


class Run:
    """One ansible-playbook, ansible or ansible-runner run: output, recap per host, time, and what the servers saw."""

    def __init__(self, rc, output, seconds, logs):
        self.rc = rc
        self.output = output
        self.seconds = seconds
        self.logs = logs
        self.recap = {match.group(1): dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()[1:])))
                      for match in RECAP.finditer(output)}

    def host(self, name):
        return self.recap.get(name, {})

    def describe(self):
        return "rc=%s, recap %s\n%s" % (self.rc, self.recap, self.output[-6000:])


def ansible(command, *args, env, sandbox):
    logs = ServerLogs(sandbox)
    started = time.monotonic()
    process = subprocess.run([os.path.join(BIN, command), "-i", INVENTORY] + list(args), cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return Run(process.returncode, process.stdout, time.monotonic() - started, logs.stop())


def playbook(name, *args, env, sandbox):
    path = name if os.path.isabs(name) else os.path.join(ROOT, "playbooks", name)
    return ansible("ansible-playbook", path, *args, env=env, sandbox=sandbox)


def host_path(name, path):
    """A path inside a fleet host, seen through its pid 1 (the chrooted sshd)."""
    return "/proc/%d/root%s" % (STATE["hosts"][name]["init_pid"], path)


def layer_path(name, *parts):
    """A path in the host's own mount namespace (its overlay's upper layer, its tmpfs mounts)."""
    entry = STATE["hosts"][name]
    return os.path.join("/proc/%d/root" % entry["pid"], entry["dir"].lstrip("/"), "layer", *parts)


def host_fingerprint(name):
    """Names, sizes, modes, owners, link targets and contents of what billing_server.yml may change on a host."""
    lines = []
    for path in HOST_PATHS:
        top = host_path(name, path)
        if not os.path.lexists(top):
            lines.append("%s absent" % path)
            continue
        entries = [top] if not os.path.isdir(top) or os.path.islink(top) else [top] + sorted(
            os.path.join(base, entry) for base, dirs, files in os.walk(top) for entry in dirs + files)
        for entry in entries:
            info = os.lstat(entry)
            shown = entry[len(host_path(name, "")):]
            line = "%s %d %o %d:%d %s" % (shown, info.st_size, info.st_mode, info.st_uid, info.st_gid,
                                          os.readlink(entry) if os.path.islink(entry) else "")
            if os.path.isfile(entry) and not os.path.islink(entry):
                with open(entry, "rb") as handle:
                    line += " " + hashlib.sha256(handle.read()).hexdigest()
            lines.append(line)
    return lines


def fingerprints(fleet):
    return {name: host_fingerprint(name) for name, entry in fleet["hosts"].items() if entry["started"]}


def files_holding(directory, needles):
    """Every regular file under ``directory`` that holds one of ``needles``."""
    found = []
    for base, _dirs, files in os.walk(directory):
        for entry in files:
            path = os.path.join(base, entry)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    data = handle.read()
                if any(needle.encode() in data for needle in needles):
                    found.append(path)
    return found


def assert_fleet_outcome(run, fleet, changed, check_mode=False):
    """Healthy hosts ok (changed or not), the broken host failed in the CDR sync, the unreachable one unreachable.

    In check mode nothing is written, so the read-only CDR disk goes unnoticed: the broken host only predicts.
    """
    for name in fleet["healthy"]:
        assert run.host(name).get("failed") == 0 and run.host(name).get("unreachable") == 0, run.describe()
        if changed is not None:
            assert (run.host(name)["changed"] > 0) == changed, "%s: %s" % (name, run.describe())
    assert run.host("fleet-broken")["failed"] == (0 if check_mode else 1), run.describe()
    assert run.host("fleet-gone")["unreachable"] == 1, run.describe()
    assert run.rc != 0, "a run with an unreachable host must fail: " + run.describe()


def assert_account_checks_once(run):
    """Magrathea's misuse clause: one NTSAPI login and one balance request per fleet run, whatever the number of hosts."""
    assert run.logs.ntsapi_logins() == 1, run.logs.ntsapi_commands()
    assert run.logs.balance_requests() == 1


def assert_within_connection_limit(run):
    assert 0 < run.logs.ftps_peak() <= CONNECTION_LIMIT, run.logs.ftps_events()
    assert run.logs.ftps_refused() == 0, run.logs.ftps_events()


def assert_no_secret(run, sandbox):
    for secret in secrets_of(sandbox):
        assert secret not in run.output


# -- 1. connection settings given once on the controller ----------------------------------------------------------


def test_the_shipped_fleet_inventory_parses(fleet):  # pylint: disable=unused-argument
    listing = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", os.path.join(ROOT, "playbooks", "inventory", "fleet.yml"),
                              "--list"], cwd=ROOT, env=ansible_settings(), check=True, capture_output=True, text=True)
    inventory = json.loads(listing.stdout)
    assert sorted(inventory["billing"]["hosts"]) == ["billing1.example.com", "billing2.example.com", "billing3.example.com"]


def test_the_credential_type_is_what_awx_accepts(credential):
    assert not awx.problems(awx.load(CREDENTIAL_TYPE))
    assert all(name.startswith("MAGRATHEA_") for name in credential)
    # AWX writes the CA to a private file of the job; the modules' action plugins copy it to each host.
    assert oct(os.stat(credential["MAGRATHEA_CA_FILE"]).st_mode & 0o777) == "0o660"


def test_the_credential_type_sets_no_ca_file_without_a_certificate(tmp_path):
    env = awx.inject(awx.load(CREDENTIAL_TYPE), {"account": "MAG000001", "ntsapi_port": ""}, str(tmp_path))
    assert env["MAGRATHEA_CA_FILE"] == "" and env["MAGRATHEA_NTSAPI_PORT"] == "" and env["MAGRATHEA_ACCOUNT"] == "MAG000001"


def test_ad_hoc_modules_over_ssh_take_the_controllers_settings(fleet, sandbox, credential):
    """The issue's first try, on every kind of host: before the action plugins, 'missing required arguments: account'."""
    env = dict(ansible_settings(pipelining=False), **credential)
    info = ansible("ansible", "healthy", "-m", "magrathea.secure.ntsapi_number_info", "-a", "numbers=01792000123", "-vvv",
                   env=env, sandbox=sandbox)
    assert info.rc == 0, info.describe()
    assert info.output.count("SUCCESS =>") == len(fleet["healthy"]), info.describe()
    assert "magrathea.secure.ntsapi_number_info: ca_path, host, password, port, username from the controller environment" in info.output
    assert info.logs.ntsapi_logins() == len(fleet["healthy"])  # ad hoc: one task per host, by definition
    assert_no_secret(info, sandbox)

    balance = ansible("ansible", "fleet-trixie", "-m", "magrathea.secure.balance_info", env=env, sandbox=sandbox)
    assert balance.rc == 0 and '"account": "MAG000001"' in balance.output, balance.describe()

    sync = ansible("ansible", "fleet-become1,fleet-become2,fleet-py38,fleet-trixie", "-m", "magrathea.secure.cdr_sync",
                   "-a", "dest=/var/lib/magrathea/ad-hoc parallel=1", "--forks", str(CONNECTION_LIMIT), env=env, sandbox=sandbox)
    assert sync.rc == 0 and sync.output.count('"fetched": %d' % CDR_FILES) == 4, sync.describe()
    assert_within_connection_limit(sync)
    assert_no_secret(sync, sandbox)


@pytest.mark.parametrize("scenario", ["host_environment", "controller_first", "missing_ca"])
def test_settings_come_from_the_controller_then_the_managed_host(sandbox, credential, scenario):
    env = dict(ansible_settings(pipelining=False), **credential)
    if scenario == "host_environment":
        del env["MAGRATHEA_NTSAPI_PASSWORD"]
        env["FLEET_HOST_NTSAPI_PASSWORD"] = sandbox["MAGRATHEA_NTSAPI_PASSWORD"]
    if scenario == "missing_ca":
        env["MAGRATHEA_CA_FILE"] = "/nonexistent/controller-ca.pem"
    run = playbook(os.path.join(ROOT, "tests", "fleet", "playbooks", "controller_settings.yml"), "-e", "fleet_scenario=" + scenario,
                   "-e", "fleet_hosts=fleet-root1,fleet-become2,fleet-py38,fleet-trixie", env=env, sandbox=sandbox)
    assert run.rc == 0, run.describe()
    if scenario == "missing_ca":
        assert run.logs.ntsapi_commands() == [], "nothing may be sent when the controller's CA file is missing"
    assert_no_secret(run, sandbox)


# -- 2. billing_server.yml on the fleet -----------------------------------------------------------------------------


def test_check_mode_on_the_fresh_fleet_changes_nothing(fleet, sandbox, credential):
    before = fingerprints(fleet)
    run = playbook("billing_server.yml", "--check", "-e", "target=billing", env=dict(ansible_settings(), **credential), sandbox=sandbox)
    assert_fleet_outcome(run, fleet, changed=True, check_mode=True)
    assert fingerprints(fleet) == before
    assert_account_checks_once(run)
    assert_within_connection_limit(run)
    assert_no_secret(run, sandbox)


def test_billing_server_converges_the_fleet(fleet, sandbox, credential):
    run = playbook("billing_server.yml", "-e", "target=billing", env=dict(ansible_settings(), **credential), sandbox=sandbox)
    assert_fleet_outcome(run, fleet, changed=True)
    # A local error, named with its path and errno: never retried, never taken for a network fault.
    assert re.search(r"fleet-broken: FAILED in the CDR sync: cannot [^\n]*/var/lib/magrathea/cdr[^\n]*Read-only file system \(EROFS\)",
                     run.output), run.output
    assert "fleet-gone: UNREACHABLE" in run.output
    for name in fleet["healthy"]:
        assert "%s: ok: the root in every store" % name in run.output
    assert_account_checks_once(run)
    assert_within_connection_limit(run)
    assert_no_secret(run, sandbox)


def test_every_host_holds_the_cdr_files(fleet, sandbox):
    local = sandbox["MAGRATHEA_CDR_LOCAL_DIR"]
    wanted = {}
    for entry in sorted(os.listdir(local)):
        with open(os.path.join(local, entry), "rb") as handle:
            wanted[entry] = handle.read()
    for name in fleet["healthy"]:
        directory = host_path(name, "/var/lib/magrathea/cdr")
        got = {}
        for entry in sorted(os.listdir(directory)):
            if not entry.startswith("."):
                with open(os.path.join(directory, entry), "rb") as handle:
                    got[entry] = handle.read()
        assert got == wanted, name
        assert oct(os.stat(os.path.join(directory, sorted(wanted)[0])).st_mode & 0o777) == "0o640"


def test_every_host_trusts_the_endpoints_by_trust_check(fleet, sandbox, credential):
    # verify_trust.yml checks every host at once; its FTPS handshakes are no logins, but count at the server: 4 forks.
    run = playbook("verify_trust.yml", "-e", "verify_trust_hosts=healthy", "--forks", str(CONNECTION_LIMIT),
                   env=dict(ansible_settings(), **credential), sandbox=sandbox)
    assert run.rc == 0, run.describe()
    assert "%d host(s) trust every endpoint in every required store" % len(fleet["healthy"]) in run.output


def test_real_clients_on_every_host_trust_the_endpoints(fleet, sandbox, credential):
    run = playbook(os.path.join(ROOT, "tests", "fleet", "playbooks", "clients.yml"), "-e", "fleet_hosts=healthy",
                   env=dict(ansible_settings(), **credential), sandbox=sandbox)
    assert run.rc == 0, run.describe()
    for name in fleet["healthy"]:
        assert run.host(name)["failed"] == 0


def test_passwords_are_in_no_file_on_any_host_but_the_lftp_netrc(fleet, sandbox):
    for name, entry in fleet["hosts"].items():
        if not entry["started"]:
            continue
        holding = []
        for where in (layer_path(name, "upper"), layer_path(name, "root", "tmp"), layer_path(name, "root", "run"),
                      layer_path(name, "root", "root", ".ansible")):
            holding += [path[len(where):] or "/" for path in files_holding(where, secrets_of(sandbox))]
        assert set(holding) <= {"/var/lib/magrathea-cdr/.netrc"}, (name, holding)
        netrc = host_path(name, "/var/lib/magrathea-cdr/.netrc")
        assert oct(os.stat(netrc).st_mode & 0o777) == "0o600"
        # The CA file the action plugins copied lived only in each task's temporary directory.
        for where in (layer_path(name, "upper"), layer_path(name, "root", "tmp"), layer_path(name, "root", "root", ".ansible")):
            assert not any("magrathea-ca.pem" in files for _base, _dirs, files in os.walk(where)), (name, where)


def test_a_second_run_changes_nothing(fleet, sandbox, credential):
    before = fingerprints(fleet)
    run = playbook("billing_server.yml", "-e", "target=billing", env=dict(ansible_settings(), **credential), sandbox=sandbox)
    assert_fleet_outcome(run, fleet, changed=False)
    assert fingerprints(fleet) == before
    assert_account_checks_once(run)
    assert_within_connection_limit(run)


def test_check_mode_on_the_converged_fleet_changes_nothing(fleet, sandbox, credential):
    before = fingerprints(fleet)
    run = playbook("billing_server.yml", "--check", "-e", "target=billing", env=dict(ansible_settings(), **credential), sandbox=sandbox)
    assert_fleet_outcome(run, fleet, changed=False, check_mode=True)
    assert fingerprints(fleet) == before
    assert_account_checks_once(run)


# -- 3. figures ---------------------------------------------------------------------------------------------------


def test_figures_no_op_on_all_hosts_and_on_one(fleet, sandbox, credential):
    env = dict(ansible_settings(), **credential)
    everyone = playbook("billing_server.yml", "-e", "target=healthy", env=env, sandbox=sandbox)
    one = playbook("billing_server.yml", "-e", "target=fleet-root1", env=env, sandbox=sandbox)
    for run, hosts in ((everyone, fleet["healthy"]), (one, ["fleet-root1"])):
        assert run.rc == 0 and all(run.host(name)["changed"] == 0 for name in hosts), run.describe()
        assert_account_checks_once(run)
    lines = [
        "no-op billing_server.yml, same run, %s:" % _machine(),
        "  %d hosts: %.1f s" % (len(fleet["healthy"]), everyone.seconds),
        "  1 host:  %.1f s" % one.seconds,
    ]
    with open(os.path.join(FLEET, "figures.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _machine():
    with open("/etc/os-release", encoding="utf-8") as handle:
        release = dict(line.rstrip("\n").split("=", 1) for line in handle if "=" in line)
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "%s, %d x %s, forks 10" % (release.get("PRETTY_NAME", "").strip('"'), os.cpu_count(), model)


# -- 4. AWX: the playbooks through ansible-runner with the credential type's environment -----------------------------


@pytest.mark.parametrize("name", ["billing_server.yml", "cdr_sync.yml"])
def test_ansible_runner_with_the_injected_environment(fleet, sandbox, credential, name):
    import ansible_runner  # pylint: disable=import-outside-toplevel

    assert not [variable for variable in os.environ if variable.startswith("MAGRATHEA_")], "the test process must not hold any"
    private_data_dir = os.path.join(FLEET, "awx")
    artifacts = os.path.join(private_data_dir, "artifacts")
    shutil.rmtree(artifacts, ignore_errors=True)
    logs = ServerLogs(sandbox)
    settings = {key: value for key, value in ansible_settings().items() if key.startswith("ANSIBLE_")}
    result = ansible_runner.run(private_data_dir=private_data_dir, playbook=os.path.join(ROOT, "playbooks", name),
                                inventory=INVENTORY, extravars={"target": "healthy"}, envvars=dict(settings, PATH=BIN + ":" + os.environ["PATH"], **credential),
                                project_dir=ROOT, quiet=True, ident=name.split(".")[0], suppress_env_files=True)
    logs.stop()
    assert result.status == "successful" and result.rc == 0, result.stdout.read()[-6000:]
    for host in fleet["healthy"]:
        assert result.stats["ok"].get(host) and not result.stats["changed"].get(host), result.stats
        assert not result.stats["failures"].get(host) and not result.stats["dark"].get(host), result.stats
    if name == "billing_server.yml":
        assert logs.ntsapi_logins() == 1 and logs.balance_requests() == 1
    assert logs.ftps_refused() == 0 and logs.ftps_peak() <= CONNECTION_LIMIT
    # What AWX would keep of the job (its output and events) holds no password. ansible-runner records the environment
    # it ran ansible-playbook with in artifacts/<ident>/command, readable by its owner only, like AWX's private data dir.
    command = os.path.join(artifacts, name.split(".")[0], "command")
    assert files_holding(artifacts, secrets_of(sandbox)) == [command]
    assert oct(os.stat(command).st_mode & 0o777) == "0o600"


# -- 5. the control ------------------------------------------------------------------------------------------------


def test_control_the_server_refuses_what_goes_over_the_limit(fleet, sandbox, credential):
    """The counting is not vacuous: while another client of the account holds 3 of its 4 connections, the fleet's syncs
    (2 hosts x 2 connections at a time) go over the limit; the server answers 421, and the syncs retry and finish once
    the other client lets go."""
    port = int(sandbox["MAGRATHEA_CDR_PORT"])
    held = []
    for _slot in range(CONNECTION_LIMIT - 1):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert conn.recv(200).startswith(b"220")
        held.append(conn)
    watch = ServerLogs(sandbox)

    def hold_until_refused():
        # Let go once the server has refused one of the fleet's connections (or after a minute): then the syncs can finish.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ServerLogs.refusals_since(watch):
            time.sleep(0.1)
        time.sleep(1)
        for conn in held:
            conn.close()

    holder = threading.Thread(target=hold_until_refused, daemon=True)
    holder.start()
    try:
        run = playbook("cdr_sync.yml", "-e", "target=healthy", "-e", "cdr_sync_dest=/var/lib/magrathea/cdr-crowded",
                       env=dict(ansible_settings(), **credential), sandbox=sandbox)
    finally:
        holder.join(timeout=70)
        for conn in held:
            conn.close()
    assert run.rc == 0, run.describe()
    assert run.logs.ftps_refused() > 0 and run.logs.ftps_peak() == CONNECTION_LIMIT, run.logs.ftps_events()
    for name in fleet["healthy"]:
        fetched = [entry for entry in os.listdir(host_path(name, "/var/lib/magrathea/cdr-crowded")) if not entry.startswith(".")]
        assert len(fetched) == CDR_FILES, (name, fetched)
