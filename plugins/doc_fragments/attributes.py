# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Attributes shared by the modules of this collection."""

    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
'''

    # Modules that change something: full check mode and diff support.
    ACTIONGROUP_MAGRATHEA = r'''
options: {}
attributes:
  action_group:
    description: Use C(group/magrathea.secure.magrathea) in C(module_defaults) to set the connection options once for every service module.
    support: full
    membership:
      - magrathea.secure.magrathea
'''

    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details: This action does not modify state.
  diff_mode:
    support: N/A
    details: This action does not modify state.
'''
