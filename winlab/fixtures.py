"""Host fixtures → `EmulatedHost`s: the host factory of winlab.

Imports flow one way: `fixtures` (factory) → `host` → `agent_emulator` → `emulate_*` →
`installers`/`hoststate`, and `fixtures` → `templates` (state builder) → `fixture_yaml` /
`fixture_schema` / `fixture_errors`. The schema is documented in `winlab/README.md`.

Public API: `load_fixtures(path)`, `load_host_fixture_text(text, name)`, `demo_site()`,
`clone_site(hosts, n)`, `FixtureError`, `encode_text` (re-exported from `winlab.templates`).
"""

from __future__ import annotations

from pathlib import Path

from winlab.fixture_errors import FixtureError
from winlab.host import EmulatedHost
from winlab.templates import HostTemplate, encode_text, load_templates_text

__all__ = [
    "DEMO_SITE", "FIXTURES_DIR", "FixtureError", "HostTemplate", "clone_site", "demo_site", "encode_text",
    "load_fixtures", "load_host_fixture_text",
]

FIXTURES_DIR = Path(__file__).with_name("fixtures")
DEMO_SITE = FIXTURES_DIR / "demo-site.yaml"


def load_host_fixture_text(text: str, name: str = "<string>", base_dir: Path | None = None) -> list[EmulatedHost]:
    """Hosts from fixture YAML text (tests). Raises FixtureError."""
    return [EmulatedHost(t) for t in load_templates_text(text, name, base_dir)]


def load_fixtures(path: Path) -> list[EmulatedHost]:
    """Hosts from a fixture file, or from every `*.yaml`/`*.yml` file of a directory (sorted by
    name). Raises FixtureError (also for a missing path or duplicate host names across files)."""
    path = Path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise FixtureError(str(path), None, "", "no *.yaml fixture files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise FixtureError(str(path), None, "", "fixture file or directory not found")
    hosts: list[EmulatedHost] = []
    names: set[str] = set()
    for f in files:
        for t in load_templates_text(f.read_text(encoding="utf-8"), str(f), f.parent):
            if t.name.lower() in names:
                raise FixtureError(str(f), None, "hosts", f"host {t.name!r} is defined in more than one file")
            names.add(t.name.lower())
            hosts.append(EmulatedHost(t))
    return hosts


def demo_site() -> list[EmulatedHost]:
    """The shipped demo site (`winlab/fixtures/demo-site.yaml`), fresh state each call."""
    return load_fixtures(DEMO_SITE)


def clone_site(hosts: list[EmulatedHost], n: int) -> list[EmulatedHost]:
    """`n` hosts cycling through `hosts`' templates, named `<NAME>-0001`, `<NAME>-0002`, … (the
    number is the clone's index in the result, 1-based). File contents are shared, state is not.
    Raises ValueError when `hosts` is empty and n > 0."""
    if n > 0 and not hosts:
        raise ValueError("clone_site needs at least one host")
    width = max(4, len(str(n)))
    return [
        EmulatedHost(hosts[i % len(hosts)].template, f"{hosts[i % len(hosts)].template.name}-{i + 1:0{width}d}")
        for i in range(n)
    ]
