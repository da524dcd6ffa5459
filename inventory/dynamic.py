"""Dynamic inventories (scripts, plugin configs) read through Ansible's own `ansible-inventory --list`.

kbfix does not run inventory scripts or plugins itself and does not depend on ansible-core. When
`ansible-inventory` is on PATH, a source that is a script (`#!` first line) or an inventory
plugin configuration (a YAML mapping with `plugin:`) is read as Ansible reads it:
`ansible-inventory -i SOURCE --list` prints the inventory as JSON (format: ansible-core
`ansible/cli/inventory.py::InventoryCLI.json_inventory` — `_meta.hostvars` with each host's
variables, and per group `hosts`, `children` and `vars`), which is loaded here into the same
model as a static file. Vault values in that JSON (`{"__ansible_vault": "<envelope>"}`, ansible-core
`AnsibleJSONEncoder`) stay encrypted until the vault keyring opens them; `{"__ansible_unsafe": text}`
is `!unsafe` text. Without
`ansible-inventory`, the error says how to install it or export the inventory instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from inventory.data import InventoryData, Origin
from inventory.errors import InventoryError
from inventory.vault import UnsafeText, VaultText

TIMEOUT_S = 300.0
_RESERVED = ("_meta",)


def ansible_inventory_command() -> str | None:
    """The `ansible-inventory` executable on PATH, or None."""
    return shutil.which("ansible-inventory")


def run_ansible_inventory(path: Path, kind: str, field: str | None = None) -> Any:
    """The parsed JSON of `ansible-inventory -i PATH --list`. Raises InventoryError when it is not
    installed, fails (its exit status; stderr's last line, which names the problem), times out, or
    prints something that is not JSON."""
    command = ansible_inventory_command()
    if command is None:
        raise InventoryError(
            f"this is a dynamic inventory ({kind}); kbfix reads it through Ansible's `ansible-inventory`, "
            "which is not on PATH: install ansible-core (pip install ansible-core) or export the inventory "
            "with `ansible-inventory -i SOURCE --list -y > inventory.yml` and use that file",
            file=path, line=1, field=field,
        )
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    try:
        done = subprocess.run([command, "-i", str(path), "--list"], capture_output=True, timeout=TIMEOUT_S,
                              check=False, env=env)
    except subprocess.TimeoutExpired:
        raise InventoryError(f"ansible-inventory did not finish within {TIMEOUT_S:g} s", file=path) from None
    except OSError as exc:
        raise InventoryError(f"cannot run ansible-inventory: {exc.strerror or exc}", file=path) from None
    if done.returncode != 0:
        last = next((ln for ln in reversed(done.stderr.decode(errors="replace").splitlines()) if ln.strip()), "")
        raise InventoryError(f"ansible-inventory failed (exit {done.returncode}): {last.strip()[:300]}", file=path)
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise InventoryError("ansible-inventory printed something that is not JSON", file=path) from None


def vault_values(value: Any) -> Any:
    """`value` (ansible-inventory JSON) with each `{"__ansible_vault": envelope}` as a `VaultText`."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_vault"} and isinstance(value["__ansible_vault"], str):
            return VaultText(value["__ansible_vault"])
        if set(value) == {"__ansible_unsafe"} and isinstance(value["__ansible_unsafe"], str):
            return UnsafeText(value["__ansible_unsafe"])
        return {k: vault_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [vault_values(v) for v in value]
    return value


def load_inventory_json(doc: Any, path: Path, inv: InventoryData) -> None:
    """Read `ansible-inventory --list` JSON into `inv` (vault values already opened by the caller:
    `vault_values` then `VaultKeyring.reveal_tree`). Raises InventoryError for a wrong shape."""
    if not isinstance(doc, dict):
        raise InventoryError("ansible-inventory JSON must be an object", file=path)
    origin = Origin(path, None)
    meta = doc.get("_meta") or {}
    hostvars = (meta.get("hostvars") or {}) if isinstance(meta, dict) else {}
    if not isinstance(hostvars, dict):
        raise InventoryError("_meta.hostvars must be an object", file=path, field="_meta.hostvars")
    groups = {name: body for name, body in doc.items() if name not in _RESERVED}
    for name, body in groups.items():
        if not isinstance(body, dict):
            raise InventoryError(f"group {name!r} must be an object", file=path, field=name)
        inv.add_group(name, origin)
    for name, body in groups.items():
        for child in body.get("children") or []:
            inv.add_group(child, origin)
            inv.add_child(name, child, origin)
        for host in body.get("hosts") or []:
            inv.add_host(str(host), name, None, origin)
        for key, value in (body.get("vars") or {}).items():
            inv.set_group_var(name, str(key), value, origin)
    for host, variables in hostvars.items():
        if host not in inv.hosts:
            inv.add_host(str(host), None, None, origin)
        if not isinstance(variables, dict):
            raise InventoryError(f"hostvars of {host!r} must be an object", file=path, field=f"_meta.hostvars.{host}")
        for key, value in variables.items():
            inv.set_host_var(str(host), str(key), value, origin)
