"""Benchmark: what Vault and `{{ }}` rendering add to loading a 10,000-host Ansible inventory.

Three runs over the same INI fleet (benchmarks/inventory_load.py's `write_ini`): a plain
password; the password as `{{ vault_win_password }}` with the value in an ansible-vault
encrypted `group_vars/fleet/vault.yml` (tests/data/inventory/vault, made by ansible-vault) plus
a per-host `{{ inventory_hostname }}` Kerberos SPN override. Best of 3, wall and CPU seconds.
Usage: `.venv/bin/python benchmarks/inventory_templating.py [--hosts N]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inventory_load import write_ini  # noqa: E402
from inventory import load_inventory  # noqa: E402
from inventory.vault_secrets import build_keyring  # noqa: E402

VAULT = ROOT / "tests" / "data" / "inventory" / "vault"


def _measure(path: Path, vault_file: Path | None) -> tuple[float, float]:
    best = best_cpu = float("inf")
    for _ in range(3):
        keyring = build_keyring(password_files=[vault_file] if vault_file else [])
        start, start_cpu = time.perf_counter(), time.process_time()
        inv = load_inventory(path, env={}, vault=keyring)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        assert all(h.endpoint is not None and h.endpoint.password for h in inv.hosts.values())
    return best, best_cpu


def main() -> None:
    """Print wall/CPU seconds per variant and the cost per host of rendering."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kbfix-bench-") as tmp:
        root = Path(tmp)
        plain = root / "plain" / "hosts"
        plain.parent.mkdir()
        write_ini(plain, args.hosts)
        plain.write_text(plain.read_text(encoding="utf-8").replace(
            "[fleet:vars]\n", "[fleet:vars]\nansible_password=bench-only\n"), encoding="utf-8")
        templated = root / "templated" / "hosts"
        templated.parent.mkdir()
        write_ini(templated, args.hosts)
        templated.write_text(templated.read_text(encoding="utf-8").replace(
            "[fleet:vars]\n",
            '[fleet:vars]\nansible_password="{{ vault_win_password }}"\n'
            'ansible_winrm_kerberos_hostname_override="{{ inventory_hostname }}"\n'), encoding="utf-8")
        (templated.parent / "group_vars" / "fleet").mkdir(parents=True)
        shutil.copy(VAULT / "layouts" / "template" / "group_vars" / "windows" / "vault.yml",
                    templated.parent / "group_vars" / "fleet" / "vault.yml")
        rows = [("plain password", *_measure(plain, None)),
                ("vault + {{ }} (2 templated settings)", *_measure(templated, VAULT / "vault-pass.txt"))]
    print(f"{'inventory (' + str(args.hosts) + ' hosts)':<40} {'wall s':>8} {'cpu s':>8}")
    for name, wall, cpu in rows:
        print(f"{name:<40} {wall:8.2f} {cpu:8.2f}")
    extra = (rows[1][2] - rows[0][2]) / args.hosts * 1e6
    print(f"rendering + vault cost per host: {extra:.0f} µs CPU")


if __name__ == "__main__":
    main()
