#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Run every playbook of playbooks/ against a fresh sandbox, in check mode and for real (make test-playbooks):
#   billing_server.yml  check mode on a fresh host, a real run, a second real run that must change nothing (trusting
#                       the root through the system store the first run filled), then check mode again (no changes);
#   verify_trust.yml    check mode and a real run after billing_server.yml installed the root: nothing changes;
#   cdr_sync.yml        check mode, a real run, a second real run that changes nothing;
#   demo.yml            check mode and a real run.
# The playbooks install the sandbox's root CA into the host's trust stores, so everything runs in a private mount
# namespace (unshare -m) over tmpfs copies of those stores; the host's own stores are fingerprinted before and after
# and must not change. lftp's settings and CDR files go to a work directory. Needs root.
#
#   tests/utils/test_playbooks.sh [PLAYBOOK...]     (default: all four; logs in build/playbook-tests/)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VENV_BIN:-$root/.venv/bin}
work=${PLAYBOOK_TEST_DIR:-$root/build/playbook-tests}
# The stores the trust role writes on Debian (the Java cacerts of every JDK links into /etc/ssl/certs/java) and the
# browsers' NSS databases of root. update-ca-certificates updates the Java store through a dpkg trigger of
# ca-certificates-java, so dpkg's state is private too, and so is its log.
private_dirs=(/usr/local/share/ca-certificates /etc/ssl/certs /root/.pki /root/.mozilla /etc/firefox/policies
              /var/lib/ca-certificates-java /var/lib/dpkg)
private_files=(/var/log/dpkg.log /var/log/alternatives.log)

store_fingerprint() {
    for dir in "${private_dirs[@]}" "${private_files[@]}" /etc/lftp.conf /var/lib/magrathea; do
        if [ -e "$dir" ]; then
            find "$dir" -xdev \( -type f -o -type l \) -printf '%p %s %m %l\n' 2>/dev/null | sort
            find "$dir" -xdev -type f -exec sha256sum {} + 2>/dev/null | sort
        else
            echo "$dir absent"
        fi
    done | sha256sum
}

if [ "${MAGRATHEA_PLAYBOOK_NAMESPACE:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "test_playbooks: needs root (private mount namespace over the trust stores)" >&2; exit 1; }
    before=$(store_fingerprint)
    status=0
    MAGRATHEA_PLAYBOOK_NAMESPACE=1 unshare --mount --propagation private "$0" "$@" || status=$?
    after=$(store_fingerprint)
    if [ "$before" != "$after" ]; then
        echo "test_playbooks: the host's own trust stores or lftp settings changed; the private namespace leaked" >&2
        exit 1
    fi
    exit "$status"
fi

# -- inside the private namespace -------------------------------------------------------------------------------
for dir in "${private_dirs[@]}"; do
    [ -d "$dir" ] || continue
    copy=$(mktemp -d)
    cp -a "$dir/." "$copy/"
    mount -t tmpfs -o mode=0755 magrathea-playbook-tests "$dir"
    cp -a "$copy/." "$dir/"
    rm -rf "$copy"
    mountpoint -q "$dir" || { echo "test_playbooks: $dir is not a private mount; refusing to go on" >&2; exit 1; }
done
for file in "${private_files[@]}"; do
    [ -f "$file" ] || continue
    copy=$(mktemp)
    cp -a "$file" "$copy"
    mount --bind "$copy" "$file"
done

rm -rf "$work" && mkdir -p "$work"
cd "$root"
sandbox="$work/sandbox"
"$bin/python" -m sandbox up --dir "$sandbox" >/dev/null
trap '"$bin/python" -m sandbox down --dir "$sandbox" >/dev/null' EXIT
set -a
# shellcheck disable=SC1091
. "$sandbox/sandbox.env"
set +a
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0
export MAGRATHEA_DEMO_DIR="$work/demo"

failures=0
# run NAME PLAYBOOK EXPECT ARGS...: EXPECT is "ok" (no failed task) or "unchanged" (no failed task, nothing changed).
run() {
    local name=$1 playbook=$2 expect=$3 log="$work/$1.log" recap changed failed unreachable
    shift 3
    if ! "$bin/ansible-playbook" "playbooks/$playbook" "$@" >"$log" 2>&1; then
        echo "FAIL $name: ansible-playbook failed (see $log)"; tail -n 40 "$log"; failures=$((failures + 1)); return
    fi
    recap=$(grep -E '^[^ ]+ +: ok=' "$log" | tail -n 1)
    changed=$(sed -E 's/.* changed=([0-9]+).*/\1/' <<<"$recap")
    failed=$(sed -E 's/.* failed=([0-9]+).*/\1/' <<<"$recap")
    unreachable=$(sed -E 's/.* unreachable=([0-9]+).*/\1/' <<<"$recap")
    if [ -z "$recap" ] || [ "$failed" != 0 ] || [ "$unreachable" != 0 ]; then
        echo "FAIL $name: $recap (see $log)"; failures=$((failures + 1)); return
    fi
    if [ "$expect" = unchanged ] && [ "$changed" != 0 ]; then
        echo "FAIL $name: expected no changes: $recap (see $log)"
        grep -E '^changed:' "$log" | head -n 20
        failures=$((failures + 1)); return
    fi
    echo "ok   $name: $recap"
}

# check NAME CONDITION MESSAGE: an assertion about what a run left behind.
check() {
    if eval "$2"; then echo "ok   $1"; else echo "FAIL $1: $3"; failures=$((failures + 1)); fi
}

billing=(-e "cdr_sync_dest=$work/cdr" -e billing_lftp_user=root -e "lftp_user_home=$work/lftp-home"
         -e "lftp_config_path=$work/lftp.conf")
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(billing_server verify_trust cdr_sync demo)

for playbook in "${want[@]}"; do
    case $playbook in
    billing_server)
        run billing_server-check-fresh billing_server.yml ok --check "${billing[@]}"
        run billing_server billing_server.yml ok "${billing[@]}"
        check "billing_server: the sandbox root is in the system store" \
            "openssl verify -CApath /etc/ssl/certs '$MAGRATHEA_CA_FILE' >/dev/null" 'openssl does not trust it through /etc/ssl/certs'
        check "billing_server: the first CDR sync fetched every file" \
            "[ \$(find '$work/cdr' -maxdepth 1 -type f ! -name '.*' | wc -l) = \$(find '$MAGRATHEA_CDR_LOCAL_DIR' -maxdepth 1 -type f | wc -l) ]" \
            "$work/cdr does not hold the files of $MAGRATHEA_CDR_LOCAL_DIR"
        check "billing_server: lftp verifies certificates" "grep -q 'ssl:verify-certificate' '$work/lftp.conf'" "no lftp settings in $work/lftp.conf"
        check "billing_server: the CDR password is only in the service user's .netrc, mode 0600" \
            "[ \$(stat -c %a '$work/lftp-home/.netrc') = 600 ] && grep -qF -- '$MAGRATHEA_CDR_PASSWORD' '$work/lftp-home/.netrc' && ! grep -qF -- '$MAGRATHEA_CDR_PASSWORD' '$work/lftp.conf' '$work/billing_server.log'" \
            "the .netrc is missing, not 0600, or the password leaked into lftp.conf or the log"
        # The modules now trust the sandbox through the system store the first run filled.
        run billing_server-again billing_server.yml unchanged "${billing[@]}" -e billing_ca_path= -e cdr_sync_ca_path=
        run billing_server-check-again billing_server.yml unchanged --check "${billing[@]}"
        ;;
    verify_trust)
        run verify_trust-check verify_trust.yml unchanged --check
        run verify_trust verify_trust.yml unchanged
        ;;
    cdr_sync)
        run cdr_sync-check cdr_sync.yml ok --check -e "cdr_sync_dest=$work/cdr-job"
        run cdr_sync cdr_sync.yml ok -e "cdr_sync_dest=$work/cdr-job"
        run cdr_sync-again cdr_sync.yml unchanged -e "cdr_sync_dest=$work/cdr-job"
        ;;
    demo)
        run demo-check demo.yml ok --check
        run demo demo.yml ok
        ;;
    *)
        echo "test_playbooks: unknown playbook $playbook" >&2; exit 2 ;;
    esac
done

if grep -lF -- "$MAGRATHEA_CDR_PASSWORD" "$work"/*.log >/dev/null 2>&1 || grep -lF -- "$MAGRATHEA_REST_PASSWORD" "$work"/*.log >/dev/null 2>&1 \
        || grep -lF -- "$MAGRATHEA_NTSAPI_PASSWORD" "$work"/*.log >/dev/null 2>&1; then
    echo "FAIL a sandbox password appears in a playbook log"; failures=$((failures + 1))
fi
[ "$failures" = 0 ] || { echo "test_playbooks: $failures failure(s)"; exit 1; }
echo "test_playbooks: all playbooks passed"
