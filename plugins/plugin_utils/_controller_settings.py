# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Connection settings given once on the controller, for every module on every managed host.

Private to this collection: not for use by other collections.

Owns which option of which client module falls back to which ``MAGRATHEA_*`` variable, and the pure decisions which
of them the controller's environment fills in for a task and whether a controller-side CA file can be sent. The action
plugin base class that acts on them is ``_controller_action`` (kept apart: importing controller plugins switches
ansible's module_utils into controller mode, which unit tests of modules must not inherit).

Order, for each option: the task's argument (or ``module_defaults``), then the controller's environment (here), then
the managed host's environment (the module's own fallback, for example set with the ``environment`` keyword), then
the option's default.
"""

from __future__ import annotations

import os

CA_FILE_ENV = 'MAGRATHEA_CA_FILE'


def service_variables(service, options=('host', 'port', 'username', 'password')):
    """{option: variable} of a service's shared connection options, with the CA file every client reads."""
    variables = {option: 'MAGRATHEA_%s_%s' % (service, option.upper()) for option in options}
    variables['ca_path'] = CA_FILE_ENV
    return variables


# Every module whose options fall back to MAGRATHEA_* variables, with those variables (tests compare this table with
# the modules' argument specs, so that the controller and the managed host read the same names).
MODULE_VARIABLES = {
    'ntsapi_command': service_variables('NTSAPI'),
    'ntsapi_number': service_variables('NTSAPI'),
    'ntsapi_number_info': service_variables('NTSAPI'),
    'cdr_sync': dict(service_variables('CDR'), remote_dir='MAGRATHEA_CDR_DIR'),
    'balance_info': dict(service_variables('REST', ('username', 'password')), url='MAGRATHEA_REST_URL',
                         account='MAGRATHEA_ACCOUNT'),
}


def controller_settings(module, task_args, environ):
    """(arguments, CA file) that the controller's environment adds to a task of ``module``.

    Only options the task leaves unset are filled in, only from variables that are set and not empty (a credential
    injector renders an empty field as an empty string). ``ca_path`` is not among the arguments: the CA file named on
    the controller is returned separately, because it has to be copied to the managed host first.
    """
    arguments, ca_file = {}, None
    for option, variable in MODULE_VARIABLES[module].items():
        value = environ.get(variable, '')
        if option in task_args or not value:
            continue
        if option == 'ca_path':
            ca_file = value
        else:
            arguments[option] = value
    return arguments, ca_file


def ca_file_problem(path):
    """Why the controller's CA file cannot be sent, or None. Checked before anything reaches the managed host."""
    if not os.path.isabs(path):
        return '%s=%s on the controller must be an absolute path' % (CA_FILE_ENV, path)
    if not os.path.isfile(path):
        return ('%s=%s on the controller is not a file; set it to the Magrathea root CA (PEM), or give ca_path in the task '
                '(a path on the managed host)' % (CA_FILE_ENV, path))
    if not os.access(path, os.R_OK):
        return '%s=%s on the controller cannot be read by the user who runs Ansible' % (CA_FILE_ENV, path)
    if os.path.getsize(path) == 0:
        return '%s=%s on the controller is empty; it must hold the Magrathea root CA (PEM)' % (CA_FILE_ENV, path)
    return None
