# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Connection options shared by every client module (one meaning, one spelling).

    DOCUMENTATION holds the options of every service; NTSAPI and CDR add the host and port with that service's defaults
    (the REST module takes a URL instead).
    """

    DOCUMENTATION = r'''
options:
  username:
    description:
      - Account user name.
      - Falls back to E(MAGRATHEA_<SERVICE>_USERNAME).
    type: str
  password:
    description:
      - Account password. Never logged, never put on a command line.
      - Falls back to E(MAGRATHEA_<SERVICE>_PASSWORD).
    type: str
  ca_path:
    description:
      - PEM file (or hashed directory) of the CA certificates to trust, normally the Magrathea root CA.
      - When not set, the operating system's trust store is used, so a root installed
        with M(magrathea.secure.ca_trust) is trusted.
      - Falls back to E(MAGRATHEA_CA_FILE).
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
'''

    NTSAPI = r'''
options:
  host:
    description:
      - Host name of the NTSAPI endpoint (NTSAPI over TLS).
      - The certificate must be valid for this name unless O(validate_certs=false).
      - Falls back to the environment variable E(MAGRATHEA_NTSAPI_HOST).
    type: str
    default: secure.magrathea-telecom.co.uk
  port:
    description:
      - TCP port of the NTSAPI endpoint (NTSAPI over TLS).
      - Falls back to E(MAGRATHEA_NTSAPI_PORT).
    type: int
    default: 777
'''

    CDR = r'''
options:
  host:
    description:
      - Host name of the CDR server (explicit FTP over TLS).
      - The certificate must be valid for this name unless O(validate_certs=false).
      - Falls back to the environment variable E(MAGRATHEA_CDR_HOST).
    type: str
    default: cdr.magrathea-telecom.co.uk
  port:
    description:
      - TCP port of the CDR server (explicit FTP over TLS).
      - Falls back to E(MAGRATHEA_CDR_PORT).
    type: int
    default: 21
'''
