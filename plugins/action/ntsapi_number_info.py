# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of magrathea.secure.ntsapi_number_info: unset connection options from the controller's MAGRATHEA_* environment."""

from __future__ import annotations

from ansible_collections.magrathea.secure.plugins.plugin_utils._controller_action import ControllerSettingsAction


class ActionModule(ControllerSettingsAction):
    """magrathea.secure.ntsapi_number_info, with the connection settings given once on the controller."""
