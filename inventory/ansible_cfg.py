"""ansible.cfg: found where Ansible looks, and the three settings kbfix takes from it.

Search order, first readable file wins (ansible-core `ansible/config/manager.py::find_ini_config_file`,
documented at https://docs.ansible.com/ansible/latest/reference_appendices/config.html#the-configuration-file):
`ANSIBLE_CONFIG` (a directory means `<dir>/ansible.cfg`), `./ansible.cfg` (skipped when the
working directory is world-writable, with a warning), `~/.ansible.cfg`, `/etc/ansible/ansible.cfg`.

Read with `configparser.ConfigParser(inline_comment_prefixes=(";",))` as ansible-core does. From
`[defaults]`: `inventory` (DEFAULT_HOST_LIST, a comma-separated path list), `vault_password_file`
(DEFAULT_VAULT_PASSWORD_FILE, a path) and `vault_identity_list` (DEFAULT_VAULT_IDENTITY_LIST, a
comma-separated list). Relative paths in the file are relative to the file's directory (Ansible's
`resolve_path(value, basedir=<cfg dir>)`); the environment variables ANSIBLE_INVENTORY,
ANSIBLE_VAULT_PASSWORD_FILE and ANSIBLE_VAULT_IDENTITY_LIST win over the file, with relative paths
taken from the working directory.
"""

from __future__ import annotations

import configparser
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inventory.errors import InventoryError

SYSTEM_CONFIG = Path("/etc/ansible/ansible.cfg")


@dataclass(frozen=True)
class AnsibleConfig:
    """What kbfix uses from ansible.cfg and the ANSIBLE_* environment.

    path: the ansible.cfg read (None when none was found); inventory: inventory sources, absolute;
    vault_password_file: absolute path or None; vault_identity_list: `label@source` entries;
    origins: setting → where it came from ("ansible.cfg" path or the environment variable);
    warnings: notes such as a skipped world-writable ./ansible.cfg.
    """

    path: Path | None = None
    inventory: tuple[Path, ...] = ()
    vault_password_file: Path | None = None
    vault_identity_list: tuple[str, ...] = ()
    origins: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def find_config(env: Mapping[str, str], cwd: Path, home: Path) -> tuple[Path | None, list[str]]:
    """The ansible.cfg Ansible would use, and warnings. See the module docstring for the order."""
    warnings: list[str] = []
    candidates: list[Path] = []
    from_env = env.get("ANSIBLE_CONFIG")
    if from_env is not None:
        p = Path(os.path.expandvars(os.path.expanduser(from_env)))
        p = p if p.is_absolute() else cwd / p
        candidates.append(p / "ansible.cfg" if p.is_dir() else p)
    cwd_cfg = cwd / "ansible.cfg"
    try:
        world_writable = bool(cwd.stat().st_mode & stat.S_IWOTH)
    except OSError:
        world_writable = False
    if world_writable:
        if cwd_cfg.exists():
            warnings.append(f"ignoring {cwd_cfg}: the directory is world-writable (as Ansible does)")
    else:
        candidates.append(cwd_cfg)
    candidates.append(home / ".ansible.cfg")
    candidates.append(SYSTEM_CONFIG)
    for path in candidates:
        if path.is_file() and os.access(path, os.R_OK):
            return path, warnings
    return None, warnings


def _resolve(value: str, base: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(value.strip())))
    return p if p.is_absolute() else (base / p)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def load_config(env: Mapping[str, str] | None = None, cwd: Path | None = None,
                home: Path | None = None) -> AnsibleConfig:
    """Find and read ansible.cfg and the ANSIBLE_* variables (defaults: the process's own).

    Raises InventoryError (file and line) when the file cannot be parsed.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    home = Path.home() if home is None else home
    path, warnings = find_config(env, cwd, home)
    values: dict[str, tuple[str, Path, str]] = {}  # key → (raw value, base dir, origin)
    if path is not None:
        parser = configparser.ConfigParser(inline_comment_prefixes=(";",))
        try:
            parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
        except configparser.Error as exc:
            line = getattr(exc, "lineno", None)
            raise InventoryError(f"cannot read ansible.cfg: {type(exc).__name__}", file=path, line=line) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryError(f"cannot read ansible.cfg: {type(exc).__name__}", file=path) from None
        if parser.has_section("defaults"):
            for key in ("inventory", "hostfile", "vault_password_file", "vault_identity_list"):
                try:
                    raw = parser.get("defaults", key, fallback=None)
                except configparser.Error as exc:  # e.g. a bad %-interpolation
                    raise InventoryError(f"cannot read {key}: {type(exc).__name__}", file=path,
                                         field=f"defaults.{key}") from None
                if raw is not None and raw.strip():
                    values["inventory" if key == "hostfile" else key] = (raw, path.parent, f"{path} [defaults] {key}")
    for key, var in (("inventory", "ANSIBLE_INVENTORY"), ("vault_password_file", "ANSIBLE_VAULT_PASSWORD_FILE"),
                     ("vault_identity_list", "ANSIBLE_VAULT_IDENTITY_LIST")):
        if env.get(var, "").strip():
            values[key] = (env[var], cwd, f"environment {var}")
    inventory: tuple[Path, ...] = ()
    password_file: Path | None = None
    identities: tuple[str, ...] = ()
    if "inventory" in values:
        raw, base, _ = values["inventory"]
        inventory = tuple(_resolve(v, base) for v in _split(raw))
    if "vault_password_file" in values:
        raw, base, _ = values["vault_password_file"]
        password_file = _resolve(raw, base)
    if "vault_identity_list" in values:
        identities = tuple(_split(values["vault_identity_list"][0]))
    return AnsibleConfig(path=path, inventory=inventory, vault_password_file=password_file,
                         vault_identity_list=identities, origins={k: v[2] for k, v in values.items()},
                         warnings=tuple(warnings))
