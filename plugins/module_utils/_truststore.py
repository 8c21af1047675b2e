# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The shape every trust store of magrathea.secure shares, and the driver that runs them.

Private to this collection: not for use by other collections.

Each store file (_truststore_os, _truststore_java, _truststore_nss,
_truststore_firefox) has TrustStore objects that answer ``held()`` (what
they hold of one certificate), ``apply()`` (one change) and ``anchors()``
(the CA certificates they trust, for trust_check). This file owns what is
the same for all of them: planning install and remove by SHA-256 (same
certificate under another name is present; another certificate under our
name is a conflict), check mode, verifying after a write, results per store
with a precise cause, the diff, running the external tools (LC_ALL=C,
secrets in the environment or on stdin, as the store's owner), and the one
error boundary: whatever a store raises, a TrustStoreError or a local
OSError, becomes that store's failed result and the other stores still run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile

from ansible_collections.magrathea.secure.plugins.module_utils._tls import format_fingerprint

MANAGED_BY_CA_TRUST = 'magrathea.secure.ca_trust'


class TrustStoreError(Exception):
    """A store could not be read or changed; the message names the store, the cause and the next step."""

    def __init__(self, message, cause='error'):
        super().__init__(message)
        self.cause = cause


class ToolNotFound(TrustStoreError):
    """The store's command-line tool (keytool, certutil, the refresh tool) is not installed."""

    def __init__(self, message):
        super().__init__(message, cause='tool_missing')


class Holding:
    """What one store holds of one certificate.

    ``holders`` lists (entry name, trusted) of every entry holding the
    certificate; ``name_sha256`` is the SHA-256 (hex) of what the wanted
    entry name holds now, or None when the name is free.
    """

    def __init__(self, holders=(), name_sha256=None):
        self.holders = list(holders)
        self.name_sha256 = name_sha256


class Change(dict):
    """One change to a store: action (add, delete, trust, refresh, write), entry name, certificate."""

    def __init__(self, action, entry=None, anchor=None, sha256=None):
        super().__init__(action=action)
        if entry is not None:
            self['entry'] = entry
        sha256 = anchor.sha256 if anchor is not None else sha256
        if sha256:
            self['sha256'] = format_fingerprint(sha256)
        if anchor is not None:
            self['subject'] = anchor.subject
        self.anchor = anchor


class TrustStore:
    """A trust store: one OS anchor directory, one Java keystore, one NSS database."""

    kind = 'store'
    managed_by = None

    def __init__(self, path, check_mode=False, runner=None):
        self.path = path
        self.check_mode = check_mode
        self.runner = runner or CommandRunner()

    def describe(self):
        return self.path

    def info(self):
        """Facts about the store shown in its result."""
        return {}

    def entry_name(self, name):
        """The store's entry for the module's name (the OS store adds the file extension)."""
        return name

    def held(self, anchor, entry):
        """Holding of ``anchor`` and of the store entry ``entry`` (None: no entry of ours)."""
        raise NotImplementedError

    def prepare(self):
        """Called before the first change, in check mode too: raise ToolNotFound before anything is written."""

    def apply(self, change):
        """Carry out one Change."""
        raise NotImplementedError

    def finish(self, anchors, state):
        """Changes that follow the entries (the OS store's refresh), once every anchor is installed or removed."""
        return []

    def anchors(self):
        """DER bytes of every certificate this store trusts as a CA for TLS servers."""
        raise NotImplementedError

    # The common surface of every store: state, install, remove.

    def state(self, anchor, name=None):
        """``present`` (trusted under some name), ``untrusted`` (held but not trusted), ``conflict`` or ``absent``."""
        entry = self.entry_name(name) if name else None
        holding = self.held(anchor, entry)
        if any(trusted for dummy, trusted in holding.holders):
            return 'present'
        if holding.holders:
            return 'untrusted'
        if entry and holding.name_sha256 and holding.name_sha256 != anchor.sha256:
            return 'conflict'
        return 'absent'

    def install(self, anchor, name, replace=False):
        """Make the store trust ``anchor``; returns the changes (only planned in check mode)."""
        name = self.entry_name(name)
        holding = self.held(anchor, name)
        if any(trusted for dummy, trusted in holding.holders):
            return []
        if holding.holders:
            changes = [Change('trust', holding.holders[0][0], anchor)]
        elif holding.name_sha256 and holding.name_sha256 != anchor.sha256:
            if not replace:
                raise TrustStoreError('%s already holds another certificate (SHA-256 %s) under %r; nothing was changed. '
                                      'Choose another name, or set replace=true to replace it with %s'
                                      % (self.describe(), format_fingerprint(holding.name_sha256), name, anchor.describe()), cause='conflict')
            changes = [Change('delete', name, sha256=holding.name_sha256), Change('add', name, anchor)]
        else:
            changes = [Change('add', name, anchor)]
        self._carry_out(changes)
        return changes

    def remove(self, anchor, name=None):
        """Make the store no longer hold ``anchor`` under any name; returns the changes."""
        changes = [Change('delete', entry, anchor) for entry, dummy in self.held(anchor, None).holders]
        self._carry_out(changes)
        return changes

    def _carry_out(self, changes):
        if changes:
            self.prepare()
        if not self.check_mode:
            for change in changes:
                self.apply(change)


class CommandRunner:
    """Runs the stores' tools: C locale, no shell, secrets only in the environment or on stdin."""

    def run(self, argv, data=None, env=None, user=None):
        """(rc, stdout, stderr) of ``argv``; ``user`` is a pwd entry to run as (needs root)."""
        environ = dict(os.environ, LC_ALL='C', LANG='C')
        environ.update(env or {})
        kwargs = {}
        if user is not None and os.geteuid() == 0 and user.pw_uid != 0:
            # Write as the owner so the browser can still open its database afterwards.
            kwargs = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=os.getgrouplist(user.pw_name, user.pw_gid))
            environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        if isinstance(data, str):
            data = data.encode('utf-8')
        try:
            proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, cwd='/',
                                  check=False, **kwargs)
        except FileNotFoundError:
            raise ToolNotFound('%s is not installed (not found at %s)' % (os.path.basename(argv[0]), argv[0])) from None
        except PermissionError as exc:
            raise TrustStoreError('cannot run %s: %s' % (argv[0], exc.strerror), cause='permission') from None
        return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


def write_public_file(path, text):
    """Replace ``path`` atomically with ``text``, mode 0644 (certificates and policies are public); parents are created."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.magrathea-')
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


# What to do about a local file error, by errno: the one place an OSError of a store becomes its TrustStoreError.
_OS_ERROR_HINTS = {
    errno.EACCES: ('permission', 'run the task with become'),
    errno.EPERM: ('permission', 'run the task with become; an immutable file (chattr +i) refuses even root'),
    errno.EROFS: ('read_only', 'the file system is mounted read-only'),
    errno.ENOSPC: ('no_space', 'free space on that file system'),
    errno.EDQUOT: ('no_space', 'the owner is over quota on that file system'),
    errno.EBUSY: ('busy', 'another process holds it; try again when it has finished'),
}


def store_error(exc):
    """The TrustStoreError for what a store raised: itself, or an OSError told as the file, the reason and the next step."""
    if isinstance(exc, TrustStoreError):
        return exc
    cause, hint = _OS_ERROR_HINTS.get(exc.errno, ('os_error', 'check that file'))
    where = ' and '.join(str(name) for name in (exc.filename, exc.filename2) if name) or 'a file of the store'
    return TrustStoreError('%s: %s; %s' % (where, exc.strerror or exc, hint), cause=cause)


STORE_ERRORS = (TrustStoreError, OSError)


def find_tool(name, candidates, what):
    """The first existing executable of ``candidates`` (absolute paths); ToolNotFound naming ``what`` to install."""
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ToolNotFound('%s not found (looked in %s); install %s' % (name, ', '.join(path for path in candidates if path) or 'nowhere', what))


def converge(stores, anchors, names, state, replace=False):
    """Install (state=present) or remove every anchor in every store, store by store.

    Stores run in the given order and in reverse order to remove. One store's
    failure does not stop the others: its result carries the cause. Returns
    (results, changed, diff).
    """
    ordered = list(stores) if state == 'present' else list(reversed(stores))
    results, before, after = [], {}, {}
    changed = False
    for store in ordered:
        result = dict(path=store.describe(), kind=store.kind, changed=False, changes=[], status=state)
        try:
            result.update(store.info())
            if store.managed_by:
                result.update(_managed(store, anchors, state))
                results.append(result)
                continue
            store_before, changes = {}, []
            for anchor, name in zip(anchors, names):
                entry = store.entry_name(name)
                store_before.update(_entries(anchor, entry, store.held(anchor, entry)))
                if state == 'present':
                    changes.extend(store.install(anchor, name, replace))
                else:
                    changes.extend(store.remove(anchor, name))
            changes.extend(store.finish(anchors, state))
            if not store.check_mode:
                _verify(store, anchors, names, state)
        except STORE_ERRORS as exc:  # the one error boundary of every store
            exc = store_error(exc)
            result.update(status='conflict' if exc.cause == 'conflict' else 'failed', cause=exc.cause, msg=str(exc))
            results.append(result)
            continue
        if changes:
            changed = True
            result.update(changed=True, changes=changes)
            before[store.describe()] = store_before
            after[store.describe()] = _after(store_before, changes)
        results.append(result)
    return results, changed, dict(before=dict(stores=before), after=dict(stores=after))


def _managed(store, anchors, state):
    """The result of a store another module manages: what it holds, and who changes it."""
    try:
        holding = [anchor for anchor in anchors if store.state(anchor) == 'present'] if state == 'absent' else []
    except STORE_ERRORS as exc:
        return dict(status='managed', managed_by=store.managed_by, trusted=False,
                    msg='%s is regenerated from the operating system store, and %s removes the certificate there; it could not be '
                        'read to tell whether it still trusts it: %s' % (store.describe(), store.managed_by, store_error(exc)))
    if holding:
        message = ('%s still trusts %s: it is regenerated from the operating system store, and %s with state=absent removes '
                   'the certificate there and from this store' % (store.describe(), ', '.join(anchor.describe() for anchor in holding),
                                                                  store.managed_by))
    else:
        message = '%s is regenerated from the operating system store; %s %s the certificate there' % (
            store.describe(), store.managed_by, 'installs' if state == 'present' else 'removes')
    return dict(status='managed', managed_by=store.managed_by, trusted=bool(holding), msg=message)


def _entries(anchor, name, holding):
    entries = {}
    for entry, trusted in holding.holders:
        entries[entry] = dict(sha256=anchor.fingerprint, subject=anchor.subject, trusted=trusted)
    if name and name not in entries and holding.name_sha256:
        entries[name] = dict(sha256=format_fingerprint(holding.name_sha256), trusted=True)
    return entries


def _after(entries, changes):
    result = dict((name, dict(value)) for name, value in entries.items())
    for change in changes:
        entry = change.get('entry')
        if change['action'] == 'delete':
            result.pop(entry, None)
        elif change['action'] in ('add', 'trust') and change.anchor is not None:
            result[entry] = dict(sha256=change['sha256'], subject=change['subject'], trusted=True)
    return result


def _verify(store, anchors, names, state):
    """Read the store again: tools can exit 0 and still not have written."""
    for anchor, name in zip(anchors, names):
        now = store.state(anchor, name)
        if (state == 'present') != (now == 'present') or (state == 'absent' and now == 'untrusted'):
            raise TrustStoreError('%s: the certificate %s is still %s after the change; the tool reported success but did not write. '
                                  'Check the store with its own tool' % (store.describe(), anchor.describe(), now), cause='not_written')


def failure_message(results, what):
    """One message for every failed or conflicting store, or None."""
    bad = [result for result in results if result['status'] in ('failed', 'conflict')]
    if not bad:
        return None
    return '%d of %d %s failed: %s' % (len(bad), len(results), what, '; '.join(result['msg'] for result in bad))


def run_trust_module(module, stores, anchors, names, what, finish=None):
    """The end of every trust module: converge, then exit or fail with a result per store.

    ``finish(results, diff)`` runs after the stores (java_trust sets file attributes there) and returns whether it changed anything.
    """
    results, changed, diff = converge(stores, anchors, names, module.params['state'], module.params.get('replace', False))
    if finish is not None:
        changed = finish(results, diff) or changed
    result = dict(changed=changed, results=results, certificates=[anchor.summary() for anchor in anchors])
    if module._diff:
        result['diff'] = diff
    for row in results:
        if row['status'] == 'managed' and row['trusted']:
            module.warn(row['msg'])
    message = failure_message(results, what)
    if message:
        module.fail_json(msg=message, **result)
    if not results:
        result['msg'] = 'no %s found on this host; nothing to do' % what
    module.exit_json(**result)
