#!/bin/sh
# The trust role's three runs, one after the other, inside one private copy of the system store
# (started by setup_private_root's in_private_root.sh). Each run is framed by markers for the caller.
set -u
for playbook in install install_again remove_and_errors; do
    echo "=== $playbook ==="
    "$TRUST_ROLE_PYTHON" -m ansible.cli.playbook -i localhost, -c local -e "@$TRUST_ROLE_VARS" "$TRUST_ROLE_DIR/$playbook.yml"
    echo "=== $playbook rc=$? ==="
done
