# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Write an offline Sphinx inventory of the docs.ansible.com pages the collection docs link to.

build_docs.sh builds without network access. The RST that antsibull-docs writes refers to a few labels of the
Ansible documentation (return values, configuration) and to the pages of plugins in other collections
(ansible.builtin, ansible.windows, community.general...). This inventory resolves exactly those labels to their URLs
on docs.ansible.com, so that sphinx-build -W needs no download and still fails on any other broken reference.
References to other collections are checked by antsibull-docs lint-collection-docs where those are installed.

    python docs_inventory.py OUTPUT.inv RST_DIR
"""

import os
import re
import sys
import zlib

# label -> (page, anchor, title) under https://docs.ansible.com/projects/ansible/devel/
LABELS = {
    'common_return_values': ('reference_appendices/common_return_values.html', 'common-return-values', 'Return Values'),
    'ansible_configuration_settings': ('reference_appendices/config.html', 'ansible-configuration-settings',
                                       'Ansible Configuration Settings'),
    # antsibull-docs notes "This module has a corresponding action plugin" on modules that have one.
    'action_plugins': ('plugins/action.html', 'action-plugins', 'Action plugins'),
}
OWN_PREFIX = 'ansible_collections.magrathea.secure.'
PLUGIN_LABEL = re.compile(r'ansible_collections\.([a-z0-9_]+)\.([a-z0-9_]+)\.([a-z0-9_]+)_([a-z]+)\b')
REFERENCE = re.compile(r':ref:`(?:[^`<]*<)?([^`<>]+)>?`')


def referenced_plugins(rst_dir):
    """Labels of other collections' plugin pages referenced anywhere under rst_dir."""
    labels = {}
    for directory, dummy, files in os.walk(rst_dir):
        for name in files:
            if not name.endswith('.rst'):
                continue
            with open(os.path.join(directory, name), encoding='utf-8') as handle:
                text = handle.read()
            for target in REFERENCE.findall(text):
                match = PLUGIN_LABEL.fullmatch(target.strip())
                if not match or target.startswith(OWN_PREFIX):
                    continue
                namespace, collection, plugin, plugin_type = match.groups()
                page = 'collections/%s/%s/%s_%s.html' % (namespace, collection, plugin, plugin_type)
                anchor = target.replace('.', '-').replace('_', '-')
                labels[target] = (page, anchor, '%s.%s.%s' % (namespace, collection, plugin))
    return labels


def main(output, rst_dir):
    entries = dict(LABELS)
    entries.update(referenced_plugins(rst_dir))
    lines = ''.join('%s std:label -1 %s#%s %s\n' % (label, page, anchor, title)
                    for label, (page, anchor, title) in sorted(entries.items()))
    header = ('# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n'
              '# The remainder of this file is compressed using zlib.\n')
    with open(output, 'wb') as handle:
        handle.write(header.encode('utf-8') + zlib.compress(lines.encode('utf-8')))


if __name__ == '__main__':
    main(*sys.argv[1:])
