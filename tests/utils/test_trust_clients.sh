#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Real clients against the sandbox's endpoints, before and after the magrathea.secure.trust role installs the sandbox
# root, and after it removes it again (make test-trust-clients):
#
#   curl, openssl s_client, Python's default context, Java (SSLSocket and HttpsURLConnection on the JDK's default
#   store, for every JDK) and headless Chromium (Debian's chromium, on an NSS database in a throwaway home) must
#   refuse the endpoints before, accept them after the role's install, and refuse them again after state=absent. No
#   client is handed a CA: each trusts what its own store trusts. Then a second removal must change nothing, and the
#   role's trust_check (expect=untrusted) must confirm that no enabled store trusts the endpoints.
#
# The role writes the host's system store, and on Debian the hook of ca-certificates-java writes the JDKs' store
# /etc/ssl/certs/java/cacerts through a dpkg trigger; so everything runs inside setup_private_root's
# in_private_root.sh: a private mount namespace over tmpfs copies of those stores and of dpkg's state, with the hooks
# enabled as on a real host, and the host's own stores fingerprinted before and after. Needs root; logs in
# build/trust-clients/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VENV_BIN:-$root/.venv/bin}
work=${TRUST_CLIENTS_DIR:-$root/build/trust-clients}

if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || { echo "test_trust_clients: needs root (private mount namespace over the trust stores)" >&2; exit 1; }
    dirs="/usr/local/share/ca-certificates /etc/ssl/certs /var/lib/ca-certificates-java /var/lib/dpkg"
    files="/var/log/dpkg.log /var/log/alternatives.log"
    for path in $dirs $files /etc/ssl/certs/java/cacerts; do
        [ -e "$path" ] || { echo "test_trust_clients: $path is missing; run make deps (ca-certificates-java)" >&2; exit 1; }
    done
    MAGRATHEA_PRIVATE_DIRS=$dirs MAGRATHEA_PRIVATE_FILES=$files MAGRATHEA_PRIVATE_HOOKS=run \
        exec "$root/tests/integration/targets/setup_private_root/files/in_private_root.sh" "$0" --inside
fi

# -- inside the private namespace -------------------------------------------------------------------------------
mountpoint -q /var/lib/dpkg || { echo "test_trust_clients: /var/lib/dpkg is not a private mount; refusing to go on" >&2; exit 1; }
# update-ca-certificates' Java hook runs every pending dpkg trigger: only ca-certificates-java's may be pending.
if dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | grep -v '^ii ' | grep -q .; then
    echo "test_trust_clients: some packages are not fully installed or have pending triggers; fix dpkg first" >&2
    exit 1
fi

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
ca_sha256=$(openssl x509 -noout -fingerprint -sha256 -in "$MAGRATHEA_CA_FILE" | sed 's/^.*=//')

# Chromium's database, as its first start leaves it, in a throwaway home.
home="$work/home"
mkdir -p "$home/.pki/nssdb"
certutil -N --empty-password -d "sql:$home/.pki/nssdb"

failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# verdict CLIENT: "accept" or "refuse" for the client's own trust store, or "error: ..." for anything else.
verdict() {
    local log="$work/$phase-$1.log" rc=0
    case $1 in
    curl)
        curl -sS --max-time 10 "$MAGRATHEA_REST_URL" >"$log" 2>&1 || rc=$?
        case $rc in 0) echo accept ;; 60) echo refuse ;; *) echo "error: curl exit $rc" ;; esac ;;
    openssl)
        openssl s_client -connect "localhost:$MAGRATHEA_NTSAPI_PORT" -servername localhost -verify_hostname localhost \
            -verify_return_error </dev/null >"$log" 2>&1 || rc=$?
        if [ $rc = 0 ] && grep -q 'Verify return code: 0 (ok)' "$log"; then echo accept
        elif grep -q 'unable to get local issuer certificate' "$log"; then echo refuse
        else echo "error: openssl exit $rc"; fi ;;
    python)
        "$bin/python" - "$MAGRATHEA_NTSAPI_PORT" "$MAGRATHEA_REST_URL" >"$log" 2>&1 <<'PYTHON' || rc=$?
import socket, ssl, sys, urllib.request
context = ssl.create_default_context()  # the system store, nothing handed to it
verified = []
try:
    context.wrap_socket(socket.create_connection(('localhost', int(sys.argv[1])), timeout=10), server_hostname='localhost').close()
    verified.append(True)
except ssl.SSLCertVerificationError as exc:
    print('socket refused:', exc.verify_message)
    verified.append(False)
try:
    urllib.request.urlopen(sys.argv[2], timeout=10, context=context)
    verified.append(True)
except urllib.error.HTTPError:
    verified.append(True)  # a verified connection; the sandbox wants credentials
except urllib.error.URLError as exc:
    print('urlopen refused:', exc.reason)
    verified.append(False if isinstance(exc.reason, ssl.SSLCertVerificationError) else None)
sys.exit(0 if all(v is True for v in verified) else 1 if all(v is False for v in verified) else 2)
PYTHON
        case $rc in 0) echo accept ;; 1) echo refuse ;; *) echo "error: python exit $rc" ;; esac ;;
    java-*)
        "/usr/lib/jvm/${1#java-}/bin/java" tests/utils/TrustClient.java localhost "$MAGRATHEA_NTSAPI_PORT" "$MAGRATHEA_REST_URL" >"$log" 2>&1 || rc=$?
        case $rc in 0) echo accept ;; 1) echo refuse ;; *) echo "error: java exit $rc" ;; esac ;;
    chromium)
        HOME=$home timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
            --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$home/ud-$phase" \
            --dump-dom "$MAGRATHEA_REST_URL" >"$log" 2>"$log.stderr" || rc=$?
        if grep -q 'Wrong username' "$log"; then echo accept
        elif [ $rc = 0 ] && ! grep -q . "$log"; then echo refuse
        else echo "error: chromium exit $rc"; fi ;;
    esac
}

jdks=()
for java in /usr/lib/jvm/*/bin/java; do
    [ -L "$(dirname "$(dirname "$java")")" ] && continue  # java-1.17.0-openjdk-amd64 is a link to java-17-openjdk-amd64
    jdks+=("java-$(basename "$(dirname "$(dirname "$java")")")")
done
clients=(curl openssl python "${jdks[@]}" chromium)

# expect PHASE accept|refuse: every client must give that verdict.
expect() {
    phase=$1
    local client got
    for client in "${clients[@]}"; do
        got=$(verdict "$client")
        if [ "$got" = "$2" ]; then echo "ok   $phase: $client ${got}s"; else fail "$phase: $client: expected $2, got $got (see $work/$phase-$client.log)"; fi
    done
}

# role NAME STATE EXPECT: run the role; EXPECT is "changed" or "unchanged" (then no task may report a change).
role() {
    local name=$1 log="$work/$1.log" recap changed
    cat >"$work/$name.yml" <<EOF
---
- name: The trust role, $2
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: $bin/python
  roles:
    - role: magrathea.secure.trust
      vars:
        trust_ca_src: "{{ lookup('ansible.builtin.env', 'MAGRATHEA_CA_FILE') }}"
        trust_name: magrathea-sandbox
        trust_nickname: Magrathea Sandbox
        trust_state: $2
        trust_browser_nssdbs: ["$home/.pki/nssdb"]
        trust_check_enabled: true
        trust_check_endpoints:
          - {name: NTSAPI, host: localhost, port: $MAGRATHEA_NTSAPI_PORT}
          - {name: CDR, host: localhost, port: $MAGRATHEA_CDR_PORT, protocol: ftps}
          - {name: REST, url: "$MAGRATHEA_REST_URL"}
EOF
    if ! "$bin/ansible-playbook" -i localhost, "$work/$name.yml" >"$log" 2>&1; then
        fail "$name: the role failed (see $log)"; tail -n 30 "$log"; return
    fi
    recap=$(grep -E '^localhost +: ok=' "$log" | tail -n 1)
    changed=$(sed -E 's/.* changed=([0-9]+).*/\1/' <<<"$recap")
    if [ "$3" = changed ] && [ "$changed" = 0 ]; then fail "$name: nothing changed: $recap"; return; fi
    if [ "$3" = unchanged ] && [ "$changed" != 0 ]; then fail "$name: expected no change: $recap"; grep -E '^changed:' "$log"; return; fi
    grep -q 'or after a removal that they refuse them' "$log" || { fail "$name: the role's trust_check did not run"; return; }
    echo "ok   $name: $recap"
}

java_store_holds_root() {
    keytool -list -v -keystore /etc/ssl/certs/java/cacerts -storepass changeit 2>/dev/null | grep -qi "SHA256: $ca_sha256\$"
}

expect before refuse
role install present changed
java_store_holds_root || fail "install: /etc/ssl/certs/java/cacerts does not hold the sandbox root"
expect installed accept
role remove absent changed
java_store_holds_root && fail "remove: /etc/ssl/certs/java/cacerts still holds the sandbox root"
[ -e /usr/local/share/ca-certificates/magrathea-sandbox.crt ] && fail "remove: the anchor file is still there"
expect removed refuse
role remove-again absent unchanged
expect removed-again refuse

[ "$failures" = 0 ] || { echo "test_trust_clients: $failures failure(s)"; exit 1; }
echo "test_trust_clients: every client refused, accepted, then refused again"
