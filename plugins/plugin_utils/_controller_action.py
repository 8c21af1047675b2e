# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The action plugin base class of the client modules: connection settings given once on the controller.

Private to this collection: not for use by other collections.

Owns running a module with the options ``_controller_settings`` fills in from the controller's environment passed as
module arguments (secrets stay ``no_log`` options, never a command line or an environment variable of a remote
command), and copying a controller-side CA file into the task's temporary directory on the managed host (0700,
removed with it). The per-module files in plugins/action/ only name this class.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

from ansible_collections.magrathea.secure.plugins.plugin_utils._controller_settings import ca_file_problem, controller_settings

display = Display()


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
            names = sorted(list(arguments) + (['ca_path'] if ca_file else []))
            display.vvv('magrathea.secure.%s: %s from the controller environment' % (module, ', '.join(names)),
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
