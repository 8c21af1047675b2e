# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Give every tracked file that can carry a comment the collection's SPDX header (REUSE style, as community.crypto).

    .venv/bin/python tests/utils/spdx_headers.py        (then `make license-lint` checks the result with reuse lint)

Files that already have an SPDX-License-Identifier keep their header; a "Copyright:" line that REUSE does not read as
a copyright notice becomes "Copyright (c)". REUSE.toml covers the files that cannot or must not carry a comment:
generated changelogs, changelog fragments, ansible-test's empty ignore file, the license texts.
"""

import fnmatch
import os
import subprocess
import sys

# REUSE-IgnoreStart (the header text below is data, not this file's own notice)
HOLDER = 'contributors to magrathea.secure'
LINES = (
    'Copyright (c) %s' % HOLDER,
    'GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)',
    'SPDX-License-Identifier: GPL-3.0-or-later',
)
# A file whose first lines hold an SPDX-License-Identifier already has its header.
HEADER_WITHIN = 12
# Covered by REUSE.toml or by LICENSES/ itself.
SKIP = ('LICENSES/*', 'CHANGELOG.md', 'changelogs/changelog.yaml', 'changelogs/fragments/*', 'tests/sanity/ignore-*.txt')
HASH = ('*.py', '*.yml', '*.yaml', '*.sh', '*.txt', '*.cfg', '*.toml', '*/aliases', 'Makefile', '.gitignore',
        '.ansible-lint', '.ci/run')


def header_for(path):
    """The header block for a file, or None when its kind is unknown."""
    name = path
    if any(fnmatch.fnmatch(name, pattern) for pattern in HASH):
        return ''.join('# %s\n' % line for line in LINES)
    if name.endswith('.md'):
        return '<!--\n%s\n-->\n' % '\n'.join(LINES)
    if name.endswith('.rst'):
        return '..\n%s\n' % ''.join('  %s\n' % line for line in LINES).rstrip('\n')
    if name.endswith('.java'):
        return ''.join('// %s\n' % line for line in LINES)
    if name.endswith('.j2'):
        # A Jinja comment that strips the line break after it: the rendered file does not change.
        return '{#\n%s\n-#}\n' % '\n'.join(LINES)
    return None


def with_header(path, text):
    header = header_for(path)
    if header is None:
        raise ValueError('%s: no comment syntax known for this file; add it to REUSE.toml or teach %s'
                         % (path, os.path.basename(__file__)))
    lines = text.splitlines(keepends=True)
    keep = 0
    if lines and (lines[0].startswith('#!') or (path.endswith(('.yml', '.yaml', '.ansible-lint')) and lines[0].rstrip() == '---')):
        keep = 1
    head, rest = ''.join(lines[:keep]), ''.join(lines[keep:])
    if header.endswith('-#}\n'):
        return head + header + rest
    separator = '\n' if rest.strip() else ''
    return head + header + separator + rest


def main(root):
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=root, check=True, capture_output=True).stdout.decode().split('\0')
    changed = []
    for path in filter(None, files):
        full = os.path.join(root, path)
        if any(fnmatch.fnmatch(path, pattern) for pattern in SKIP) or not os.path.isfile(full) or os.path.islink(full):
            continue
        with open(full, encoding='utf-8') as handle:
            text = handle.read()
        if 'SPDX-License-Identifier:' in ''.join(text.splitlines(keepends=True)[:HEADER_WITHIN]):
            new = text.replace('Copyright: %s' % HOLDER, 'Copyright (c) %s' % HOLDER, 1)
            # REUSE-IgnoreEnd
        elif not text and os.path.basename(path) == '__init__.py':
            continue  # ansible-test wants these empty; REUSE reads no license from an empty file either
        else:
            new = with_header(path, text)
        if new != text:
            with open(full, 'w', encoding='utf-8') as handle:
                handle.write(new)
            changed.append(path)
    print('spdx_headers: %d file(s) changed' % len(changed))
    for path in changed:
        print('  ' + path)


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
