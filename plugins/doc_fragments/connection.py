# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Connection options shared by every client module (one meaning, one spelling).

    DOCUMENTATION holds the options of every service and says where the MAGRATHEA_* fallbacks are read; NTSAPI, CDR
    and REST add the options whose defaults and variables are the service's own (the REST module takes a URL instead of
    host and port).
    """

    DOCUMENTATION = r'''
options:
  ca_path:
    description:
      - PEM file (or hashed directory) of the CA certificates to trust, normally the Magrathea root CA.
      - When not set, the operating system's trust store is used, so a root installed
        with M(magrathea.secure.ca_trust) is trusted.
      - Falls back to E(MAGRATHEA_CA_FILE), on the controller first, then on the managed host. On the controller it
        must name a PEM file there, which the action plugin copies into the task's temporary directory on the managed
        host (removed after the task); in the managed host's environment it names a file or directory on that host.
    type: path
  validate_certs:
    description:
      - Verify the server certificate and its host name.
      - Set to V(false) only for a throwaway test; the module then warns, because
        anyone on the path can read the session, password included.
    type: bool
    default: true
  fingerprint:
    description:
      - Pin the server certificate to one of these SHA-1 or SHA-256 fingerprints (hex, colons optional, any case).
      - Give two while Magrathea renews a certificate (the current one and the next one from their notice), so that
        the switch does not break a pinned fleet.
      - Checked right after the TLS handshake and before any credential is sent;
        on a mismatch nothing is sent and the task fails naming every pin and what the server presented.
    type: list
    elements: str
  timeout:
    description:
      - Seconds to wait for a connection or for the next bytes of an answer; must be more than 0.
      - The module also bounds each whole exchange, so a server that answers one byte at a time cannot hold the task.
    type: float
    default: 30
notes:
  - "Connection settings given once on the controller: an option that the task (or C(module_defaults)) does not set
    is taken from the controller's C(MAGRATHEA_*) environment variable named in its description, for example set by an
    AWX or Automation Platform credential (the collection ships one, see C(extensions/awx/)). The module's action plugin
    passes it as a module argument, so passwords stay C(no_log) and never appear on a command line or in the remote
    command's environment. Only then does the module read the same variable in the managed host's environment (for
    example set with the C(environment) keyword), and only then does the option take its default. A variable that is
    empty on the controller counts as unset there."
'''

    NTSAPI = r'''
options:
  host:
    description:
      - Host name of the NTSAPI endpoint (NTSAPI over TLS).
      - The certificate must be valid for this name unless O(validate_certs=false).
      - Falls back to E(MAGRATHEA_NTSAPI_HOST) (on the controller, then on the managed host).
    type: str
    default: secure.magrathea-telecom.co.uk
  port:
    description:
      - TCP port of the NTSAPI endpoint (NTSAPI over TLS).
      - Falls back to E(MAGRATHEA_NTSAPI_PORT) (on the controller, then on the managed host).
    type: int
    default: 777
  username:
    description:
      - User name of the NTSAPI account.
      - Falls back to E(MAGRATHEA_NTSAPI_USERNAME) (on the controller, then on the managed host).
    type: str
  password:
    description:
      - Password of the NTSAPI account. Never logged, never put on a command line.
      - Falls back to E(MAGRATHEA_NTSAPI_PASSWORD) (on the controller, then on the managed host).
    type: str
notes:
  - The connection goes straight to O(host) and O(port); HTTP proxy settings (E(https_proxy), E(no_proxy)) do not apply
    to NTSAPI.
'''

    CDR = r'''
options:
  host:
    description:
      - Host name of the CDR server (explicit FTP over TLS).
      - The certificate must be valid for this name unless O(validate_certs=false).
      - Falls back to E(MAGRATHEA_CDR_HOST) (on the controller, then on the managed host).
    type: str
    default: cdr.magrathea-telecom.co.uk
  port:
    description:
      - TCP port of the CDR server (explicit FTP over TLS).
      - Falls back to E(MAGRATHEA_CDR_PORT) (on the controller, then on the managed host).
    type: int
    default: 21
  username:
    description:
      - User name of the CDR server account.
      - Falls back to E(MAGRATHEA_CDR_USERNAME) (on the controller, then on the managed host).
    type: str
  password:
    description:
      - Password of the CDR server account. Never logged, never put on a command line.
      - Falls back to E(MAGRATHEA_CDR_PASSWORD) (on the controller, then on the managed host).
    type: str
notes:
  - The connection goes straight to O(host) and O(port); HTTP proxy settings (E(https_proxy), E(no_proxy)) do not apply
    to explicit FTPS.
'''

    REST = r'''
options:
  username:
    description:
      - User name for the REST API (HTTP Basic authentication).
      - Falls back to E(MAGRATHEA_REST_USERNAME) (on the controller, then on the managed host).
    type: str
  password:
    description:
      - Password for the REST API. Never logged, never put on a command line.
      - Falls back to E(MAGRATHEA_REST_PASSWORD) (on the controller, then on the managed host).
    type: str
'''
