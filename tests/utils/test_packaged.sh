#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The collection as Galaxy and Automation Hub users get it (make test-packaged):
#   1. ansible-galaxy collection build from this checkout; every file in the tarball must be one git sees (tracked,
#      or new and not ignored), so build_ignore keeps local state (venvs, build/, test settings with sandbox
#      passwords) out of the artifact;
#   2. a fresh virtualenv with requirements.txt only (the runtime requirements) and the tarball installed into a
#      fresh collections path;
#   3. from a directory outside the repository (no ansible.cfg, no collections but the installed one): ansible-doc,
#      the shipped playbooks through `import_playbook: magrathea.secure.<name>` (and one as `ansible-playbook
#      magrathea.secure.verify_trust`), and a user playbook with FQCNs
#      (tests/utils/packaged/user_playbook.yml), against a sandbox started from the installed collection with the
#      repository's .venv (which has the sandbox's packages).
# The playbooks write throwaway stores and files under the work directory only. In a private mount namespace /etc,
# /usr, dpkg's state and root's NSS databases are read-only, so a write to the host's own trust stores fails the
# test instead of changing the host. Needs root (for the namespace).
#
#   tests/utils/test_packaged.sh        (logs in build/packaged-test/)
# Environment: PYTHON (for the venv, default python3), REQUIREMENTS (default requirements.txt), SANDBOX_PYTHON (one
# with the sandbox's packages, default .venv/bin/python), PACKAGED_TEST_DIR (for the logs).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
requirements=${REQUIREMENTS:-$repo/requirements.txt}
sandbox_python=${SANDBOX_PYTHON:-$repo/.venv/bin/python}
logs=${PACKAGED_TEST_DIR:-$repo/build/packaged-test}

if [ "${MAGRATHEA_PACKAGED_NAMESPACE:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "test_packaged: needs root (a private mount namespace)" >&2; exit 1; }
    exec env MAGRATHEA_PACKAGED_NAMESPACE=1 unshare --mount --propagation private "$0" "$@"
fi

# -- inside the private namespace -------------------------------------------------------------------------------
for dir in /etc /usr /var/lib/dpkg /var/lib/ca-certificates-java /var/lib/magrathea /root/.pki /root/.mozilla; do
    [ -e "$dir" ] || continue
    mount --bind "$dir" "$dir"
    mount -o remount,bind,ro "$dir"
done

work=$(mktemp -d /tmp/magrathea-packaged.XXXXXX)
sandbox=$work/sandbox
cleanup() {
    [ ! -f "$sandbox/sandbox.pid" ] || "$sandbox_python" -m sandbox down --dir "$sandbox" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$logs" && mkdir -p "$logs"
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
step() { echo "test_packaged: $* ($(($(date +%s) - started)) s)"; }
started=$(date +%s)

# Everything runs from a directory outside the repository, with only the installed collection.
mkdir -p "$work/user"
cd "$work/user"
base_env=(PATH="$work/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME="$HOME" LANG=C.UTF-8
          ANSIBLE_COLLECTIONS_PATH="$work/collections" ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0)
ansible_env() { env -i "${base_env[@]}" "$@"; }
# must LOG COMMAND...: run COMMAND with its output in build/packaged-test/LOG; stop the test when it fails.
must() {
    local log="$logs/$1"
    shift
    "$@" >"$log" 2>&1 || { tail -n 30 "$log"; echo "FAIL test_packaged: $* (see $log)"; exit 1; }
}

# 1. A fresh virtualenv with the runtime requirements only, and the artifact built with its ansible-galaxy.
must venv.log "$python" -m venv "$work/venv"
must venv.log "$work/venv/bin/python" -m pip install --disable-pip-version-check -r "$requirements"
must build.log ansible_env ansible-galaxy collection build --output-path "$work/dist" "$repo"
tarball=$(echo "$work"/dist/magrathea-secure-*.tar.gz)
step "built $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB) with $("$work/venv/bin/ansible-galaxy" --version | head -n 1) on Python $("$work/venv/bin/python" -c 'import platform; print(platform.python_version())'), in a venv with $(tr '\n' ' ' < <(grep -vE '^\s*(#|$)' "$requirements"))"

# What it ships: only files git sees. An ignored file (a venv, build/, integration_config.yml) is a leak.
tar -tzf "$tarball" | grep -v '/$' | grep -vxE 'MANIFEST.json|FILES.json' | sort >"$logs/shipped.txt"
git -C "$repo" ls-files --cached --others --exclude-standard | sort >"$logs/git-files.txt"
leaked=$(comm -23 "$logs/shipped.txt" "$logs/git-files.txt")
if [ -n "$leaked" ]; then
    fail "the tarball ships files git ignores (add them to build_ignore in galaxy.yml): $(head -n 20 <<<"$leaked" | tr '\n' ' ')"
else
    echo "ok   the tarball ships $(wc -l <"$logs/shipped.txt") files, all of them seen by git; $(comm -13 "$logs/shipped.txt" "$logs/git-files.txt" | wc -l) git files left out by build_ignore"
fi
for required in meta/runtime.yml plugins/modules/balance_info.py plugins/module_utils/_tls.py roles/trust/tasks/main.yml \
        roles/lftp/templates/lftp-settings.j2 playbooks/demo.yml playbooks/tasks/demo_trust.yml sandbox/__main__.py \
        requirements-sandbox.txt LICENSES/GPL-3.0-or-later.txt CHANGELOG.md README.md; do
    grep -qxF "$required" "$logs/shipped.txt" || fail "the tarball lacks $required"
done
for unwanted in Makefile ansible.cfg tests/utils/test_packaged.sh tests/bench/bench_cdr.py; do
    if grep -qxF "$unwanted" "$logs/shipped.txt"; then fail "the tarball ships $unwanted, which only works in a checkout"; fi
done

# 2. Installed into a fresh collections path.
must install.log ansible_env ansible-galaxy collection install -p "$work/collections" "$tarball"
installed=$work/collections/ansible_collections/magrathea/secure

# 3. The installed collection, seen and run from outside the repository.
cp "$repo/tests/utils/packaged/user_playbook.yml" .
# The controller as the managed host, with the fresh venv's Python: what runs the modules has the runtime requirements only.
printf 'all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n' "$work/venv/bin/python" >inventory.yml
listed=$(ansible_env ansible-galaxy collection list magrathea.secure 2>&1 || true)
if [ "$(grep -cE '^magrathea\.secure ' <<<"$listed")" != 1 ] || ! grep -qF "# $work/collections/ansible_collections" <<<"$listed"; then
    fail "ansible-galaxy does not see exactly one magrathea.secure, in $work/collections: $listed"
fi
modules=$( (ansible_env ansible-doc -l magrathea.secure 2>"$logs/ansible-doc.log" || true) | awk '{print $1}' | sort | tr '\n' ' ')
[ "$modules" = "magrathea.secure.balance_info magrathea.secure.browser_trust magrathea.secure.ca_trust magrathea.secure.cdr_sync magrathea.secure.java_trust magrathea.secure.ntsapi_command magrathea.secure.ntsapi_number magrathea.secure.ntsapi_number_info magrathea.secure.trust_check " ] \
    || fail "ansible-doc -l magrathea.secure lists: $modules"
for role in trust lftp; do
    ansible_env ansible-doc -t role "magrathea.secure.$role" >>"$logs/ansible-doc.log" 2>&1 || fail "ansible-doc -t role magrathea.secure.$role"
done
step "installed; ansible-doc lists the modules and both roles"

# The sandbox, started from the installed collection.
(cd "$installed" && "$sandbox_python" -m sandbox up --dir "$sandbox" >/dev/null)
sandbox_env=()
while IFS= read -r line; do sandbox_env+=("$line"); done < <("$sandbox_python" -c '
import json, sys
for key, value in sorted(json.load(open(sys.argv[1])).items()):
    print("%s=%s" % (key, value))' "$sandbox/sandbox.json")

# run NAME PLAYBOOK ENVIRONMENT... -- ARGS...: ansible-playbook PLAYBOOK must exit 0.
run() {
    local name=$1 playbook=$2 env=() log="$logs/$1.log"
    shift 2
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    if ! ansible_env "${env[@]}" ansible-playbook -i inventory.yml "$playbook" "$@" >"$log" 2>&1; then
        fail "$name (see $log)"; tail -n 30 "$log"
    elif ! grep -qE '^localhost +: ok=[1-9]' "$log"; then
        fail "$name ran no task on localhost (see $log)"
    else
        echo "ok   $name: $(grep -E '^localhost +: ok=' "$log" | tail -n 1 | tr -s ' ')"
    fi
}
# A wrapper playbook per shipped playbook: import_playbook by FQCN, as a user's site.yml does (verify_trust runs
# as `ansible-playbook magrathea.secure.verify_trust` instead).
for name in demo billing_server cdr_sync; do
    printf -- '---\n- name: The shipped %s playbook\n  ansible.builtin.import_playbook: magrathea.secure.%s\n' "$name" "$name" >"$name.yml"
done

run user-playbook user_playbook.yml -- -e "@$sandbox/sandbox.json" -e "packaged_dir=$work/user"
run demo demo.yml "${sandbox_env[@]}" MAGRATHEA_DEMO_DIR="$work/demo" --
# billing_server on the throwaway stores the user playbook made: both roles, the imported cdr_sync.yml, NTSAPI, REST.
stores=$(printf '{"trust_system": false, "trust_java_keystores": ["%s"], "trust_browser_nssdbs": ["%s"]}' \
    "$work/user/trust/cacerts" "$work/user/trust/nssdb")
run billing_server billing_server.yml "${sandbox_env[@]}" -- -e "$stores" -e lftp_install=false \
    -e "lftp_ca_file=$sandbox/pki/ca.pem" -e "lftp_config_path=$work/billing/lftp.conf" -e billing_lftp_user=root \
    -e "lftp_user_home=$work/billing/home" -e "cdr_sync_dest=$work/billing/cdr"
run verify_trust magrathea.secure.verify_trust "${sandbox_env[@]}" -- \
    -e "{\"verify_trust_stores\": [\"java\", \"nss\"], \"verify_trust_keystores\": [\"$work/user/trust/cacerts\"], \"verify_trust_nssdbs\": [\"$work/user/trust/nssdb\"]}"
run cdr_sync cdr_sync.yml "${sandbox_env[@]}" -- -e "cdr_sync_dest=$work/cdr-job"

for service in NTSAPI CDR REST; do
    password=$("$sandbox_python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$sandbox/sandbox.json" "MAGRATHEA_${service}_PASSWORD")
    if grep -lF -- "$password" "$logs"/*.log >/dev/null 2>&1; then fail "the $service password appears in a log"; fi
done
step "done"
[ "$failures" = 0 ] || { echo "test_packaged: $failures failure(s); logs in $logs"; exit 1; }
echo "test_packaged: the built collection works from outside the repository"
