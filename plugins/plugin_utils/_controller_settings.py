# Copyright: contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Connection settings given once on the controller, for every module on every managed host.

Private to this collection: not for use by other collections.

Owns which option of which client module falls back to which ``MAGRATHEA_*`` variable, the pure decision which of
them the controller's environment fills in for a task, and the action plugin base class that passes them to the module
as arguments (secrets stay ``no_log`` options, never a command line or an environment variable of a remote command)
and copies a controller-side CA file (``MAGRATHEA_CA_FILE``) into the task's temporary directory on the managed host.

Order, for each option: the task's argument (or ``module_defaults``), then the controller's environment (here), then
the managed host's environment (the module's own fallback, for example set with the ``environment`` keyword), then
the option's default.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

CA_FILE_ENV = 'MAGRATHEA_CA_FILE'

display = Display()


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


class ControllerSettingsAction(ActionBase):
    """Runs the module with the connection options it lacks taken from the controller's MAGRATHEA_* environment."""

    _supports_check_mode = True
    _supports_async = True

    # The CA file's name in the task's temporary directory on the managed host.
    REMOTE_CA_NAME = 'magrathea-ca.pem'

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect

        module = (self._task.resolved_action or self._task.action).rsplit('.', 1)[-1]
        arguments, ca_file = controller_settings(module, self._task.args, os.environ)
        if ca_file is not None:
            problem = ca_file_problem(ca_file)
            if problem:
                raise AnsibleActionFail(problem)
        if arguments or ca_file:
            display.vvv('magrathea.secure.%s: %s from the controller environment'
                          % (module, ', '.join(sorted(list(arguments) + (['ca_path'] if ca_file else [])))),
                          host=self._play_context.remote_addr)

        module_args = dict(self._task.args, **arguments)
        if ca_file:
            module_args['ca_path'] = self._send_ca_file(ca_file)

        wrap_async = self._task.async_val and not self._connection.has_native_async
        result = merge_hash(result, self._execute_module(module_args=module_args, task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _send_ca_file(self, path):
        """Copy the controller's CA file into the task's temporary directory (0700, removed after the task)."""
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote = self._connection._shell.join_path(tmpdir, self.REMOTE_CA_NAME)
        self._transfer_file(path, remote)
        self._fixup_perms2((tmpdir, remote), execute=False)
        return remote
