# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Connection settings from the controller's environment: what is filled in, and that the controller, the managed host
and the documentation all name the same variables as the modules' argument specs."""

from __future__ import annotations

import importlib
import os

import pytest
import yaml

from ansible_collections.magrathea.secure.plugins.doc_fragments import attributes as attributes_fragment
from ansible_collections.magrathea.secure.plugins.doc_fragments import connection as connection_fragment
from ansible_collections.magrathea.secure.plugins.plugin_utils._controller_settings import (
    MODULE_VARIABLES,
    ca_file_problem,
    controller_settings,
)

COLLECTION = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(COLLECTION, 'plugins', 'modules')) if name.endswith('.py'))
ACTIONS = sorted(name[:-3] for name in os.listdir(os.path.join(COLLECTION, 'plugins', 'action')) if name.endswith('.py'))

NTSAPI_ENV = {
    'MAGRATHEA_NTSAPI_HOST': 'ntsapi.example', 'MAGRATHEA_NTSAPI_PORT': '7777', 'MAGRATHEA_NTSAPI_USERNAME': 'nts-user',
    'MAGRATHEA_NTSAPI_PASSWORD': 'nts-secret', 'MAGRATHEA_CA_FILE': '/etc/controller/ca.pem',
    'MAGRATHEA_CDR_HOST': 'cdr.example', 'MAGRATHEA_REST_USERNAME': 'rest-user',
}


@pytest.mark.parametrize('module, task_args, environ, arguments, ca_file', [
    # Every unset option from its own service's variables; other services' variables are ignored.
    ('ntsapi_number_info', {'numbers': ['01792000123']}, NTSAPI_ENV,
     {'host': 'ntsapi.example', 'port': '7777', 'username': 'nts-user', 'password': 'nts-secret'}, '/etc/controller/ca.pem'),
    # An option the task sets (even to null) is the task's; ca_path in the task is a path on the managed host.
    ('ntsapi_command', {'host': 'other.example', 'password': None, 'ca_path': '/srv/ca.pem'}, NTSAPI_ENV,
     {'port': '7777', 'username': 'nts-user'}, None),
    # An empty variable (an AWX credential field left blank) counts as unset.
    ('cdr_sync', {'dest': '/srv/cdr'},
     {'MAGRATHEA_CDR_HOST': '', 'MAGRATHEA_CDR_USERNAME': 'cdr-user', 'MAGRATHEA_CA_FILE': '', 'MAGRATHEA_CDR_DIR': '/cdr'},
     {'username': 'cdr-user', 'remote_dir': '/cdr'}, None),
    ('balance_info', {}, {'MAGRATHEA_REST_URL': 'https://rest.example/v1/', 'MAGRATHEA_ACCOUNT': 'MAG000001',
                          'MAGRATHEA_REST_HOST': 'ignored.example', 'MAGRATHEA_REST_PASSWORD': 'rest-secret'},
     {'url': 'https://rest.example/v1/', 'account': 'MAG000001', 'password': 'rest-secret'}, None),
    ('balance_info', {}, {}, {}, None),
])
def test_controller_settings(module, task_args, environ, arguments, ca_file):
    assert controller_settings(module, task_args, environ) == (arguments, ca_file)


def test_ca_file_problems(tmp_path):
    good = tmp_path / 'ca.pem'
    good.write_text('-----BEGIN CERTIFICATE-----\n')
    empty = tmp_path / 'empty.pem'
    empty.write_text('')
    assert ca_file_problem(str(good)) is None
    assert 'absolute path' in ca_file_problem('ca.pem')
    assert 'is not a file' in ca_file_problem(str(tmp_path))
    assert 'is not a file' in ca_file_problem(str(tmp_path / 'missing.pem'))
    assert 'is empty' in ca_file_problem(str(empty))


class _Recorded(Exception):
    pass


def argument_spec(module_name, monkeypatch):
    """The argument spec a module's main() builds, recorded instead of run."""
    module = importlib.import_module('ansible_collections.magrathea.secure.plugins.modules.%s' % module_name)
    recorded = {}

    def record(**kwargs):
        recorded.update(kwargs)
        raise _Recorded()

    monkeypatch.setattr(module, 'AnsibleModule', record)
    with pytest.raises(_Recorded):
        module.main()
    return recorded['argument_spec']


def fallback_variables(spec):
    return {option: settings['fallback'][1][0] for option, settings in spec.items() if settings.get('fallback')}


@pytest.mark.parametrize('module_name', MODULES)
def test_the_controller_reads_the_variables_the_module_reads(module_name, monkeypatch):
    """One table for the controller; it must name exactly the module's own fallbacks, and each such module has its action."""
    variables = fallback_variables(argument_spec(module_name, monkeypatch))
    assert MODULE_VARIABLES.get(module_name, {}) == variables
    assert (module_name in ACTIONS) == bool(variables)


def test_every_action_plugin_belongs_to_a_module_of_the_table():
    assert ACTIONS == sorted(MODULE_VARIABLES)


FRAGMENTS = {'magrathea.secure.connection': connection_fragment.ModuleDocFragment,
             'magrathea.secure.attributes': attributes_fragment.ModuleDocFragment}


def documentation(module):
    """A module's documentation with its fragments, merged as ansible-doc does: an option's keys from the module win,
    then those of earlier fragments; notes are collected.

    (ansible.utils.plugin_docs is not imported: loading controller code would switch module_utils into controller mode
    for the module tests that run in the same process.)
    """
    doc = yaml.safe_load(module.DOCUMENTATION)
    notes = list(doc.get('notes', []))
    for slug in doc.pop('extends_documentation_fragment', []):
        if not slug.startswith('magrathea.secure.'):
            continue  # Ansible's own fragments (ansible.builtin.files) name no MAGRATHEA_* variable
        name, variable = (slug, 'DOCUMENTATION') if slug in FRAGMENTS else (slug.rsplit('.', 1)[0], slug.rsplit('.', 1)[1].upper())
        fragment = yaml.safe_load(getattr(FRAGMENTS[name], variable))
        for option, settings in (fragment.get('options') or {}).items():
            doc['options'][option] = dict(settings, **doc['options'].get(option, {}))
        notes += fragment.get('notes', [])
    doc['notes'] = notes
    return doc


@pytest.mark.parametrize('module_name', sorted(MODULE_VARIABLES))
def test_the_documentation_names_each_variable_and_where_it_is_read(module_name, monkeypatch):
    module = importlib.import_module('ansible_collections.magrathea.secure.plugins.modules.%s' % module_name)
    doc = documentation(module)
    text = repr(doc)
    assert '<SERVICE>' not in text and 'MAGRATHEA_<' not in text
    for option, variable in fallback_variables(argument_spec(module_name, monkeypatch)).items():
        description = ' '.join(doc['options'][option]['description'])
        assert 'E(%s)' % variable in description, (option, description)
    assert any('controller' in note and 'managed host' in note and 'environment' in note for note in doc['notes'])


def test_no_connection_fragment_speaks_of_one_service_for_all():
    """The shared part must not carry a sentence that holds for one service only (the CDR server's published pin)."""
    shared = connection_fragment.ModuleDocFragment.DOCUMENTATION
    assert 'CDR' not in shared and 'NTSAPI' not in shared and 'REST' not in shared
    assert 'CDR' not in connection_fragment.ModuleDocFragment.NTSAPI and 'NTSAPI' not in connection_fragment.ModuleDocFragment.CDR
