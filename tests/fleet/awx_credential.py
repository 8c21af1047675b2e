# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What AWX does with a custom credential type, for the fleet test: check its definition, render its injectors.

Follows AWX's CredentialType.inject_credential (awx/main/models/credential/__init__.py): the namespace holds only the
inputs that are not empty (booleans default to false), file templates are rendered in a sandboxed Jinja environment
into private files under PRIVATE_DATA_DIR/env and named by tower.filename.<label>, then every env template is rendered.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import types

import yaml
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

# AWX refuses injected variables that would change how Ansible itself runs; the rest must be plain names.
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
PROHIBITED_PREFIXES = ("ANSIBLE_",)
PROHIBITED_NAMES = ("PATH", "PYTHONPATH", "HOME", "JOB_ID", "INVENTORY_ID", "INVENTORY_SOURCE_ID", "INVENTORY_UPDATE_ID",
                    "AD_HOC_COMMAND_ID", "REST_API_URL", "REST_API_TOKEN", "MAX_EVENT_RES", "CALLBACK_QUEUE",
                    "CALLBACK_CONNECTION", "CACHE", "JOB_CALLBACK_DEBUG", "INVENTORY_HOSTVARS", "AWX_HOST", "PROJECT_REVISION",
                    "SUPERVISOR_CONFIG_PATH")


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def problems(credential_type):
    """What AWX (or a careful reviewer) would refuse in a credential type definition."""
    found = []
    fields = credential_type.get("inputs", {}).get("fields", [])
    ids = [field["id"] for field in fields]
    if len(ids) != len(set(ids)):
        found.append("duplicate field ids")
    for field in fields:
        if field.get("type", "string") not in ("string", "boolean"):
            found.append("field %s has type %s" % (field["id"], field.get("type")))
        if re.search(r"password|secret|token", field["id"]) and not field.get("secret"):
            found.append("field %s holds a secret but is not secret: true" % field["id"])
    for name in credential_type.get("inputs", {}).get("required", []):
        if name not in ids:
            found.append("required field %s is not defined" % name)
    environment = ImmutableSandboxedEnvironment()
    injectors = credential_type.get("injectors", {})
    templates = list(injectors.get("file", {}).values()) + list(injectors.get("env", {}).values())
    for template in templates:
        for name in meta.find_undeclared_variables(environment.parse(template)):
            if name not in ids and name != "tower":
                found.append("an injector uses %s, which is no field" % name)
    for name in injectors.get("env", {}):
        if not ENV_NAME.fullmatch(name) or name.startswith(PROHIBITED_PREFIXES) or name in PROHIBITED_NAMES:
            found.append("AWX would not inject the variable %s" % name)
    return found


def inject(credential_type, inputs, private_data_dir):
    """The environment AWX gives a job for a credential of this type with these inputs (files under private_data_dir)."""
    namespace = {name: value for name, value in inputs.items() if isinstance(value, bool) or len(value)}
    for field in credential_type["inputs"]["fields"]:
        if field.get("type") == "boolean" and field["id"] not in inputs:
            namespace[field["id"]] = False
    tower = types.SimpleNamespace()
    namespace["tower"] = tower
    environment = ImmutableSandboxedEnvironment()
    env_dir = os.path.join(private_data_dir, "env")
    os.makedirs(env_dir, mode=0o700, exist_ok=True)
    for label, template in credential_type["injectors"].get("file", {}).items():
        data = environment.from_string(template).render(**namespace)
        descriptor, path = tempfile.mkstemp(dir=env_dir)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(data)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP)
        if "." not in label:
            tower.filename = path
        else:
            if not hasattr(tower, "filename"):
                tower.filename = types.SimpleNamespace()
            setattr(tower.filename, label.split(".", 1)[1], path)
    return {name: environment.from_string(template).render(**namespace)
            for name, template in credential_type["injectors"].get("env", {}).items()}
