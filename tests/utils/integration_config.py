# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Print tests/integration/integration_config.yml for ansible-test from a sandbox's sandbox.json.

ansible-test passes only a fixed set of environment variables to the
playbooks it runs; the sandbox settings reach the targets as variables:
sandbox_env (the MAGRATHEA_* settings, for `environment:`), sandbox_python
(the interpreter that has the sandbox's dependencies) and sandbox_root (the
directory holding the `sandbox` package, to start a sandbox of a target's own).
"""

import json
import sys


def main(settings_path, python, root):
    with open(settings_path, encoding='utf-8') as handle:
        settings = json.load(handle)
    # JSON is valid YAML; ansible-test reads this file as variables.
    print(json.dumps({'sandbox_env': settings, 'sandbox_python': python, 'sandbox_root': root}, indent=2, sort_keys=True))


if __name__ == '__main__':
    main(*sys.argv[1:])
