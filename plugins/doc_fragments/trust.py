# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """The certificate input shared by every trust-store module (one meaning, one spelling)."""

    DOCUMENTATION = r'''
options:
  src:
    description:
      - Path of the CA certificate on the managed host, in PEM or DER form.
      - A PEM file may hold a bundle of several CA certificates; each is handled on its own.
      - Exactly one of O(src) and O(content) is required.
    type: path
  content:
    description:
      - The CA certificate as PEM text (one certificate or a bundle).
      - Exactly one of O(src) and O(content) is required.
      - Never logged, like the O(ansible.builtin.copy#module:content) of M(ansible.builtin.copy), so that a private key
        pasted here by mistake does not reach C(-vvv) output; messages describe a refused input (a private key, a subject,
        a fingerprint) and never repeat it.
    type: str
  fingerprint:
    description:
      - SHA-1 or SHA-256 fingerprint (hex, colons optional, any case) the certificate must have.
      - When given, every certificate of the input must be this one; anything else is refused and nothing is written.
    type: str
  allow_intermediate:
    description:
      - Also trust a CA certificate that is not a self-signed root (an intermediate or cross-signed CA), with a warning.
      - By default such a certificate is refused and nothing is written, because clients then disagree; curl, Java and
        browsers accept the servers under it, OpenSSL's C(s_client) and Python refuse them.
    type: bool
    default: false
  state:
    description:
      - V(present) makes the store trust the certificate; V(absent) takes it out under every name it is held.
      - With V(present) a certificate is refused, and nothing is written, when it is not a CA (basicConstraints CA:TRUE),
        is not a self-signed root (see O(allow_intermediate)), has expired or is not yet valid; the module warns when it
        expires within 30 days.
      - A certificate is identified by the SHA-256 of its DER bytes, never by a file name, alias or nickname.
      - Every name is checked before anything is read or written.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Results, diffs and messages show subjects, fingerprints and paths only; never key material or passwords.
'''
