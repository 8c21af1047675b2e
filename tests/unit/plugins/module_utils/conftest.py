# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by the tests that run loopback TLS servers: a throwaway CA and its certificate as a file."""

from __future__ import annotations

import pytest

from ansible_collections.magrathea.secure.sandbox import pki


@pytest.fixture(name='authority', scope='module')
def authority_fixture():
    return pki.CertificateAuthority()


@pytest.fixture(name='ca_file')
def ca_file_fixture(authority, tmp_path):
    path = tmp_path / 'ca.pem'
    path.write_bytes(pki.certificate_pem(authority.certificate))
    return str(path)
