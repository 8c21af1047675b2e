#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Lint and build the documentation of magrathea.secure (make docs):
#   1. antsibull-docs lint-collection-docs --plugin-docs: every module's and role's documentation, the semantic
#      markup references in it and in docs/docsite (guide, links.yml, extra-docs.yml);
#   2. antsibull-docs sphinx-init + collection + sphinx-build -W: the HTML reference and guide in build/docs/html.
# Needs antsibull-docs, sphinx, sphinx-ansible-theme and ansible-pygments in the venv (requirements-test.txt).
# LINT_ONLY=1 skips the HTML build.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=${VENV_BIN:-$root/.venv/bin}
# antsibull-docs runs ansible-doc and ansible-galaxy from PATH; the checkout resolves as magrathea.secure through
# .ansible/collections (make collection).
export PATH="$bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$root/.ansible/collections"
export ANSIBLE_CONFIG="$root/ansible.cfg"
test -e "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/magrathea/secure/galaxy.yml" || {
    echo "build_docs: $ANSIBLE_COLLECTIONS_PATH does not hold magrathea.secure; run make collection" >&2; exit 1; }

echo "build_docs: lint-collection-docs"
antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs --validate-collection-refs all .
[ "${LINT_ONLY:-0}" = 1 ] && exit 0

out=$root/build/docs
rm -rf "$out"
# antsibull-docs refuses a destination that others may write to.
mkdir -p "$out" && mkdir -m 0700 "$out/site"
antsibull-docs sphinx-init --use-current --fail-on-error --dest-dir "$out/site" \
    --project magrathea.secure --title 'magrathea.secure' --copyright 'contributors to magrathea.secure' \
    --no-add-antsibull-docs-version magrathea.secure >/dev/null
cd "$out/site"
# Offline: no intersphinx downloads; references to docs.ansible.com resolve through a local inventory.
cat >> conf.py <<'CONF'

# Written by tests/utils/build_docs.sh: build offline.
intersphinx_mapping = {'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', '../ansible_devel.inv')}
CONF
chmod 0700 rst
antsibull-docs --config-file antsibull-docs.cfg collection --use-current --fail-on-error --cleanup everything \
    --dest-dir rst magrathea.secure >/dev/null
"$bin/python" "$root/tests/utils/docs_inventory.py" ansible_devel.inv rst
# -W: a warning (broken reference, bad markup) fails the build.
sphinx-build -q -b html -c . -W --keep-going rst "$out/html"

# Every module and role has its page.
cd "$root"
missing=0
for module in plugins/modules/*.py; do
    name=$(basename "$module" .py)
    page="$out/html/collections/magrathea/secure/${name}_module.html"
    [ -s "$page" ] || { echo "build_docs: no page for module $name ($page)" >&2; missing=1; }
done
for role in roles/*/; do
    [ -d "$role" ] || continue
    name=$(basename "$role")
    page="$out/html/collections/magrathea/secure/${name}_role.html"
    [ -s "$page" ] || { echo "build_docs: no page for role $name ($page)" >&2; missing=1; }
done
[ -s "$out/html/collections/magrathea/secure/docsite/guide.html" ] || { echo "build_docs: no guide page" >&2; missing=1; }
[ "$missing" = 0 ]
echo "build_docs: open $out/html/collections/magrathea/secure/index.html"
