# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The glue between the NTSAPI modules and a session.

Private to this collection: not for use by other collections.

Owns the shared argument spec of the NTSAPI modules, the refusal of bad input
before anything is sent (one message listing every problem), keeping IAX2
secrets out of every result, and running one session for a module: errors
become one ``fail_json`` naming host:port, pipelining fall-backs become warnings.
"""

from __future__ import annotations

from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_grammar import refusal, target_secrets
from ansible_collections.magrathea.secure.plugins.module_utils._ntsapi_session import (
    DEFAULT_PIPELINE_DEPTH,
    MAX_PIPELINE_DEPTH,
    NtsapiSession,
)
from ansible_collections.magrathea.secure.plugins.module_utils._tls import (
    MagratheaError,
    connection_argument_spec,
    endpoint_from_module,
)


def ntsapi_argument_spec(**options):
    """The shared connection options (NTSAPI defaults and MAGRATHEA_NTSAPI_* fallbacks), pipeline_depth and ``options``."""
    spec = connection_argument_spec('NTSAPI')
    spec['pipeline_depth'] = dict(type='int', default=DEFAULT_PIPELINE_DEPTH)
    spec.update(options)
    return spec


def refuse_before_sending(module, problems):
    """fail_json listing ``problems`` when there are any; nothing has been sent."""
    if problems:
        module.fail_json(msg=refusal(problems))


def hide_target_secrets(module, texts):
    """Keep the IAX2 secrets in ``texts`` (targets, command lines) out of everything the module returns, -vvv included."""
    for text in texts:
        if isinstance(text, str):
            module.no_log_values.update(target_secrets(text))


def run_module_session(module, work, partial=None):
    """Open a session from the module's options, call ``work(session)`` and close with QUIT.

    Every collection error becomes one fail_json whose message names host:port; ``partial``
    (a callable returning what was done so far, as a dict) is returned with it. Pipelining fall-backs become warnings.
    """
    params = module.params
    if not 1 <= params['pipeline_depth'] <= MAX_PIPELINE_DEPTH:
        module.fail_json(msg='pipeline_depth must be between 1 (lock-step) and %d, not %d. Nothing was sent.'
                         % (MAX_PIPELINE_DEPTH, params['pipeline_depth']))
    endpoint = endpoint_from_module(module, 'NTSAPI')
    try:
        session = NtsapiSession(endpoint, params['username'], params['password'], params['pipeline_depth'])
    except ValueError as exc:
        module.fail_json(msg='%s: %s' % (endpoint.describe(), exc))
    try:
        with session:
            result = work(session)
    except (MagratheaError, ValueError) as exc:
        for warning in session.warnings:
            module.warn(warning)
        message = str(exc) if isinstance(exc, MagratheaError) else 'NTSAPI %s: %s' % (endpoint.describe(), exc)
        module.fail_json(msg=message, **(partial() if partial else {}))
    for warning in session.warnings:
        module.warn(warning)
    return result
