#!/usr/bin/env bash
# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Install the missing ones of the given Debian packages (as root), or say which command would (otherwise).
#
#   tests/utils/debian_packages.sh WHAT PACKAGE...      (WHAT: the make target that needs them, for the messages)
set -euo pipefail
what=$1
shift
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} = 0 ]; then
    echo "$what: the Debian packages it needs are installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$what: needs the Debian packages ${missing[*]} (or this system's equivalents); install them first" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "$what: missing Debian packages: ${missing[*]}; run 'sudo apt-get install ${missing[*]}', or make $what as root" >&2
    exit 1
fi
echo "$what: installing the Debian packages ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
