"""Where kbfix keeps its state and what its optional config file says.

State (the audit store) lives in `--state DIR`, else `$KBFIX_STATE`, else the platform's user
data dir (platformdirs: `~/.local/share/kbfix` on Linux). The config file — `$KBFIX_CONFIG`, else
`<user config dir>/config.yaml` — is optional YAML:

```yaml
windows:                      # named change windows for `--window NAME`
  sat-night: "2026-11-28T22:00:00+01:00/PT4H"
reboot:                       # apply's restart defaults (the plan and the command line win)
  policy: if-needed           # never | if-needed | always
  timeout: 900                # seconds the host has to answer again with a new boot time
  pre_reboot_delay: 2         # shutdown.exe /t
  post_reboot_delay: 30       # seconds to let a host settle once back, before verify (0-3600, default 0)
  message: "kbfix change window"
broker: redis://broker.corp:6379/0   # sites (issue 18): default for --broker / KBFIX_BROKER
require_change_ticket: true   # `kbfix apply` refuses to start without --change-ticket (default false)
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import yaml
from pydantic import ValidationError

from inventory.safeyaml import YamlLimitError, safe_load
from playbooks.reboot import RebootSettings

APP = "kbfix"


class ConfigError(ValueError):
    """The config file exists but cannot be read or has the wrong shape (message names the file)."""


def default_state_dir() -> Path:
    """`$KBFIX_STATE` or the platform user data dir for kbfix (also when KBFIX_STATE is a
    `postgresql://…` store URL: the files kbfix keeps beside its store then live there)."""
    env = os.environ.get("KBFIX_STATE")
    if env and not env.lower().startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return Path(env)
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def default_config_path() -> Path:
    """`$KBFIX_CONFIG` or `<user config dir>/config.yaml`."""
    env = os.environ.get("KBFIX_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.yaml"


@dataclass(frozen=True)
class Config:
    """The parsed config file: named windows (name → ISO 8601 interval text), whether apply needs a
    change ticket, and its path."""

    windows: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None
    require_change_ticket: bool = False
    reboot: RebootSettings | None = None  # reboot (issue 21)
    broker: str | None = None  # sites (issue 18)


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file gives an empty Config. Raises ConfigError."""
    path = path or default_config_path()
    if not path.is_file():
        return Config(path=None)
    try:
        data = safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, YamlLimitError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(data) - {"windows", "reboot", "broker", "require_change_ticket"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(map(str, unknown))} "
                          "(known: windows, reboot, broker, require_change_ticket)")
    broker = data.get("broker")
    if broker is not None and not isinstance(broker, str):
        raise ConfigError(f"{path}: broker: expected a URL string")
    require = data.get("require_change_ticket", False)
    if not isinstance(require, bool):
        raise ConfigError(f"{path}: require_change_ticket: expected true or false, not {require!r}")
    reboot = None
    if data.get("reboot") is not None:
        try:
            reboot = RebootSettings.model_validate(data["reboot"])
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in ("reboot", *err["loc"]))
            raise ConfigError(f"{path}: {where}: {err['msg']}") from exc
    windows = data.get("windows") or {}
    if not isinstance(windows, dict) or not all(isinstance(v, str) for v in windows.values()):
        raise ConfigError(f"{path}: windows: expected name: \"START/END\" entries")
    return Config(windows={str(k): v for k, v in windows.items()}, path=path, reboot=reboot, broker=broker,
                  require_change_ticket=require)
