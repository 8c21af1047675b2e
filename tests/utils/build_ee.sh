#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Write the build context of the magrathea.secure execution environment to build/ee/context:
# the collection built from this checkout, meta/ee-build.yml, and (read from the installed collection at
# image build time) the Python and system packages in meta/execution-environment.yml.
# Build the image afterwards with: podman build -t magrathea-secure-ee build/ee/context
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${VENV_BIN:-$PWD/.venv/bin}
out=build/ee

rm -rf "$out" && mkdir -p "$out"
"$bin/ansible-galaxy" collection build --force --output-path "$out" . >/dev/null
mv "$out"/magrathea-secure-*.tar.gz "$out/magrathea-secure.tar.gz"
"$bin/ansible-builder" create --file meta/ee-build.yml --context "$out/context" --output-filename Containerfile -v 1

# The context must hold the collection, the Containerfile and a galaxy requirement that installs the collection.
test -s "$out/context/Containerfile"
test -s "$out/context/_build/magrathea-secure.tar.gz"
grep -q 'magrathea-secure.tar.gz' "$out/context/_build/requirements.yml"
# The collection's dependency declaration is what ansible-builder will read inside the image.
"$bin/python" "$("$bin/python" -c 'import ansible_builder, os; print(os.path.dirname(ansible_builder.__file__))')/_target_scripts/introspect.py" \
    introspect "$PWD/.ansible/collections" > "$out/introspect.txt"
for needed in 'requests' 'cryptography' 'lftp' 'libnss3-tools \[platform:dpkg\]' 'nss-tools \[platform:redhat\]' 'openjdk-17-jre-headless' 'java-17-openjdk-headless'; do
    grep -q "$needed" "$out/introspect.txt" || { echo "build_ee: introspection lacks $needed" >&2; cat "$out/introspect.txt" >&2; exit 1; }
done
echo "build_ee: context in $out/context (podman build -t magrathea-secure-ee $out/context)"
