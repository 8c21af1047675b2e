#!/bin/sh
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The trust role's runs, one after the other, inside one private copy of the system store (started by
# setup_private_root's in_private_root.sh). Each run is framed by markers for the caller; refused_key runs at -vvv.
set -u
for playbook in install install_again remove_and_errors remove_again refused_key; do
    verbosity=
    [ "$playbook" = refused_key ] && verbosity=-vvv
    echo "=== $playbook ==="
    "$TRUST_ROLE_PYTHON" -m ansible.cli.playbook $verbosity -i localhost, -c local -e "@$TRUST_ROLE_VARS" "$TRUST_ROLE_DIR/$playbook.yml" 2>&1
    echo "=== $playbook rc=$? ==="
done
