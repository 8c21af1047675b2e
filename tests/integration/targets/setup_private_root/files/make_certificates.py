# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write the certificates the trust targets feed to the modules.

    PYTHONPATH=<collection root> python make_certificates.py DIR

DIR/leaf.pem (a server certificate, not a CA), DIR/expired-ca.pem, DIR/future-ca.pem,
DIR/other-ca.pem (a valid CA that is not the sandbox's), DIR/intermediate-ca.pem (a CA
that is not self-signed), DIR/corrupt.pem (a PEM whose DER is cut short),
DIR/ca-and-key.pem (other-ca.pem followed by its private key, as a careless export
gives) and DIR/certificates.json (their SHA-1 and SHA-256, and the first line of that
key's base64 under "key_line", for tests that look for it in logs). Uses
sandbox/pki.py: run it with the sandbox's Python.
"""

import base64
import datetime
import json
import os
import sys

from sandbox import pki

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def main(directory):
    issuer = pki.CertificateAuthority('Intermediate Issuer')
    other = pki.CertificateAuthority('Other Root')
    made = {
        'leaf': pki.CertificateAuthority('Leaf Issuer').issue()[0],
        'intermediate-ca': issuer.issue('Magrathea Issuing CA', hosts=(), ca=True)[0],
        'expired-ca': pki.CertificateAuthority('Expired Root', not_before=NOW - 400 * DAY, not_after=NOW - DAY).certificate,
        'future-ca': pki.CertificateAuthority('Future Root', not_before=NOW + 10 * DAY, not_after=NOW + 400 * DAY).certificate,
        'other-ca': other.certificate,
    }
    prints = {}
    for name, certificate in made.items():
        with open(os.path.join(directory, name + '.pem'), 'wb') as handle:
            handle.write(pki.certificate_pem(certificate))
        prints[name] = pki.fingerprints(certificate)
    der = made['other-ca'].public_bytes(pki.serialization.Encoding.DER)
    body = base64.encodebytes(der[:len(der) // 2]).decode('ascii')
    with open(os.path.join(directory, 'corrupt.pem'), 'w') as handle:
        handle.write('-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n' % body)
    key = pki.key_pem(other.key)
    with open(os.path.join(directory, 'ca-and-key.pem'), 'wb') as handle:
        handle.write(pki.certificate_pem(other.certificate) + key)
    prints['key_line'] = key.decode('ascii').splitlines()[1]
    with open(os.path.join(directory, 'certificates.json'), 'w') as handle:
        json.dump(prints, handle, indent=2)


if __name__ == '__main__':
    main(sys.argv[1])
