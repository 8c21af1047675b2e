# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""`python -m sandbox` on a Python that lacks the sandbox's own packages names what to install."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", name="bare_python")
def bare_python_fixture(tmp_path_factory):
    """A real virtualenv with nothing installed: no cryptography, pyftpdlib or pyOpenSSL."""
    venv = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


@pytest.mark.parametrize("action", ["up", "serve"])
def test_missing_packages_are_named_with_the_command_that_installs_them(bare_python, tmp_path, action):
    state = tmp_path / "state"
    result = subprocess.run([bare_python, "-m", "sandbox", action, "--dir", str(state)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    for package in ("cryptography", "pyftpdlib", "pyOpenSSL"):
        assert package in result.stderr
    # cryptography is pinned in requirements.txt (the collection's own requirement), the server packages in
    # requirements-sandbox.txt.
    command = "%s -m pip install -r %s -r %s" % (bare_python, os.path.join(ROOT, "requirements.txt"),
                                                 os.path.join(ROOT, "requirements-sandbox.txt"))
    assert command in result.stderr
    # Nothing was started or written.
    assert not state.exists()


def test_down_and_help_need_none_of_them(bare_python, tmp_path):
    down = subprocess.run([bare_python, "-m", "sandbox", "down", "--dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert down.returncode == 0, down
    assert "sandbox: down" in down.stdout
    usage = subprocess.run([bare_python, "-m", "sandbox", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           check=False)
    assert usage.returncode == 0, usage
    assert "python -m sandbox up --dir DIR" in usage.stdout
