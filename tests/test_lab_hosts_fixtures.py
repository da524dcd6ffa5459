"""Host fixtures: the demo site, validation errors with file/line/field, encodings, clones."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from remoting.agent_protocol import AgentRequest, op
from winlab.fixtures import (
    DEMO_SITE,
    FIXTURES_DIR,
    FixtureError,
    clone_site,
    demo_site,
    load_fixtures,
    load_host_fixture_text,
)
from winlab.host import run_agent_request
from winlab.hoststate import norm_key, norm_path, wow64_key


def test_demo_site_covers_the_design_cases() -> None:
    hosts = {h.name: h for h in demo_site()}
    assert {"WSUS-SP1", "WSUS-SP1-OK", "WSUS-RTM", "CM07-SITE", "CM07-OK", "OFFICE-CL01", "HEALTHY-CL02",
            "WSUS-DK", "WSUS-DE", "WSUS-NL", "WSUS-CN", "WSUS-DOWN", "WSUS-LOCKED"} <= set(hosts)
    assert hosts["WSUS-DOWN"].faults.connect == "refused" and hosts["WSUS-LOCKED"].faults.auth == "reject"
    assert all(h.accounts == {"LAB\\kbfix": "Secret-1"} for h in hosts.values())
    assert {h.state.os.culture for h in hosts.values()} >= {"en-US", "da-DK", "de-DE", "nl-NL", "zh-CN"}
    assert {h.site for h in hosts.values()} == {"HQ", "BRANCH"}
    dll = r"C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll"
    assert hosts["WSUS-SP1"].state.get_file(dll).version == "3.1.6001.65"  # type: ignore[union-attr]
    assert hosts["WSUS-SP1-OK"].state.get_file(dll).version == "3.1.6001.66"  # type: ignore[union-attr]
    de_log = hosts["WSUS-DE"].state.get_file(r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log")
    with de_log.data().open() as f:  # type: ignore[union-attr]
        assert f.read(2) == b"\xff\xfe"
    assert hosts["WSUS-DE"].max_envelope_kb == 500 and hosts["WSUS-DE"].max_shells_per_user == 30
    assert hosts["WSUS-DE"].idle_timeout_s == 7200


def test_state_is_per_host_and_fresh_per_load() -> None:
    a, b = demo_site()[0], demo_site()[0]
    a.state.set_value(r"HKLM\SOFTWARE\X", "v", 1)
    assert b.state.get_key(r"HKLM\SOFTWARE\X") is None


def test_paths_and_keys_are_case_insensitive() -> None:
    host = load_host_fixture_text(
        "hosts:\n- name: C\n  registry:\n    'HKEY_LOCAL_MACHINE\\Software\\Vendor':\n      Name: a\n"
        "    'hklm\\SOFTWARE\\VENDOR':\n      Other: 2\n  files:\n    'c:/Program Files//App/a.DLL': {version: 1.2.3.4}\n"
    )[0]
    key = host.state.get_key(r"HKLM\software\vendor")
    assert key is not None and set(key.values) == {"name", "other"}
    assert host.state.get_file(r"C:\PROGRAM FILES\app\A.dll").version == "1.2.3.4"  # type: ignore[union-attr]
    assert norm_key("HKLM:\\a\\\\b\\") == "HKLM\\a\\b" and norm_path("c:/x//y/") == "c:\\x\\y"
    assert wow64_key(r"HKLM\SOFTWARE\A") == r"HKLM\SOFTWARE\Wow6432Node\A"
    assert wow64_key(r"HKLM\SYSTEM\A") == r"HKLM\SYSTEM\A"


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("hosts:\n- name: A\n  os: {arch: arm}\n", 3, "hosts[0].os.arch", "x86"),
        ("hosts:\n- name: A\n  registry:\n    'HKLM\\S':\n      V: 1.5\n", 5, "hosts[0].registry.HKLM\\S.V", "allowed forms"),
        ("hosts:\n- name: A\n- name: B\n  colour: red\n", 4, "hosts[1].colour", "Extra"),
        ("hosts:\n- name: A\n  files:\n    'C:\\a': {text: x, source: y}\n", 4, "hosts[0].files.C:\\a", "at most one"),
        ("hosts:\n- name: A\n  files:\n    'C:\\a': {text: 'ø', encoding: ansi}\n  os: {culture: zh-CN}\n", 4,
         "hosts[0].files.C:\\a.encoding", ""),
        ("hosts:\n- name: A\n  faults: {connect: maybe}\n", 3, "hosts[0].faults.connect", ""),
        ("hosts:\n- name: A\n- name: a\n", 3, "hosts[1].name", "duplicate"),
        ("hosts: [\n", 2, "", "YAML"),
    ],
)
def test_fixture_errors_name_file_line_field(text: str, line: int, field: str, words: str) -> None:
    with pytest.raises(FixtureError) as err:
        load_host_fixture_text(text, name="site.yaml")
    e = err.value
    assert e.source == "site.yaml" and e.line == line and e.field == field, str(e)
    assert str(e).startswith(f"site.yaml:{line}: ") and words in str(e)


def test_ansi_text_that_the_codepage_cannot_hold_is_an_error() -> None:
    # 'ø' is in cp1252 (da-DK) but not in cp936 (zh-CN)
    load_host_fixture_text("hosts:\n- name: A\n  os: {culture: da-DK}\n  files:\n    'C:\\a': {text: 'ø', encoding: ansi}\n")
    with pytest.raises(FixtureError, match="cannot be encoded"):
        load_host_fixture_text("hosts:\n- name: A\n  os: {culture: zh-CN}\n  files:\n    'C:\\a': {text: 'ø', encoding: ansi}\n")


@pytest.mark.parametrize(
    ("culture", "encoding", "expected"),
    [
        ("da-DK", "ansi", "tilføjet\r\n".encode("cp1252")),
        ("zh-CN", "ansi", "已添加项\r\n".encode("cp936")),
        ("en-US", "utf-16le", b"\xff\xfe" + "tilføjet\r\n".encode("utf-16-le")),
        ("en-US", "utf-8", "tilføjet\r\n".encode()),
        ("en-US", "utf-8-bom", b"\xef\xbb\xbf" + "tilføjet\r\n".encode()),
    ],
)
def test_text_encodings(culture: str, encoding: str, expected: bytes) -> None:
    word = "已添加项" if culture == "zh-CN" else "tilføjet"
    host = load_host_fixture_text(
        f"hosts:\n- name: E\n  os: {{culture: {culture}}}\n  files:\n    'C:\\l.log': {{text: \"{word}\\n\", encoding: {encoding}}}\n"
    )[0]
    with host.state.get_file(r"C:\l.log").data().open() as f:  # type: ignore[union-attr]
        assert f.read() == expected


def test_source_paths_relative_only(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("line one\nline two\n", encoding="utf-8")
    (tmp_path / "site.yaml").write_text(
        "hosts:\n- name: S\n  files:\n    'C:\\a.log': {source: logs/a.log, encoding: utf-16le}\n", encoding="utf-8")
    host = load_fixtures(tmp_path)[0]
    with host.state.get_file(r"C:\a.log").data().open() as f:  # type: ignore[union-attr]
        assert f.read() == b"\xff\xfe" + "line one\r\nline two\r\n".encode("utf-16-le")
    (tmp_path / "abs.yaml").write_text(
        f"hosts:\n- name: T\n  files:\n    'C:\\a.log': {{source: '{tmp_path / 'logs' / 'a.log'}'}}\n", encoding="utf-8")
    with pytest.raises(FixtureError, match="relative") as err:
        load_fixtures(tmp_path)
    assert err.value.line == 4 and err.value.source.endswith("abs.yaml")
    (tmp_path / "abs.yaml").write_text("hosts:\n- name: S\n", encoding="utf-8")
    with pytest.raises(FixtureError, match="more than one file"):
        load_fixtures(tmp_path)
    with pytest.raises(FixtureError, match="not found"):
        load_fixtures(tmp_path / "nope.yaml")


def test_real_sample_via_explicit_relative_path(realdata: Path, tmp_path: Path) -> None:
    fixture_dir = DEMO_SITE.parent
    real_file = realdata / "windowsupdate" / "win7_wua_7.6_healthy_rkudache31.log"
    rel = Path(os.path.relpath(real_file, fixture_dir))
    assert rel.parts[0] == ".."  # the fixture names a file outside its folder by a relative path
    host = load_host_fixture_text(
        f"hosts:\n- name: R\n  files:\n    'C:\\Windows\\WindowsUpdate.log': {{source: '{rel.as_posix()}', encoding: raw}}\n",
        base_dir=fixture_dir)[0]
    real = (realdata / "windowsupdate" / "win7_wua_7.6_healthy_rkudache31.log").read_bytes()
    with host.state.get_file(r"C:\Windows\WindowsUpdate.log").data().open() as f:  # type: ignore[union-attr]
        assert f.read() == real


def test_clone_1000_hosts_fast_and_small() -> None:
    base = demo_site()
    tracemalloc.start()
    started = time.monotonic()
    clones = clone_site(base, 1000)
    took = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(clones) == 1000 and clones[0].name == "WSUS-SP1-0001" and clones[999].name.endswith("-1000")
    assert len({c.name for c in clones}) == 1000
    assert took < 3.0, f"1000 clones took {took:.2f} s"
    assert peak < 60 << 20, f"1000 clones used {peak / 1e6:.0f} MB"
    a, b = clones[0], clones[len(base)]
    assert a.template is b.template and a.state is not b.state
    fa = a.state.get_file(r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log")
    fb = b.state.get_file(r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log")
    assert fa is not None and fb is not None and fa.content is fb.content  # log bytes are shared
    a.state.set_service("WsusService", "Stopped")
    assert b.state.get_service("WsusService").status == "Running"  # type: ignore[union-attr]
    assert a.state.computer_name == "WSUS-SP1-0001"
    print(f"1000 clones: {took:.3f} s, {peak / 1e6:.1f} MB traced")


def test_extra_first_release_case_installs_without_fixing() -> None:
    host = load_fixtures(FIXTURES_DIR / "extra" / "kb954960-first-release.yaml")[0]
    host.time_scale = 0
    pkg = b"WSUS3.0SP1-KB954960-x64 (first release)"
    path = r"C:\Temp\WSUS3.0SP1-KB954960-x64.exe"
    dll = r"%ProgramFiles%\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll"
    _, resp = run_agent_request(host, AgentRequest((
        op("u", "file.upload", path=path, data=pkg),
        op("x", "installer.run", path=path, sha256=hashlib.sha256(pkg).hexdigest()),
        op("d", "file.info", path=dll),
    )))
    assert resp is not None
    r = resp.by_id()
    assert r["x"].data["outcome"] == "success" and r["d"].data["file_version"] == "3.1.6001.65"  # type: ignore[index]


def test_generated_log_lines_use_the_culture_codepage() -> None:
    host = load_host_fixture_text(
        "hosts:\n- name: G\n  os: {culture: zh-CN}\n  files:\n"
        "    'C:\\g.log': {generate: {size_mb: 1, seed: 3, matches: ['已添加项 x', 'second']}, encoding: ansi}\n")[0]
    fe = host.state.get_file(r"C:\g.log")
    assert fe is not None
    with fe.data().open() as f:
        data = f.read()
    assert (1 << 20) * 0.8 < len(data) < (1 << 20) * 1.2
    assert data.count("已添加项 x\r\n".encode("cp936")) == 1 and data.count(b"\r\nsecond\r\n") == 1
    assert data.index("已添加项".encode("cp936")) < data.index(b"\r\nsecond\r\n")  # in the given order
