"""Offline collection (issue 17): export → lab-produced answers → `check --answers` gives the same
statuses as an online check of the demo site; tampered, stale, foreign and outdated answers are
refused with their reason; the exported script passes the agent's PowerShell 2.0 checks."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.offline.answers import AnswerRefused, parse_answer, verify_answer
from kbfix.offline.keystore import load_export
from kbfix.offline.script import TEMPLATE_PATH
from tests.helpers import unreachable_inventory
from tests.test_agent_ps1_syntax import problems
from winlab.fixtures import demo_site
from winlab.lab import Lab
from winlab.offline import ScriptError, answer_script, answer_scripts

OFFLINE_ONLY = {"WSUS-DOWN", "WSUS-LOCKED"}  # WinRM cannot reach them: offline is their only way in


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _statuses(output: str) -> dict[str, str]:
    doc = json.loads(output)
    return {h["name"]: h["status"] for h in doc["hosts"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One demo lab: the online statuses, an export and the lab's answers to it."""
    tmp = tmp_path_factory.mktemp("offline")
    hosts = demo_site()
    with Lab(hosts, https=True, workdir=tmp / "lab") as lab:
        inv = str(lab.write_inventory(tmp / "inv.yaml"))
        state = str(tmp / "state")
        online = _cli("-i", inv, "--state", state, "-q", "check", "--format", "json")
        assert online.exit_code == 4, online.output
        exported = _cli("-i", inv, "--state", state, "offline", "export", "-o", str(tmp / "off"))
        assert exported.exit_code == 0, exported.output
    scripts = sorted((tmp / "off").glob("*.kbfix-offline.ps1"))
    answer_scripts(scripts, demo_site(), tmp / "answers")
    return {"tmp": tmp, "inv": inv, "state": state, "online": _statuses(online.stdout), "scripts": scripts}


def test_offline_check_gives_the_online_statuses(site: dict[str, Any]) -> None:
    res = _cli("-i", site["inv"], "--state", site["state"], "-q", "check", "--answers", str(site["tmp"] / "answers"),
               "--format", "json")
    offline = _statuses(res.stdout)
    online = site["online"]
    assert set(offline) == set(online)
    for host in set(online) - OFFLINE_ONLY:
        assert offline[host] == online[host], host
    # The hosts WinRM cannot reach are assessed offline.
    assert online["WSUS-DOWN"] == "unreachable" and online["WSUS-LOCKED"] in ("failed", "unreachable")
    for host in OFFLINE_ONLY:
        assert offline[host] not in ("unreachable", "failed"), host


def test_offline_collection_is_recorded_with_its_mode(site: dict[str, Any]) -> None:
    res = _cli("-i", site["inv"], "--state", site["state"], "-q", "--limit", "WSUS-SP1,CM07-OK", "check",
               "--answers", str(site["tmp"] / "answers"))
    assert res.exit_code == 3, res.output  # WSUS-SP1 non-compliant, CM07-OK compliant
    shown = _cli("--state", site["state"], "show", "latest", "--format", "json")
    doc = json.loads(shown.stdout)
    assert doc["run"]["options"]["collection"] == "offline"
    wsus = next(h for h in doc["hosts"] if h["host"] == "WSUS-SP1")
    notes = [e["note"] for f in wsus["findings"] for e in f["evidence"]]
    assert notes and all("collected offline: WSUS-SP1.kbfix-answer.txt, computer WSUS-SP1" in n for n in notes)


def test_exported_script_is_powershell_2_and_read_only(site: dict[str, Any]) -> None:
    assert problems(TEMPLATE_PATH.read_bytes()) == []
    script = site["scripts"][0]
    data = script.read_bytes()
    data.decode("ascii")
    assert problems(data) == []
    text = data.decode("ascii")
    nonce = re.search(r"\$kbfixNonce = '([0-9a-f]{32})'", text).group(1)  # type: ignore[union-attr]
    record = load_export(Path(site["state"]), nonce)
    assert record is not None
    from remoting.agent_protocol import decode_request

    request = decode_request(next(iter(record.hosts.values())).request)
    assert request.ops and not request.mutating and request.nonce == nonce


def _copy_answers(site: dict[str, Any], name: str) -> Path:
    dst = site["tmp"] / name
    dst.mkdir()
    for p in (site["tmp"] / "answers").iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _refusal(site: dict[str, Any], answers: Path, host: str) -> str:
    res = _cli("-i", site["inv"], "--state", site["state"], "-q", "--limit", host, "check", "--answers", str(answers),
               "--format", "json")
    assert res.exit_code == 4, res.output
    h = json.loads(res.stdout)["hosts"][0]
    assert h["status"] == "failed"
    return str(h["error"]["message"])


def test_tampered_answer_is_refused(site: dict[str, Any]) -> None:
    answers = _copy_answers(site, "tampered")
    path = answers / "WSUS-SP1.kbfix-answer.txt"
    text = path.read_text(encoding="ascii")
    stdout = re.search(r"^stdout\t(.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    flipped = stdout[:100] + ("A" if stdout[100] != "A" else "B") + stdout[101:]
    path.write_text(text.replace(stdout, flipped), encoding="ascii")
    assert "refused (tampered)" in _refusal(site, answers, "WSUS-SP1")


def test_script_run_on_the_wrong_server_collects_nothing(site: dict[str, Any]) -> None:
    answers = site["tmp"] / "wrong-server"
    script = next(s for s in site["scripts"] if s.name.startswith("WSUS-SP1."))
    with pytest.raises(ScriptError, match=r"for computer WSUS-SP1 .* not WSUS-RTM"):
        answer_scripts([script], demo_site(), answers, on="WSUS-RTM")
    assert not list(answers.glob("*.kbfix-answer.txt"))
    res = _cli("lab", "answer", str(script), "--on", "WSUS-RTM", "-o", str(answers))
    assert res.exit_code == 2 and "run it on WSUS-SP1" in res.output


def test_answer_of_another_controller_is_refused(site: dict[str, Any]) -> None:
    other_state = site["tmp"] / "other-state"
    out = site["tmp"] / "other-off"
    res = _cli("-i", site["inv"], "--state", str(other_state), "--limit", "WSUS-SP1", "offline", "export", "-o", str(out))
    assert res.exit_code == 0, res.output
    answers = site["tmp"] / "other-answers"
    answer_scripts(sorted(out.glob("*.ps1")), demo_site(), answers)
    message = _refusal(site, answers, "WSUS-SP1")
    assert "refused (foreign)" in message and "not made by this controller" in message


def test_stale_answers_are_refused(site: dict[str, Any]) -> None:
    script = next(s for s in site["scripts"] if s.name.startswith("WSUS-RTM."))
    host = next(h for h in demo_site() if h.name == "WSUS-RTM")
    # Collected before the export existed (a server clock years off, or an old answer re-labelled).
    answers = site["tmp"] / "old"
    answers.mkdir()
    name, text = answer_script(script.read_text(encoding="ascii"), host, collected=datetime(2020, 1, 1, tzinfo=timezone.utc))
    (answers / name).write_text(text, encoding="ascii")
    assert "refused (stale)" in _refusal(site, answers, "WSUS-RTM")
    # Collected in time but read 8 days later: older than the 7-day limit.
    name, text = answer_script(script.read_text(encoding="ascii"), host)
    (answers / name).write_text(text, encoding="ascii")
    later = datetime.now(timezone.utc) + timedelta(days=8)
    with pytest.raises(AnswerRefused) as err:
        verify_answer(parse_answer(answers / name), Path(site["state"]), expected_host="WSUS-RTM", now=later)
    assert err.value.reason == "stale" and "older than 7 days" in str(err.value)
    verified = verify_answer(parse_answer(answers / name), Path(site["state"]), expected_host="WSUS-RTM")
    assert verified.computer == "WSUS-RTM"


def test_answer_of_another_format_version_is_refused(site: dict[str, Any]) -> None:
    answers = _copy_answers(site, "v2")
    path = answers / "CM07-SITE.kbfix-answer.txt"
    path.write_text(path.read_text(encoding="ascii").replace("kbfix-offline-answer\t1", "kbfix-offline-answer\t2", 1),
                    encoding="ascii")
    assert "refused (version)" in _refusal(site, answers, "CM07-SITE")


def test_host_without_answer_is_unreachable_with_the_reason(site: dict[str, Any], tmp_path: Path) -> None:
    res = _cli("-i", site["inv"], "--state", site["state"], "-q", "--limit", "WSUS-SP1", "check", "--answers",
               str(tmp_path), "--format", "json")
    h = json.loads(res.stdout)["hosts"][0]
    assert h["status"] == "unreachable" and "WSUS-SP1.kbfix-answer.txt" in h["error"]["message"]


def test_missing_answers_folder_is_a_usage_error(site: dict[str, Any], tmp_path: Path) -> None:
    res = _cli("-i", site["inv"], "--state", site["state"], "check", "--answers", str(tmp_path / "nope"))
    assert res.exit_code == 2 and "no such folder" in res.output


def test_lab_refuses_a_script_whose_agent_was_changed(site: dict[str, Any]) -> None:
    text = next(s for s in site["scripts"] if s.name.startswith("WSUS-SP1.")).read_text(encoding="ascii")
    start = text.index("$kbfixAgentB64 = @'\n") + len("$kbfixAgentB64 = @'\n")
    changed = text[:start] + ("QUFB" if text[start:start + 4] != "QUFB" else "QkJC") + text[start + 4:]
    with pytest.raises(ScriptError, match="not the shipped"):
        answer_script(changed, demo_site()[0])


def test_export_refuses_a_host_name_that_could_become_code(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from kbfix.offline.export import export_scripts
    from kbfix.run.playbook_engine import PlaybookEngine

    bad = SimpleNamespace(name="x';Remove-Item C:\\ -Recurse;'", vars={})
    with pytest.raises(ValueError, match="cannot be embedded"):
        export_scripts([bad], PlaybookEngine(), tmp_path / "st", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "st").exists()


def test_cli_lab_answer_writes_answer_files(site: dict[str, Any], tmp_path: Path) -> None:
    res = _cli("lab", "answer", str(site["tmp"] / "off"), "-o", str(tmp_path / "a"))
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "a").glob("*.kbfix-answer.txt"))) == len(site["scripts"])


def test_offline_check_needs_no_connection_and_no_credentials(site: dict[str, Any], tmp_path: Path) -> None:
    # The DMZ case: the inventory knows the hosts but nothing listens (port 9 on loopback) and no
    # credentials are configured; the answers alone give the online statuses.
    inv = unreachable_inventory(tmp_path / "dmz.yaml", ["WSUS-SP1", "CM07-OK"], credentials=False)
    res = _cli("-i", str(inv), "--state", site["state"], "-q", "check", "--answers", str(site["tmp"] / "answers"),
               "--format", "json")
    assert _statuses(res.stdout) == {"WSUS-SP1": site["online"]["WSUS-SP1"], "CM07-OK": site["online"]["CM07-OK"]}
    assert "WSUS-RTM.kbfix-answer.txt: host WSUS-RTM is not selected" in res.stderr
    # Exporting for such hosts needs no credentials either.
    out = _cli("-i", str(inv), "--state", str(tmp_path / "st"), "offline", "export", "-o", str(tmp_path / "off"))
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == ["CM07-OK.kbfix-offline.ps1", "WSUS-SP1.kbfix-offline.ps1"]


def test_a_script_edited_to_mutate_refuses_to_run(site: dict[str, Any]) -> None:
    import base64

    from remoting.agent_protocol import AgentRequest, encode_request, op

    text = next(s for s in site["scripts"] if s.name.startswith("WSUS-SP1.")).read_text(encoding="ascii")
    nonce = re.search(r"\$kbfixNonce = '([0-9a-f]{32})'", text).group(1)  # type: ignore[union-attr]
    evil = encode_request(AgentRequest((op("1", "service.restart", name="WsusService"),), nonce=nonce))
    edited = re.sub(r"\$kbfixRequestB64 = '[^']*'", f"$kbfixRequestB64 = '{base64.b64encode(evil).decode()}'", text)
    host = demo_site()[0]
    with pytest.raises(ScriptError, match=r"service\.restart, which is not read-only"):
        answer_script(edited, host)
    assert not host.records.mutations
    assert "'service.restart'" not in text and "'log.scan'" in text  # the embedded read-op list
