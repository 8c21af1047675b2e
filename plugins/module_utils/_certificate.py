# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Certificate input and validation for the trust modules of magrathea.secure.

Private to this collection: not for use by other collections.

Owns what every trust module does before it touches a store: reading the
certificate from ``src`` (a path on the managed host) or ``content`` (PEM
text), accepting PEM or DER and one certificate or a bundle, and refusing a
certificate that is not a CA, is not a self-signed root (unless allowed),
is outside its validity period or does not match the pinned
``fingerprint``; and the names of store entries (anchor file names, Java
aliases, NSS nicknames), checked before anything is written. A
certificate's identity is the SHA-256 of its DER bytes, everywhere.
Messages describe a refused input (a subject, a fingerprint, "a private
key") and never repeat it. The fields are read with _der, so the modules
need no third-party library on the managed host.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
import unicodedata

from ansible_collections.magrathea.secure.plugins.module_utils._der import DerError, check_structure, children, element, oid
from ansible_collections.magrathea.secure.plugins.module_utils._text import shown_value
from ansible_collections.magrathea.secure.plugins.module_utils._tls import format_fingerprint, normalize_fingerprint

EXPIRY_WARNING_DAYS = 30

_PEM_BLOCK = re.compile(rb'-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----', re.DOTALL)
_CERTIFICATE_LABELS = (b'CERTIFICATE', b'X509 CERTIFICATE')
_BASIC_CONSTRAINTS = '2.5.29.19'
_COMMON_NAME = '2.5.4.3'
# The short names RFC 4514 defines; any other attribute is written as its dotted OID.
_ATTRIBUTE_NAMES = {
    '2.5.4.3': 'CN', '2.5.4.7': 'L', '2.5.4.8': 'ST', '2.5.4.10': 'O', '2.5.4.11': 'OU', '2.5.4.6': 'C',
    '2.5.4.9': 'STREET', '0.9.2342.19200300.100.1.25': 'DC', '0.9.2342.19200300.100.1.1': 'UID',
}
_STRING_DECODERS = {
    0x0c: 'utf-8', 0x12: 'ascii', 0x13: 'ascii', 0x14: 'latin-1', 0x16: 'ascii', 0x1a: 'ascii',
    0x1c: 'utf-32-be', 0x1e: 'utf-16-be',
}


class CertificateError(Exception):
    """The certificate input is unusable or must not be trusted; the message says which and what to do."""


def _escape_dn_value(value):
    # RFC 4514 section 2.4, the way cryptography's rfc4514_string() writes it.
    if not value:
        return ''
    for char, escaped in (('\\', '\\\\'), ('"', '\\"'), ('+', '\\+'), (',', '\\,'), (';', '\\;'),
                          ('<', '\\<'), ('>', '\\>'), ('\0', '\\00')):
        value = value.replace(char, escaped)
    if value[0] in ('#', ' '):
        value = '\\' + value
    if value[-1] == ' ':
        value = value[:-1] + '\\ '
    return value


def _name(data, start, stop):
    """(RFC 4514 string, common name) of a DER Name."""
    rdns = []
    common_name = None
    for tag, begin, end in children(data, start, stop):
        if tag != 0x31:
            raise DerError('name component is not a SET')
        attributes = []
        for attr_tag, attr_begin, attr_end in children(data, begin, end):
            if attr_tag != 0x30:
                raise DerError('name attribute is not a SEQUENCE')
            parts = children(data, attr_begin, attr_end)
            if len(parts) != 2 or parts[0][0] != 0x06:
                raise DerError('malformed name attribute')
            identifier = oid(data[parts[0][1]:parts[0][2]])
            value_tag, value_begin, value_end = parts[1]
            raw = data[value_begin:value_end]
            encoding = _STRING_DECODERS.get(value_tag)
            try:
                value = raw.decode(encoding) if encoding else '#' + binascii.hexlify(raw).decode('ascii')
            except UnicodeDecodeError:
                value = raw.decode('latin-1')
            if identifier == _COMMON_NAME and common_name is None:
                common_name = value
            text = value if not encoding else _escape_dn_value(value)
            attributes.append('%s=%s' % (_ATTRIBUTE_NAMES.get(identifier, identifier), text))
        rdns.append('+'.join(attributes))
    return ','.join(reversed(rdns)), common_name


def _time(tag, raw):
    formats = {0x17: '%y%m%d%H%M%SZ', 0x18: '%Y%m%d%H%M%SZ'}  # UTCTime (years 1950-2049), GeneralizedTime
    if tag not in formats:
        raise DerError('validity time has unexpected tag 0x%02x' % tag)
    try:
        parsed = datetime.datetime.strptime(raw.decode('ascii'), formats[tag])
    except (UnicodeDecodeError, ValueError):
        raise DerError('a validity time is not in the form YYMMDDHHMMSSZ') from None  # never repeat the input
    if tag == 0x17 and parsed.year >= 2050:
        parsed = parsed.replace(year=parsed.year - 100)
    return parsed.replace(tzinfo=datetime.timezone.utc)


def _basic_constraints_ca(data, start, stop):
    fields = children(data, start, stop)
    if len(fields) != 1 or fields[0][0] != 0x30:
        raise DerError('malformed basicConstraints')
    inner = children(data, fields[0][1], fields[0][2])
    return bool(inner) and inner[0][0] == 0x01 and data[inner[0][1]:inner[0][2]] != b'\x00'


def _parse(der):
    """The fields the trust checks need from a DER certificate."""
    tag, start, stop = element(der, 0, len(der))
    if tag != 0x30 or stop != len(der):
        raise DerError('not a single DER SEQUENCE')
    check_structure(der, start, stop)
    parts = children(der, start, stop)
    if len(parts) != 3 or parts[0][0] != 0x30 or parts[2][0] != 0x03:
        raise DerError('not an X.509 certificate')
    fields = children(der, parts[0][1], parts[0][2])
    if fields and fields[0][0] == 0xa0:
        fields = fields[1:]
    if len(fields) < 6 or fields[0][0] != 0x02 or any(field[0] != 0x30 for field in fields[1:6]):
        raise DerError('malformed tbsCertificate')
    issuer, dummy = _name(der, fields[2][1], fields[2][2])
    # Self-issued, the way path building decides it: the issuer and subject names are the same bytes.
    self_signed = der[fields[2][1]:fields[2][2]] == der[fields[4][1]:fields[4][2]]
    validity = children(der, fields[3][1], fields[3][2])
    if len(validity) != 2:
        raise DerError('malformed validity')
    subject, common_name = _name(der, fields[4][1], fields[4][2])
    is_ca = False
    for field_tag, begin, end in fields[6:]:
        if field_tag != 0xa3:
            continue
        outer = children(der, begin, end)
        if len(outer) != 1 or outer[0][0] != 0x30:
            raise DerError('malformed extensions')
        for ext_tag, ext_begin, ext_end in children(der, outer[0][1], outer[0][2]):
            ext = children(der, ext_begin, ext_end)
            if ext_tag != 0x30 or len(ext) < 2 or ext[0][0] != 0x06 or ext[-1][0] != 0x04:
                raise DerError('malformed extension')
            if oid(der[ext[0][1]:ext[0][2]]) == _BASIC_CONSTRAINTS:
                is_ca = _basic_constraints_ca(der, ext[-1][1], ext[-1][2])
    return dict(
        subject=subject, issuer=issuer, common_name=common_name, is_ca=is_ca, self_signed=self_signed,
        not_before=_time(validity[0][0], der[validity[0][1]:validity[0][2]]),
        not_after=_time(validity[1][0], der[validity[1][1]:validity[1][2]]),
    )


class TrustAnchor:
    """One certificate to trust, identified by the SHA-256 of its DER bytes."""

    def __init__(self, der, source='content'):
        try:
            fields = _parse(der)
        except (DerError, ValueError, UnicodeDecodeError) as exc:
            raise CertificateError('%s is not a valid X.509 certificate (%s); give the PEM or DER file of the CA certificate'
                                   % (source, exc)) from None
        self.der = bytes(der)
        self.source = source
        self.subject = fields['subject']
        self.issuer = fields['issuer']
        self.common_name = fields['common_name']
        self.is_ca = fields['is_ca']
        self.self_signed = fields['self_signed']
        self.not_before = fields['not_before']
        self.not_after = fields['not_after']
        self.sha256 = hashlib.sha256(self.der).hexdigest()
        self.sha1 = hashlib.sha1(self.der).hexdigest()

    def __eq__(self, other):
        return isinstance(other, TrustAnchor) and other.sha256 == self.sha256

    def __hash__(self):
        return hash(self.sha256)

    def __repr__(self):
        return '<TrustAnchor %s %s>' % (self.subject, self.sha256[:16])

    @property
    def pem(self):
        """The certificate as PEM text."""
        return pem_text(self.der)

    @property
    def fingerprint(self):
        """SHA-256 as colon-separated upper-case hex."""
        return format_fingerprint(self.sha256)

    def describe(self):
        """One line naming the certificate for messages."""
        return "'%s' (SHA-256 %s)" % (self.subject, self.fingerprint)

    def summary(self):
        """What results and diffs show about the certificate: never more than public facts."""
        return dict(subject=self.subject, sha256=self.fingerprint, sha1=format_fingerprint(self.sha1),
                    not_after=self.not_after.strftime('%Y-%m-%dT%H:%M:%SZ'))


def der_certificates(data):
    """Yield the DER bytes of every CERTIFICATE block of PEM ``data`` (bytes), unchecked.

    For reading store bundles quickly: no parsing, no validation.
    """
    for match in _PEM_BLOCK.finditer(data):
        if match.group(1) in _CERTIFICATE_LABELS:
            try:
                yield base64.b64decode(b''.join(match.group(2).split()), validate=True)
            except (binascii.Error, ValueError):
                continue


def file_certificates(path):
    """The DER bytes of every certificate in the file at ``path`` (PEM, or one DER certificate), unchecked.

    An unreadable file, or one that is neither, gives an empty list: for reading store contents, not user input.
    """
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except OSError:
        return []
    if b'-----BEGIN' in data:
        return list(der_certificates(data))
    return [data] if data[:1] == b'\x30' else []


def file_sha256s(path):
    """The SHA-256 (hex) of every certificate in the file at ``path``, as file_certificates reads it."""
    return [hashlib.sha256(der).hexdigest() for der in file_certificates(path)]


def parse_certificates(data, source='content'):
    """Every certificate in ``data`` (PEM with one or more certificates, or one DER certificate).

    Duplicates are dropped; raises CertificateError naming ``source`` when the input is unusable.
    """
    if isinstance(data, str):
        data = data.encode('utf-8')
    if not data.strip():
        raise CertificateError('%s is empty; give the PEM or DER file of the CA certificate' % source)
    anchors = []
    if b'-----BEGIN' in data:
        blocks = list(_PEM_BLOCK.finditer(data))
        labels = [block.group(1).decode('ascii') for block in blocks]
        if any('PRIVATE KEY' in label for label in labels):
            raise CertificateError('%s holds a private key; give only the CA certificate (a private key never belongs in a trust store)'
                                   % source)
        certificate_blocks = [block for block in blocks if block.group(1) in _CERTIFICATE_LABELS]
        if not certificate_blocks:
            found = ', '.join(labels) or 'an incomplete PEM block (BEGIN without a matching END)'
            raise CertificateError('%s holds no PEM CERTIFICATE block (found: %s); give the CA certificate in PEM or DER' % (source, found))
        for index, block in enumerate(certificate_blocks, 1):
            label = source if len(certificate_blocks) == 1 else '%s (certificate %d)' % (source, index)
            try:
                der = base64.b64decode(b''.join(block.group(2).split()), validate=True)
            except (binascii.Error, ValueError):
                raise CertificateError('%s is a corrupt PEM: the base64 text does not decode; download or copy the certificate again'
                                       % label) from None
            anchors.append(TrustAnchor(der, label))
    elif data[:1] == b'\x30':
        anchors.append(TrustAnchor(data, source))
    else:
        raise CertificateError('%s is neither PEM (no -----BEGIN CERTIFICATE----- line) nor DER; give the CA certificate in one of those forms'
                               % source)
    unique = []
    for anchor in anchors:
        if anchor not in unique:
            unique.append(anchor)
    return unique


def read_anchors(src=None, content=None):
    """Read the certificates from ``src`` (a file on this host) or ``content`` (PEM text)."""
    if src:
        source = 'src %s' % src
        try:
            with open(src, 'rb') as handle:
                data = handle.read()
        except FileNotFoundError:
            raise CertificateError('%s does not exist on this host; copy the CA certificate there first or give content' % source) from None
        except IsADirectoryError:
            raise CertificateError('%s is a directory; give the path of the certificate file' % source) from None
        except OSError as exc:
            raise CertificateError('cannot read %s: %s' % (source, exc.strerror or exc)) from None
        return parse_certificates(data, source)
    return parse_certificates(content or '', 'content')


def _check_pin(anchors, fingerprint):
    try:
        algorithm, expected = normalize_fingerprint(fingerprint)
    except ValueError as exc:
        raise CertificateError(str(exc)) from None
    for anchor in anchors:
        got = anchor.sha1 if algorithm == 'sha1' else anchor.sha256
        if got != expected:
            raise CertificateError('certificate %s from %s does not match the pinned %s %s; got %s. Nothing was changed. '
                                   'Check that this is the CA certificate the fingerprint was published for'
                                   % (anchor.describe(), anchor.source, algorithm.upper(), format_fingerprint(expected), format_fingerprint(got)))


def validate_anchors(anchors, fingerprint=None, now=None, allow_intermediate=False):
    """Refuse certificates that must not be trusted; return warnings for the ones to watch.

    Refused: any input that does not match ``fingerprint`` (SHA-1 or SHA-256; with
    a fingerprint every certificate of the input must be that one, so nothing
    unpinned is trusted along with it), a certificate that is not a CA
    (basicConstraints CA:TRUE), a CA that is not a self-signed root unless
    ``allow_intermediate`` (then it is a warning), one that has expired or that
    is not yet valid.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if fingerprint:
        _check_pin(anchors, fingerprint)
    warnings = []
    for anchor in anchors:
        if not anchor.is_ca:
            raise CertificateError('certificate %s from %s is not a CA (basicConstraints CA:TRUE is missing): it looks like a server certificate. '
                                   'Nothing was changed; give the root CA that issued it (issuer: %s)' % (anchor.describe(), anchor.source, anchor.issuer))
        if not anchor.self_signed:
            if not allow_intermediate:
                raise CertificateError('certificate %s from %s is a CA but is not self-signed (issuer: %s): an intermediate CA as a trust '
                                       'anchor makes clients disagree (curl, Java and browsers accept its servers, OpenSSL and Python '
                                       'refuse them). Nothing was changed; give the self-signed root CA, or set allow_intermediate=true '
                                       'to trust this CA anyway' % (anchor.describe(), anchor.source, anchor.issuer))
            warnings.append('certificate %s is not a self-signed root (issuer: %s); trusted because allow_intermediate=true, but clients '
                            'that need a self-signed root at the end of the chain (openssl s_client, Python) still refuse its servers; '
                            'trust its root CA instead' % (anchor.describe(), anchor.issuer))
        if anchor.not_after <= now:
            raise CertificateError('certificate %s from %s expired on %s; nothing was changed. Get the current root CA certificate'
                                   % (anchor.describe(), anchor.source, anchor.not_after.strftime('%Y-%m-%d %H:%M UTC')))
        if anchor.not_before > now:
            raise CertificateError('certificate %s from %s is not valid before %s; nothing was changed. Check this host\'s clock'
                                   % (anchor.describe(), anchor.source, anchor.not_before.strftime('%Y-%m-%d %H:%M UTC')))
        if anchor.not_after - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
            warnings.append('certificate %s expires on %s, in less than %d days; plan its replacement'
                            % (anchor.describe(), anchor.not_after.strftime('%Y-%m-%d'), EXPIRY_WARNING_DAYS))
    return warnings


# The names a store entry may have: an anchor file name that every family's refresh tool reads (update-ca-certificates
# rewrites some characters and chokes on a line break), a keytool alias and an NSS nickname that no tool takes for an
# option ('-'), and a nickname without ':' (NSS reads "token:nickname").
MAX_NAME_LENGTH = 200
_FILE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+-]*')
NAME_KINDS = {
    'file': 'an anchor file name',
    'alias': 'a Java keystore alias',
    'nickname': 'an NSS nickname',
}


def _control(char):
    return unicodedata.category(char) in ('Cc', 'Zl', 'Zp')


def entry_name_problem(kind, name):
    """Why ``name`` cannot be a store entry of ``kind`` (file, alias, nickname), or None."""
    if not isinstance(name, str) or not name:
        return 'is empty'
    if any(_control(char) for char in name):
        return 'holds a control character or line break'
    if len(name) > MAX_NAME_LENGTH:
        return 'is %d characters long; at most %d are allowed' % (len(name), MAX_NAME_LENGTH)
    if kind == 'file':
        if not _FILE_NAME.fullmatch(name):
            return 'may hold only letters, digits, dots, dashes, underscores and plus signs, starting with a letter or digit'
        return None
    if name.startswith('-'):
        return "starts with '-', which keytool and certutil would read as an option"
    if name != name.strip():
        return 'starts or ends with white space'
    if kind == 'nickname' and ':' in name:
        return "holds ':', which NSS reads as a token name before the nickname"
    return None


def check_entry_names(kind, names, option):
    """Raise CertificateError naming ``option`` for the first name of ``names`` that ``kind`` does not take."""
    for name in names:
        problem = entry_name_problem(kind, name)
        if problem:
            shown = shown_value(name) if isinstance(name, str) else repr(name)
            raise CertificateError('%s %s %s (it is %s); nothing was changed' % (option, shown, problem, NAME_KINDS[kind]))


def slug(text):
    """A file-name and alias friendly form of ``text``: lower case, digits, dashes."""
    return re.sub(r'[^a-z0-9]+', '-', (text or '').lower()).strip('-')[:MAX_NAME_LENGTH - 20].strip('-')


def _label(text):
    """A nickname from a common name as written, minus what no nickname may hold."""
    text = ''.join(' ' if _control(char) or char == ':' else char for char in (text or ''))
    return ' '.join(text.split()).lstrip('- ')[:MAX_NAME_LENGTH - 20].strip()


def entry_names(anchors, name=None, label=False):
    """The store entry name of each anchor: ``name`` for one, ``name-<sha8>`` for a bundle.

    Without ``name`` each certificate is named after its common name: as a slug
    (file names, Java aliases) or as written (``label=True``, NSS nicknames).
    """
    if name:
        if len(anchors) == 1:
            return [name]
        return ['%s-%s' % (name, anchor.sha256[:8]) for anchor in anchors]
    names = []
    for anchor in anchors:
        base = _label(anchor.common_name) if label else slug(anchor.common_name)
        names.append(base or 'ca-%s' % anchor.sha256[:16])
    return [item if names.count(item) == 1 else '%s-%s' % (item, anchor.sha256[:8]) for item, anchor in zip(names, anchors)]


def trust_input_argument_spec():
    """The options every trust module shares."""
    return dict(
        src=dict(type='path'),
        # no_log like ansible.builtin.copy's content: a private key pasted here by mistake must not reach -vvv output.
        content=dict(type='str', no_log=True),
        fingerprint=dict(type='str'),
        allow_intermediate=dict(type='bool', default=False),
        state=dict(type='str', default='present', choices=['present', 'absent']),
    )


def trust_input_from_module(module, option, kind):
    """(anchors, entry names) from the module's src/content and name option; fail the module with the reason when unusable.

    Every name is checked before the certificate is read. Installing runs every
    check of the certificate; removing checks only the pin, so that an expired
    or wrongly installed certificate can still be taken out.
    """
    params = module.params
    warnings = []
    try:
        if params[option] is not None:
            check_entry_names(kind, [params[option]], option)
        anchors = read_anchors(src=params['src'], content=params['content'])
        if params['state'] == 'present':
            warnings = validate_anchors(anchors, params['fingerprint'], allow_intermediate=params['allow_intermediate'])
        elif params['fingerprint']:
            _check_pin(anchors, params['fingerprint'])
        names = entry_names(anchors, params[option], label=kind == 'nickname')
        check_entry_names(kind, names, option)
    except CertificateError as exc:
        module.fail_json(msg=str(exc))
    for warning in warnings:
        module.warn(warning)
    return anchors, names


def pem_text(der):
    """PEM text of one DER certificate (64-column base64)."""
    body = base64.b64encode(der).decode('ascii')
    return '-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n' % '\n'.join(body[i:i + 64] for i in range(0, len(body), 64))
