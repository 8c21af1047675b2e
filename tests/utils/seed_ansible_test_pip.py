# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Seed ansible-test's pip bootstrap cache with an offline stand-in for get-pip.py.

ansible-test bootstraps pip into each virtual environment it creates with a
get-pip.py downloaded from a host that this project's machines cannot reach.
The stand-in installs the pip bundled with Python (ensurepip) and then asks
the package index for the exact pip version ansible-test pins, so every
sanity and unit category still runs in its own pinned environment.
"""

import os
import sys

from ansible_test._internal.python_requirements import get_venv_packages

STAND_IN = '''"""Offline stand-in for get-pip.py, written by magrathea.secure's Makefile."""
import subprocess
import sys

ARGS = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, "-m", "pip", "install"] + ARGS, check=True)
'''


class _Python:  # the only attribute get_venv_packages reads
    version = '%d.%d' % sys.version_info[:2]


def main():
    version = get_venv_packages(_Python())['pip']
    path = os.path.expanduser('~/.ansible/test/cache/get_pip_%s.py' % version.replace('.', '_'))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(STAND_IN)
    print('seeded %s (pip %s via ensurepip)' % (path, version))


if __name__ == '__main__':
    main()
