"""Hostile files (issue 20 findings 5, 8, 9, 12): YAML alias bombs and deep nesting in
inventories, manifests and lab fixtures; a 200,000-host INI group; manifest files that leave the
packages folder; non-UTF-8 and oversized plans. Each is refused with exit 2 naming the file, fast
and in bounded memory, before any host is contacted."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inventory import InventoryError, load_inventory
from inventory.resolve import mask_secrets
from playbooks.packages import ManifestError, load_packages
from winlab.fixtures import FixtureError, load_host_fixture_text

KBFIX = Path(sys.executable).with_name("kbfix")


def bomb(levels: int = 9, width: int = 9, key: str = "lol") -> str:
    """Billion laughs in YAML: `levels` anchors of `width` aliases each (9×9: 9^9 ≈ 387M nodes
    expanded from ~550 bytes)."""
    lines = [f"{key}0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"{key}{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _run_limited(args: list[str], *, mem_mb: int = 1024, timeout: float = 60) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run kbfix with an address-space limit (a bomb that expands dies with MemoryError or is
    killed instead of taking the machine); returns the process and its wall time."""
    def limit() -> None:  # pragma: no cover - runs in the child
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb * 1024 * 1024, mem_mb * 1024 * 1024))

    started = time.monotonic()
    proc = subprocess.run([str(KBFIX), *args], capture_output=True, timeout=timeout, preexec_fn=limit, check=False)
    return proc, time.monotonic() - started


def test_alias_bomb_inventory_exits_2_in_seconds_and_bounded_memory(tmp_path: Path) -> None:
    """661 bytes reached 10.8 GB before (mask_secrets expanded every alias)."""
    inv = tmp_path / "bomb.yml"
    inv.write_text("all:\n  vars:\n" + "".join(f"    {ln}\n" for ln in bomb().splitlines()) +
                   "  hosts:\n    h1: {ansible_host: 127.0.0.1}\n", encoding="utf-8")
    proc, took = _run_limited(["-i", str(inv), "--state", str(tmp_path / "s"), "check"])
    assert proc.returncode == 2, proc.stderr
    assert took < 15
    err = proc.stderr.decode()
    assert str(inv) in err and "alias" in err and "bomb" in err


def test_merge_keys_and_plain_anchors_still_load(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  vars:\n    common: &c {ansible_user: svc, ansible_password: s3cret}\n  hosts:\n"
                   + "".join(f"    h{i}: {{<<: *c, ansible_host: 10.0.0.{i}}}\n" for i in range(1, 50)), encoding="utf-8")
    hosts = load_inventory([inv]).select(None)
    assert len(hosts) == 49


def test_mask_secrets_keeps_shared_values_shared() -> None:
    """An alias-shared list is masked once, so masking stays linear (was exponential)."""
    shared: list[object] = ["x"] * 10
    for _ in range(30):  # 10 * 2^30 leaves if copied per reference
        shared = [shared, shared]
    masked = mask_secrets({"a": shared, "password": "pw"})
    assert masked["a"][0] is masked["a"][1]
    assert str(masked["password"]) != "pw"


def test_alias_bomb_and_deep_nesting_in_manifest_exit_2(tmp_path: Path) -> None:
    """The packages manifest reached 6.6 GB with a bomb; 10,000 nested lists crashed with exit 1."""
    for name, text in (("bomb", bomb(key="x") + "packages: []\n"), ("deep", "packages: " + "[" * 10000 + "]" * 10000 + "\n")):
        pkgs = tmp_path / name
        pkgs.mkdir()
        (pkgs / "manifest.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(ManifestError) as e:
            load_packages(pkgs)
        assert "manifest.yaml" in str(e.value)
        inv = tmp_path / "inv.yml"
        inv.write_text("kbfix_inventory: 1\nhosts:\n  h1: {address: 127.0.0.1, username: u, password: p}\n", encoding="utf-8")
        proc, took = _run_limited(["-i", str(inv), "--state", str(tmp_path / "s"), "plan", "--packages", str(pkgs),
                                   "-o", str(tmp_path / "plan.json")])
        assert proc.returncode == 2 and took < 15, proc.stderr
        assert b"manifest.yaml" in proc.stderr and b"internal error" not in proc.stderr
        assert not (tmp_path / "plan.json").exists()


def test_alias_bomb_in_lab_fixture_is_refused() -> None:
    with pytest.raises(FixtureError) as e:
        load_host_fixture_text(bomb(key="x") + "hosts: []\n", "bomb.yaml")
    assert "alias" in str(e.value)


def test_deep_inventory_nesting_is_an_inventory_error(tmp_path: Path) -> None:
    inv = tmp_path / "deep.yml"
    inv.write_text("all:\n  vars:\n    x: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(InventoryError) as e:
        load_inventory([inv])
    assert "nesting" in str(e.value) and "deep.yml" in str(e.value)


def test_200k_hosts_in_one_ini_group_load_in_seconds(tmp_path: Path) -> None:
    """Finding 8: add_host searched a list per host (40k: 17.5 s, 200k: > 300 s). The figure for
    200,000 lives in benchmarks/inventory_load.py; here 200,000 must load well inside a minute."""
    inv = tmp_path / "big.ini"
    inv.write_text("[big]\nh[1:200000] ansible_connection=winrm ansible_user=svc\n", encoding="utf-8")
    started = time.process_time()
    hosts = load_inventory([inv], env={"KBFIX_PASSWORD": "test-only"}).select("big")
    took = time.process_time() - started
    assert len(hosts) == 200_000
    assert took < 60, f"{took:.1f} s CPU"


@pytest.mark.parametrize("name", ["../outside.exe", "/etc/passwd", "sub/../../outside.exe", "C:\\Windows\\x.exe",
                                  "link.exe", "linkdir/outside.exe"])
def test_manifest_files_must_stay_inside_the_packages_folder(tmp_path: Path, name: str) -> None:
    """Finding 9: `../../../../etc/passwd` with its SHA-256 was uploaded and run."""
    outside = tmp_path / "outside.exe"
    outside.write_bytes(b"not a package\n")
    pkgs = tmp_path / "pkgs"
    (pkgs / "sub").mkdir(parents=True)
    os.symlink(outside, pkgs / "link.exe")
    os.symlink(tmp_path, pkgs / "linkdir")
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    (pkgs / "manifest.yaml").write_text(f"packages:\n  - kb: KB954960\n    file: '{name}'\n    sha256: {digest}\n",
                                        encoding="utf-8")
    with pytest.raises(ManifestError) as e:
        load_packages(pkgs)
    assert e.value.field == "file" and e.value.line == 3
    assert "inside the packages folder" in str(e.value)


def test_a_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    (pkgs / "real.exe").write_bytes(b"pkg\n")
    os.symlink(pkgs / "real.exe", pkgs / "alias.exe")
    digest = hashlib.sha256(b"pkg\n").hexdigest()
    (pkgs / "manifest.yaml").write_text(f"packages:\n  - kb: KB954960\n    file: alias.exe\n    sha256: {digest}\n",
                                        encoding="utf-8")
    assert load_packages(pkgs).packages[0].file == "alias.exe"


def test_non_utf8_and_oversized_plans_exit_2(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("kbfix_inventory: 1\nhosts:\n  h1: {address: 127.0.0.1, username: u, password: p}\n", encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"kbfix_plan": "\xff\xfe"}')
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(65 * 1024 * 1024)  # sparse: 65 MiB of NULs
    for plan, reason in ((bad, b"not UTF-8"), (big, b"larger than")):
        proc, took = _run_limited(["-i", str(inv), "--state", str(tmp_path / "s"), "apply", "--plan", str(plan), "--yes"],
                                  mem_mb=1024)
        assert proc.returncode == 2, proc.stderr
        assert str(plan).encode() in proc.stderr and reason in proc.stderr
        assert took < 15


def test_inventory_digest_does_not_depend_on_how_the_path_is_spelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 12: `-i inv.yaml` and `-i /abs/inv.yaml` gave different digests (false "inventory changed")."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("site: HQ\n", encoding="utf-8")
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    h1: {ansible_host: 10.0.0.1, ansible_user: u, ansible_password: p}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    spellings = [Path("inv.yml"), Path("./inv.yml"), inv, tmp_path / "group_vars" / ".." / "inv.yml"]
    digests = {load_inventory([p]).digest for p in spellings}
    assert len(digests) == 1
    (tmp_path / "group_vars" / "all.yml").write_text("site: DK\n", encoding="utf-8")
    assert load_inventory([inv]).digest not in digests  # content still counts


def test_inventory_text_never_reaches_the_terminal_raw(tmp_path: Path) -> None:
    """Finding 4 (inventory side): a site name with an OSC title change and Rich markup."""
    inv = tmp_path / "inv.yml"
    inv.write_text('kbfix_inventory: 1\nhosts:\n  h1: {address: 127.0.0.1, username: u, password: p,'
                   ' site: "HQ\\e]0;pwned\\a[bold]x[/bold]"}\n', encoding="utf-8")
    for args in (["inventory", "list"], ["inventory", "check"]):
        out = subprocess.run([str(KBFIX), "-i", str(inv), *args], capture_output=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert b"\x1b" not in out.stdout and b"\x07" not in out.stdout
        assert b"HQ\\x1b]0;pwned\\x07[bold]x[/bold]" in out.stdout.replace(b"\n", b"")
