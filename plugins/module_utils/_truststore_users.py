# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The local users whose browsers a trust module looks at, and where each user's browsers keep their NSS databases.

Private to this collection: not for use by other collections.

Owns which users count (root and the regular users of /etc/login.defs
whose home exists) and the candidate directories of a user's databases:
Chromium's classic, XDG and snap locations, every Flatpak app's persisted
~/.pki and XDG data directory under ~/.var/app/<app-id>/, and the Firefox
profiles listed in each profiles.ini (classic, XDG, snap, Flatpak).
Whether a candidate holds a database is for _truststore_nss to say.
"""

from __future__ import annotations

import configparser
import os
import pwd

from ansible_collections.magrathea.secure.plugins.module_utils._text import is_decimal

CHROMIUM_DATABASES = (
    ('chromium', '.pki/nssdb'),
    ('chromium', '.local/share/pki/nssdb'),  # Chromium 146 and newer
    ('chromium-snap', 'snap/chromium/current/.pki/nssdb'),
)
FIREFOX_ROOTS = (
    ('firefox', '.mozilla/firefox'),
    ('firefox-xdg', None),  # ${XDG_CONFIG_HOME:-~/.config}/mozilla/firefox (Firefox 147+)
    ('firefox-snap', 'snap/firefox/common/.mozilla/firefox'),
)
# A Flatpak app keeps ~/.pki and ~/.mozilla under ~/.var/app/<app-id>/ (--persist), and its XDG data and config
# directories there as data/ and config/: Chromium, Chrome, Brave and Firefox alike.
FLATPAK_APPS = '.var/app'
FLATPAK_CHROMIUM = ('.pki/nssdb', 'data/pki/nssdb')
FLATPAK_FIREFOX = ('.mozilla/firefox', 'config/mozilla/firefox')


def firefox_profiles(root):
    """Profile directories listed in ``root``/profiles.ini (relative or absolute)."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(os.path.join(root, 'profiles.ini'), encoding='utf-8')
    except (configparser.Error, UnicodeDecodeError):
        return []
    profiles = []
    for section in parser.sections():
        if not section.startswith('Profile') or not parser.has_option(section, 'Path'):
            continue
        path = parser.get(section, 'Path')
        relative = parser.get(section, 'IsRelative', fallback='1').strip() != '0'
        full = os.path.normpath(os.path.join(root, path) if relative else path)
        if full not in profiles:
            profiles.append(full)
    return profiles


def _flatpak_apps(home):
    directory = os.path.join(home, FLATPAK_APPS)
    try:
        return [os.path.join(directory, name) for name in sorted(os.listdir(directory))]
    except OSError:
        return []


def candidate_databases(user, xdg_config_home=None):
    """(directory, source) of every place where ``user``'s browsers keep an NSS database, in a fixed order."""
    home = user.pw_dir
    apps = _flatpak_apps(home)
    found = [(os.path.join(home, relative), source) for source, relative in CHROMIUM_DATABASES]
    found += [(os.path.join(app, relative), 'chromium-flatpak') for app in apps for relative in FLATPAK_CHROMIUM]
    roots = []
    for source, relative in FIREFOX_ROOTS:
        if relative is None:
            roots.append((os.path.join(xdg_config_home or os.path.join(home, '.config'), 'mozilla', 'firefox'), source))
        else:
            roots.append((os.path.join(home, relative), source))
    roots += [(os.path.join(app, relative), 'firefox-flatpak') for app in apps for relative in FLATPAK_FIREFOX]
    for root, source in roots:
        found += [(profile, source) for profile in firefox_profiles(root)]
    return found


def _login_defs(path='/etc/login.defs'):
    limits = {'UID_MIN': 1000, 'UID_MAX': 60000}
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] in limits and is_decimal(parts[1]):
                    limits[parts[0]] = int(parts[1])
    except OSError:
        pass
    return limits['UID_MIN'], limits['UID_MAX']


def local_users(passwd=None, login_defs='/etc/login.defs'):
    """root and every regular user (UID_MIN..UID_MAX) whose home directory exists."""
    uid_min, uid_max = _login_defs(login_defs)
    users = []
    for entry in passwd if passwd is not None else pwd.getpwall():
        if (entry.pw_uid == 0 or uid_min <= entry.pw_uid <= uid_max) and os.path.isdir(entry.pw_dir):
            if entry.pw_name not in [user.pw_name for user in users]:
                users.append(entry)
    return users


def named_users(names, passwd=None):
    """The pwd entries of ``names``; LookupError naming the first user that does not exist."""
    selected = []
    for name in names:
        try:
            selected.append(pwd.getpwnam(name) if passwd is None else [entry for entry in passwd if entry.pw_name == name][0])
        except (KeyError, IndexError):
            raise LookupError('user %s does not exist on this host; give existing users, or omit users for every local user' % name) from None
    return selected
