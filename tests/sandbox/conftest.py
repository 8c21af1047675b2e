# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures shared by the sandbox's service tests: one throwaway PKI per module and its TLS contexts."""

import ssl

import pytest

from sandbox.pki import server_context, write_server_pki


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory):
    return write_server_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module", name="server_context")
def server_context_fixture(pki):
    return server_context(pki["cert_file"], pki["key_file"])


@pytest.fixture(scope="module", name="client_context")
def client_context_fixture(pki):
    return ssl.create_default_context(cafile=pki["ca_file"])
