# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Firefox enterprise policy (policies.json, Certificates.Install) as a trust store.

Private to this collection: not for use by other collections.

Owns merging our certificate files into the Install list of
/etc/firefox/policies/policies.json without touching other policies,
validating the document before it is written (Firefox ignores every policy
while the file is broken), and undoing exactly what this collection
created: a record next to our certificate files names the directories and
the policy file we made, and removal deletes those once they are empty,
never what others wrote.
"""

from __future__ import annotations

import json
import os

from ansible_collections.magrathea.secure.plugins.module_utils._certificate import file_certificates, file_sha256s, pem_text, slug
from ansible_collections.magrathea.secure.plugins.module_utils._truststore import Holding, TrustStore, TrustStoreError, write_public_file

FIREFOX_POLICY_FILE = '/etc/firefox/policies/policies.json'
# In our certificate directory: what this collection created besides it (directories, the policy file), to undo on removal.
CREATED_RECORD = '.magrathea-secure-created.json'


class FirefoxPolicy(TrustStore):
    """The Certificates.Install list of Firefox's enterprise policy file, and the certificate files it names."""

    kind = 'firefox_policy'

    def __init__(self, path=FIREFOX_POLICY_FILE, check_mode=False, runner=None):
        super().__init__(path, check_mode, runner)
        self.certificate_dir = os.path.join(os.path.dirname(path), 'certificates')
        self.record = os.path.join(self.certificate_dir, CREATED_RECORD)
        self._document = None

    def entry_name(self, name):
        return os.path.join(self.certificate_dir, (slug(name) or 'ca') + '.pem')

    def _load(self):
        if self._document is None:
            try:
                with open(self.path, encoding='utf-8') as handle:
                    text = handle.read()
            except FileNotFoundError:
                text = ''
            if not text.strip():
                self._document = {'policies': {}}
                return self._document
            try:
                document = json.loads(text)
            except ValueError as exc:
                raise TrustStoreError('%s is not valid JSON (%s); fix it first: Firefox ignores every policy while the file is broken, '
                                      'and this module does not overwrite it' % (self.path, exc), cause='invalid_policy') from None
            self._document = self._validate(document)
        return self._document

    def _validate(self, document):
        if not isinstance(document, dict) or not isinstance(document.get('policies', {}), dict):
            raise TrustStoreError('%s must be a JSON object with a "policies" object; fix the file first (Firefox ignores every policy '
                                  'while it is broken)' % self.path, cause='invalid_policy')
        certificates = document.setdefault('policies', {}).get('Certificates', {})
        if not isinstance(certificates, dict) or not isinstance(certificates.get('Install', []), list):
            raise TrustStoreError('%s: policies.Certificates.Install must be a list of paths; fix the file first' % self.path,
                                  cause='invalid_policy')
        return document

    def _install_list(self):
        return self._load()['policies'].get('Certificates', {}).get('Install', [])

    def held(self, anchor, entry):
        holders = []
        for item in self._install_list():
            if isinstance(item, str) and os.path.isabs(item) and anchor.sha256 in file_sha256s(item):
                holders.append((item, True))
        own = file_sha256s(entry) if entry else []
        return Holding(holders, own[0] if own else None)

    def apply(self, change):
        document = self._load()
        install = document['policies'].setdefault('Certificates', {}).setdefault('Install', [])
        if change['action'] == 'add':
            created = self._created()
            created += [path for path in self._about_to_create() if path not in created]
            write_public_file(change['entry'], pem_text(change.anchor.der))
            write_public_file(self.record, json.dumps(created) + '\n')
            if change['entry'] not in install:
                install.append(change['entry'])
        else:
            while change['entry'] in install:
                install.remove(change['entry'])
            if os.path.dirname(change['entry']) == self.certificate_dir and os.path.exists(change['entry']):
                os.unlink(change['entry'])
            if not install:
                del document['policies']['Certificates']['Install']
            if not document['policies']['Certificates']:
                del document['policies']['Certificates']
        text = json.dumps(document, indent=2) + '\n'
        self._validate(json.loads(text))
        if change['action'] == 'add' or not self._undo_creation(document):
            write_public_file(self.path, text)
        self._document = None

    def _about_to_create(self):
        """The directories up to the policy file, and the file itself, that do not exist yet (parents first)."""
        missing = [] if os.path.exists(self.path) else [self.path]
        directory = os.path.dirname(self.path)
        while directory and not os.path.isdir(directory):
            missing.insert(0, directory)
            directory = os.path.dirname(directory)
        return missing

    def _created(self):
        try:
            with open(self.record, encoding='utf-8') as handle:
                recorded = json.load(handle)
        except (OSError, ValueError):
            return []
        return [path for path in recorded if isinstance(path, str) and os.path.isabs(path)] if isinstance(recorded, list) else []

    def _undo_creation(self, document):
        """Once nothing of ours is left: delete our certificate directory, and what we created that is now empty.

        Returns True when the policy file itself was ours and is gone (an empty policy set is all that was left in it).
        """
        if not os.path.isdir(self.certificate_dir) or set(os.listdir(self.certificate_dir)) - {CREATED_RECORD}:
            return False
        created = self._created()
        os.unlink(self.record)
        os.rmdir(self.certificate_dir)
        removed = False
        if self.path in created and document == {'policies': {}}:
            os.unlink(self.path)
            removed = True
        for directory in reversed([path for path in created if path != self.path]):
            if os.path.isdir(directory) and not os.listdir(directory):
                os.rmdir(directory)
        return removed

    def anchors(self):
        ders = []
        for item in self._install_list():
            if isinstance(item, str) and os.path.isabs(item):
                ders.extend(file_certificates(item))
        return ders
