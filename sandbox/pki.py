# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Throwaway certificate authority for the Magrathea sandbox and the tests.

Owns the sandbox's root CA and the certificates it issues: the server
certificate every sandbox service presents (SANs localhost and 127.0.0.1),
and the deliberately broken ones the tests need (expired, wrong host name,
signed by an unknown CA, a leaf that is not a CA).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ONE_DAY = datetime.timedelta(days=1)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _name(common_name):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Magrathea Sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


class CertificateAuthority:
    """A root CA that can issue server and intermediate certificates."""

    def __init__(self, common_name="Magrathea Sandbox Root CA", not_before=None, not_after=None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name)
        not_before = not_before or _now() - ONE_DAY
        not_after = not_after or _now() + 3650 * ONE_DAY
        builder = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        )
        self.certificate = builder.sign(self.key, hashes.SHA256())

    def issue(self, common_name="localhost", hosts=("localhost", "127.0.0.1"), not_before=None, not_after=None, ca=False):
        """Issue a certificate for ``hosts``; returns (certificate, private key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        not_before = not_before or _now() - ONE_DAY
        not_after = not_after or _now() + 825 * ONE_DAY
        sans = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256()), key


def certificate_pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path, data):
    """Write ``data`` to ``path`` with mode 0600 from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def server_context(cert_file, key_file):
    """A server-side SSLContext (TLS 1.2 at least) for the certificate and key files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def issued_server_context(certificate, key, directory, name="server"):
    """server_context() for an issued certificate and key, written first to ``directory`` as NAME.pem and NAME.key."""
    cert_file, key_file = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    with open(cert_file, "wb") as handle:
        handle.write(certificate_pem(certificate))
    write_private(key_file, key_pem(key))
    return server_context(cert_file, key_file)


def write_server_pki(directory, hosts=("localhost", "127.0.0.1")):
    """Create a fresh root CA and a server certificate in ``directory``.

    Returns a dict of paths: ca_file, cert_file, key_file, chain_file
    (server certificate followed by the root).
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    authority = CertificateAuthority()
    certificate, key = authority.issue(hosts=hosts)
    paths = {
        "ca_file": os.path.join(directory, "ca.pem"),
        "cert_file": os.path.join(directory, "server.pem"),
        "key_file": os.path.join(directory, "server.key"),
    }
    with open(paths["ca_file"], "wb") as handle:
        handle.write(certificate_pem(authority.certificate))
    with open(paths["cert_file"], "wb") as handle:
        handle.write(certificate_pem(certificate))
    write_private(paths["key_file"], key_pem(key))
    write_private(os.path.join(directory, "ca.key"), key_pem(authority.key))
    return paths


def fingerprints(certificate):
    """SHA-1 and SHA-256 fingerprints as colon-separated upper-case hex."""
    return {
        "sha1": ":".join("%02X" % b for b in certificate.fingerprint(hashes.SHA1())),
        "sha256": ":".join("%02X" % b for b in certificate.fingerprint(hashes.SHA256())),
    }
