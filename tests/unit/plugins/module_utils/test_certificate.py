# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Certificate input and validation shared by the trust modules."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ansible_collections.magrathea.secure.plugins.module_utils import _certificate
from ansible_collections.magrathea.secure.plugins.module_utils._certificate import CertificateError
from ansible_collections.magrathea.secure.sandbox import pki

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@pytest.fixture(name='authority', scope='module')
def authority_fixture():
    return pki.CertificateAuthority('Magrathea Test Root CA')


def pem(certificate):
    return pki.certificate_pem(certificate)


def der(certificate):
    return certificate.public_bytes(serialization.Encoding.DER)


def test_one_pem_certificate(authority):
    anchors = _certificate.parse_certificates(pem(authority.certificate), 'content')
    assert len(anchors) == 1
    anchor = anchors[0]
    assert anchor.der == der(authority.certificate)
    assert anchor.sha256 == hashlib.sha256(anchor.der).hexdigest()
    assert anchor.fingerprint == pki.fingerprints(authority.certificate)['sha256']
    assert anchor.subject == 'CN=Magrathea Test Root CA,O=Magrathea Sandbox'
    assert anchor.common_name == 'Magrathea Test Root CA'
    assert anchor.is_ca is True
    assert anchor.pem.encode() == pem(authority.certificate)


def test_der_and_pem_give_the_same_identity(authority):
    from_der = _certificate.parse_certificates(der(authority.certificate), 'src ca.der')
    from_pem = _certificate.parse_certificates(pem(authority.certificate).decode(), 'content')
    assert from_der == from_pem
    assert from_der[0].source == 'src ca.der'


def test_bundle_keeps_order_and_drops_duplicates(authority):
    other = pki.CertificateAuthority('Second Root')
    data = pem(authority.certificate) + b'\n' + pem(other.certificate) + pem(authority.certificate)
    anchors = _certificate.parse_certificates(data, 'content')
    assert [anchor.common_name for anchor in anchors] == ['Magrathea Test Root CA', 'Second Root']
    assert anchors[1].source == 'content (certificate 2)'


def test_pem_with_comments_and_crlf(authority):
    text = b'# Magrathea root\r\n' + pem(authority.certificate).replace(b'\n', b'\r\n') + b'trailing text\r\n'
    assert len(_certificate.parse_certificates(text)) == 1


@pytest.mark.parametrize('data, message', [
    (b'', 'is empty'),
    (b'   \n', 'is empty'),
    (b'hello world', 'neither PEM'),
    (b'-----BEGIN CERTIFICATE-----\nMIIB\n', 'incomplete PEM block'),
    (b'-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', 'found: PUBLIC KEY'),
    (b'-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n', 'corrupt PEM'),
    (b'\x30\x03\x02\x01', 'not a valid X.509 certificate'),
])
def test_unusable_input_is_refused(data, message):
    with pytest.raises(CertificateError, match=message):
        _certificate.parse_certificates(data, 'content')


def test_truncated_certificate_is_refused(authority):
    body = der(authority.certificate)
    for cut in (10, len(body) // 2, len(body) - 1):
        with pytest.raises(CertificateError, match='not a valid X.509 certificate'):
            _certificate.parse_certificates(body[:cut], 'src cut.der')


def test_garbled_pem_is_refused(authority):
    text = pem(authority.certificate).decode()
    lines = text.splitlines()
    lines[3] = lines[3][:20] + 'AAAA' + lines[3][24:]  # valid base64, broken DER
    garbled = '\n'.join(lines[:2] + lines[4:])  # and a line missing
    with pytest.raises(CertificateError, match='(corrupt PEM|not a valid X.509)'):
        _certificate.parse_certificates(garbled, 'content')


def test_private_key_is_refused_without_echoing_it(authority):
    key = pki.key_pem(authority.key)
    with pytest.raises(CertificateError) as caught:
        _certificate.parse_certificates(pem(authority.certificate) + key, 'src bundle.pem')
    assert 'private key' in str(caught.value)
    assert 'MII' not in str(caught.value)


def test_read_anchors_from_a_file(authority, tmp_path):
    path = tmp_path / 'ca.crt'
    path.write_bytes(der(authority.certificate))
    assert _certificate.read_anchors(src=str(path))[0].source == 'src %s' % path
    with pytest.raises(CertificateError, match='does not exist on this host'):
        _certificate.read_anchors(src=str(tmp_path / 'missing.pem'))
    with pytest.raises(CertificateError, match='is a directory'):
        _certificate.read_anchors(src=str(tmp_path))


def test_store_files_are_read_as_pem_or_der_and_never_fail(authority, tmp_path):
    other = pki.CertificateAuthority('Magrathea Other Root CA')
    (tmp_path / 'bundle.pem').write_bytes(pem(authority.certificate) + pem(other.certificate))
    (tmp_path / 'one.der').write_bytes(der(other.certificate))
    (tmp_path / 'notes.txt').write_text('not a certificate\n')
    assert _certificate.file_certificates(str(tmp_path / 'bundle.pem')) == [der(authority.certificate), der(other.certificate)]
    assert _certificate.file_sha256s(str(tmp_path / 'one.der')) == [hashlib.sha256(der(other.certificate)).hexdigest()]
    assert _certificate.file_certificates(str(tmp_path / 'notes.txt')) == []
    assert _certificate.file_sha256s(str(tmp_path / 'missing.pem')) == []


def test_validate_accepts_a_current_ca(authority):
    anchors = _certificate.parse_certificates(pem(authority.certificate))
    assert _certificate.validate_anchors(anchors) == []


def issued(authority, **kwargs):
    certificate, dummy = authority.issue(**kwargs)
    return _certificate.parse_certificates(pem(certificate), 'src x.pem')


@pytest.mark.parametrize('make, message', [
    (issued, 'is not a CA'),
    (lambda ca: _certificate.parse_certificates(pem(pki.CertificateAuthority('Old', not_before=NOW - 30 * DAY, not_after=NOW - DAY).certificate)),
     'expired on'),
    (lambda ca: _certificate.parse_certificates(pem(pki.CertificateAuthority('Future', not_before=NOW + DAY, not_after=NOW + 30 * DAY).certificate)),
     'not valid before'),
])
def test_validate_refuses(authority, make, message):
    with pytest.raises(CertificateError, match=message) as caught:
        _certificate.validate_anchors(make(authority))
    assert 'SHA-256' in str(caught.value)


def test_leaf_message_names_the_issuer(authority):
    with pytest.raises(CertificateError, match='issuer: CN=Magrathea Test Root CA'):
        _certificate.validate_anchors(issued(authority))


def test_intermediate_ca_is_refused_unless_allowed(authority):
    intermediate = issued(authority, common_name='Magrathea Issuing CA', ca=True)
    assert intermediate[0].is_ca and not intermediate[0].self_signed
    with pytest.raises(CertificateError) as caught:
        _certificate.validate_anchors(intermediate)
    message = str(caught.value)
    assert 'is not self-signed' in message and 'issuer: CN=Magrathea Test Root CA' in message and 'allow_intermediate' in message
    warnings = _certificate.validate_anchors(intermediate, allow_intermediate=True)
    assert len(warnings) == 1 and 'not a self-signed root' in warnings[0] and 'Python' in warnings[0]


def test_roots_are_self_signed(authority):
    assert _certificate.parse_certificates(pem(authority.certificate))[0].self_signed


def test_expiring_soon_warns():
    soon = pki.CertificateAuthority('Soon', not_after=NOW + 10 * DAY)
    warnings = _certificate.validate_anchors(_certificate.parse_certificates(pem(soon.certificate)))
    assert len(warnings) == 1 and 'expires on' in warnings[0] and 'less than 30 days' in warnings[0]


@pytest.mark.parametrize('form', ['sha1', 'sha1_lower_nocolon', 'sha256', 'sha256_prefixed'])
def test_fingerprint_forms_match(authority, form):
    prints = pki.fingerprints(authority.certificate)
    value = {'sha1': prints['sha1'], 'sha1_lower_nocolon': prints['sha1'].replace(':', '').lower(),
             'sha256': prints['sha256'], 'sha256_prefixed': 'sha256:' + prints['sha256']}[form]
    assert _certificate.validate_anchors(_certificate.parse_certificates(pem(authority.certificate)), value) == []


@pytest.mark.parametrize('algorithm', ['sha1', 'sha256'])
def test_fingerprint_mismatch_names_both(authority, algorithm):
    other = pki.CertificateAuthority('Impostor Root')
    expected = pki.fingerprints(authority.certificate)[algorithm]
    with pytest.raises(CertificateError) as caught:
        _certificate.validate_anchors(_certificate.parse_certificates(pem(other.certificate)), expected)
    assert expected in str(caught.value)
    assert pki.fingerprints(other.certificate)[algorithm] in str(caught.value)
    assert 'Nothing was changed' in str(caught.value)


def test_fingerprint_with_a_bundle_refuses_the_unpinned_extra(authority):
    other = pki.CertificateAuthority('Extra Root')
    anchors = _certificate.parse_certificates(pem(authority.certificate) + pem(other.certificate))
    with pytest.raises(CertificateError, match='Extra Root'):
        _certificate.validate_anchors(anchors, pki.fingerprints(authority.certificate)['sha256'])


def test_malformed_fingerprint(authority):
    with pytest.raises(CertificateError, match='hex digits'):
        _certificate.validate_anchors(_certificate.parse_certificates(pem(authority.certificate)), 'abcd')


@pytest.mark.parametrize('names, given, label, expected', [
    (['Magrathea Root CA'], None, False, ['magrathea-root-ca']),
    (['Magrathea Root CA'], None, True, ['Magrathea Root CA']),
    (['Magrathea Root CA'], 'mag-root', False, ['mag-root']),
])
def test_entry_names(names, given, label, expected):
    anchors = [_certificate.parse_certificates(pem(pki.CertificateAuthority(name).certificate))[0] for name in names]
    assert _certificate.entry_names(anchors, given, label) == expected


def test_entry_names_of_a_bundle_are_distinct():
    anchors = [_certificate.parse_certificates(pem(pki.CertificateAuthority('Same Name').certificate))[0] for dummy in range(2)]
    named = _certificate.entry_names(anchors, 'mag')
    assert named == ['mag-' + anchors[0].sha256[:8], 'mag-' + anchors[1].sha256[:8]]
    unnamed = _certificate.entry_names(anchors)
    assert len(set(unnamed)) == 2 and all(name.startswith('same-name-') for name in unnamed)


BUNDLE = '/etc/ssl/certs/ca-certificates.crt'


@pytest.mark.filterwarnings('ignore::cryptography.utils.CryptographyDeprecationWarning')
def test_reader_agrees_with_cryptography_on_every_system_root():
    with open(BUNDLE, 'rb') as handle:
        anchors = _certificate.parse_certificates(handle.read(), BUNDLE)
    assert len(anchors) > 50
    for anchor in anchors:
        reference = x509.load_der_x509_certificate(anchor.der)
        try:
            is_ca = reference.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        assert anchor.subject == reference.subject.rfc4514_string()
        assert anchor.issuer == reference.issuer.rfc4514_string()
        assert anchor.not_before == reference.not_valid_before_utc
        assert anchor.not_after == reference.not_valid_after_utc
        assert anchor.is_ca == is_ca


def test_summary_holds_only_public_facts(authority):
    summary = _certificate.parse_certificates(pem(authority.certificate))[0].summary()
    assert set(summary) == {'subject', 'sha256', 'sha1', 'not_after'}


def test_content_is_no_log_like_copy_content():
    assert _certificate.trust_input_argument_spec()['content']['no_log'] is True


def test_a_malformed_validity_is_described_not_echoed(authority):
    body = bytearray(der(authority.certificate))
    # Replace the digits of notAfter (UTCTime or GeneralizedTime) with text that is no time: the message must not repeat it.
    start = bytes(body).index(authority.certificate.not_valid_after_utc.strftime('%y%m%d%H%M%S').encode())
    body[start:start + 12] = b'SECRETSECRET'
    with pytest.raises(CertificateError) as caught:
        _certificate.parse_certificates(bytes(body), 'content')
    assert 'SECRET' not in str(caught.value) and 'not a valid X.509 certificate' in str(caught.value)


def test_private_key_alone_is_described(authority):
    with pytest.raises(CertificateError) as caught:
        _certificate.parse_certificates(pki.key_pem(authority.key), 'content')
    message = str(caught.value)
    assert 'a private key' in message
    assert pki.key_pem(authority.key).decode().splitlines()[1][:16] not in message


@pytest.mark.parametrize('kind, name, problem', [
    ('file', 'magrathea-root-ca', None),
    ('file', 'Mag_Root.2025+new', None),
    ('file', 'new\nline', 'control character'),
    ('file', 'a/b', 'letters, digits'),
    ('file', '.hidden', 'letters, digits'),
    ('file', '-rf', 'letters, digits'),
    ('file', 'with space', 'letters, digits'),
    ('file', '', 'empty'),
    ('file', 'x' * 201, 'at most 200'),
    ('alias', 'magrathea root ca', None),
    ('alias', 'Zürich Root', None),
    ('alias', '-J-version', "starts with '-'"),
    ('alias', 'tab\there', 'control character'),
    ('alias', 'c1\x85control', 'control character'),
    ('nickname', 'Magrathea Root CA', None),
    ('nickname', '-d', "starts with '-'"),
    ('nickname', 'token:nick', "':'"),
    ('nickname', 'line\rbreak', 'control character'),
    ('nickname', ' padded', 'white space'),
])
def test_entry_name_rules(kind, name, problem):
    found = _certificate.entry_name_problem(kind, name)
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_entry_names_are_checked_with_the_option_name():
    with pytest.raises(CertificateError) as caught:
        _certificate.check_entry_names('file', ['ok', 'new\nline'], 'name')
    assert str(caught.value).startswith('name ') and 'nothing was changed' in str(caught.value).lower()


def test_derived_nicknames_are_always_valid():
    awkward = pki.CertificateAuthority('-Evil:Root\tCA')
    anchors = _certificate.parse_certificates(pem(awkward.certificate))
    for kind, label in (('nickname', True), ('alias', False), ('file', False)):
        names = _certificate.entry_names(anchors, label=label)
        assert _certificate.entry_name_problem(kind, names[0]) is None, names
