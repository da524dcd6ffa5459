"""assess() over fact sets: every row of issue 6 (roles, KB954960 server/client, KB954474),
x64 Wow6432Node, localized and rotated logs, console-only WSUS, fixed hosts, missing logs.
Pure: AgentResponse values are built with the real codec types by tests/playbooks/labhost.py (the lab's agent emulator, no HTTP)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from playbooks import HostContext, assess, gather_ops, link_clients, load_playbooks
from playbooks.history import HostHistory
from playbooks.model import Status
from remoting.agent_protocol import OpError
from tests.playbooks.labhost import LabHostSpec
from winlab.hoststate import PatchSpec

WSUS_KEY = "HKLM\\SOFTWARE\\Microsoft\\Update Services\\Server\\Setup"
DLL = "C:\\Program Files\\Update Services\\WebServices\\ClientWebService\\bin\\Microsoft.UpdateServices.WebServices.Client.dll"
SDLOG = "C:\\Program Files\\Update Services\\LogFiles\\SoftwareDistribution.log"
SDLOG_SPACE = "C:\\Program Files\\Update Services\\Log Files\\SoftwareDistribution.log"
SMS_WOW = "HKLM\\SOFTWARE\\Wow6432Node\\Microsoft\\SMS\\Setup"
SMS_DIR = "C:\\Program Files (x86)\\Microsoft Configuration Manager"
WSYNC = SMS_DIR + "\\Logs\\wsyncmgr.log"
O2K3_CODE = "{90110409-6000-11D3-8CFE-0150048383C9}"

# SoftwareDistribution.log lines in the shape the KB954960 article prints (fields TAB-separated).
SD_EN = (
    "2008-07-10 14:01:02.123 UTC\tInfo\tw3wp.12\tClientImplementation.SyncUpdates\tstart\r\n"
    "2008-07-10 14:01:02.456 UTC\tError\tw3wp.12\tClientImplementation.SyncUpdates\tSystem.ArgumentException: "
    "Item has already been added. Key in dictionary: '8862'  Key being added: '8862'\r\n"
    "   at System.Collections.Hashtable.Insert(Object key, Object nvalue, Boolean add)\r\n"
    "   at Microsoft.UpdateServices.Internal.ClientImplementation.GetSyncInfo(...)\r\n"
    "2008-07-10 14:01:02.460 UTC\tError\tw3wp.12\tSoapUtilities.CreateException\tThrowException: actor = "
    "http://wsus01/ClientWebService/client.asmx, ID=0a1b, ErrorCode=InternalServerError, Message=, Client=?\r\n"
)
LOCALIZED = {
    "da-DK": "Elementet er allerede tilføjet. Nøgle i ordbog: '8862'  Nøgle, der tilføjes: '8862'",
    "de-DE": "Das Element wurde bereits hinzugefügt. Schlüssel im Wörterbuch: \"8862\"",
    "nl-NL": "Het item is al toegevoegd. Sleutel in woordenlijst: 8862",
    "zh-CN": "已添加项。字典中的关键字:“8862”所添加的关键字:“8862”",
}

WSYNC_BAD = (
    "Performing legacy sync  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:00:01.123+420><thread=3456 (0xD80)>\r\n"
    'STATMSG: ID=6709 SEV=I LEV=M SOURCE="SMS Server" COMP="SMS_WSUS_SYNC_MANAGER" SYS=CM01 SITE=P01 PID=1 TID=3456  '
    "$$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:00:01.200+420><thread=3456 (0xD80)>\r\n"
    f'Started with command line: "{SMS_DIR}\\bin\\i386\\updatewuscatalog.exe" /a  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:00:02.000+420><thread=3456 (0xD80)>\r\n'
    "Error 0x80004005, Unexpected DeploymentAction for update 1293995. Returned from CreateUpdateNode  "
    "$$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:03:04.500+420><thread=3456 (0xD80)>\r\n"
    "Updates summary: 0 processed, 0 matched, 0 outdated, 0 updated  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:03:05.000+420><thread=3456 (0xD80)>\r\n"
)
WSYNC_OK = "Done synchronizing SMS with WSUS Server wsus01  $$<SMS_WSUS_SYNC_MANAGER><07-11-2008 02:00:00.000+420><thread=3 (0x3)>\r\n"

WU_CLIENT_BAD = (
    "2008-07-10\t10:15:21:281\t 956\t6d8\tPT\t+++++++++++  PT: Synchronizing server updates  +++++++++++\r\n"
    "2008-07-10\t10:15:21:500\t 956\t6d8\tPT\tWARNING: SyncUpdates failure, error = 0x8024400E, soap client error = 7, "
    "soap error code = 400, HTTP status code = 200\r\n"
    "2008-07-10\t10:15:21:500\t 956\t6d8\tPT\tWARNING: SOAP Fault: 0x000190\r\n"
    "2008-07-10\t10:15:21:500\t 956\t6d8\tPT\tWARNING:     faultstring:Fault occurred\r\n"
    "2008-07-10\t10:15:21:500\t 956\t6d8\tPT\tWARNING:     ErrorCode:InternalServerError(5)\r\n"
    "2008-07-10\t10:15:21:500\t 956\t6d8\tPT\tWARNING: PTError: 0x8024400e\r\n"
)


@pytest.fixture(scope="module")
def books():
    return load_playbooks()


def wsus(version: str = "3.1.6001.65", dll: str | None = "3.1.6001.65", *, install_type: int = 1,
         log: str | None = SD_EN, log_path: str = SDLOG, target: str | None = "C:\\Program Files\\Update Services\\",
         **kw) -> LabHostSpec:
    setup = {"InstallType": install_type, "VersionString": version}
    if target is not None:
        setup["TargetDir"] = target
    h = LabHostSpec(registry={WSUS_KEY: setup}, **kw)
    if dll is not None:
        h.files[DLL] = dll
    if log is not None:
        h.logs[log_path] = log
    return h


def site(version: str = "4.00.6221.1000", *, hotfix: bool = False, log: str | None = WSYNC_BAD,
         rotated: str | None = None, arch: str = "x64") -> LabHostSpec:
    key = SMS_WOW if arch == "x64" else "HKLM\\SOFTWARE\\Microsoft\\SMS\\Setup"
    h = LabHostSpec(arch=arch, registry={key: {"Full Version": version, "Installation Directory": SMS_DIR}},
                    services={"SMS_SITE_COMPONENT_MANAGER": "Running", "SMS_EXECUTIVE": "Running"})
    if log is not None:
        h.logs[WSYNC] = log
    if rotated is not None:
        h.logs[WSYNC[:-4] + ".lo_"] = rotated
    if hotfix:  # an .msp hotfix: a Windows Installer patch registration (PatchesEx)
        h.patches.append(PatchSpec("{4C6A1A40-3C5B-4E0F-8D8B-1D0C2E3F4A51}", "{B2E4C6A8-1F3D-4B5A-9C7E-0D2F4A6B8C11}",
                                   "Hotfix for System Center Configuration Manager 2007 SP1 (KB954474)"))
    return h


def client(*, office: bool = True, log: str | None = WU_CLIENT_BAD, server: str = "http://wsus01:8530") -> LabHostSpec:
    h = LabHostSpec(arch="x86", registry={"HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate": {"WUServer": server}})
    if office:
        h.products.append({"name": "Microsoft Office Professional Edition 2003", "product_code": O2K3_CODE, "version": "11.0.5614.0"})
    if log is not None:
        h.logs["C:\\WINDOWS\\WindowsUpdate.log"] = log
    return h


def run(books, host: LabHostSpec, name: str = "H1", **ctx):
    c = HostContext(name, **ctx)
    return assess(books, c, host.respond(gather_ops(books, c)))


def test_gather_is_one_request_with_role_probes_first(books):
    ops = gather_ops(books, HostContext("x"))
    names = [o.id for o in ops]
    assert len(names) == len(set(names))
    assert names.index("wsus_setup") < names.index("kb954960_dll.0")
    assert all(not o.mutating for o in ops)
    paths = [o.text("path") for o in ops if o.name == "log.scan"]
    assert any("\\LogFiles\\" in p for p in paths) and any("\\Log Files\\" in p for p in paths)


def test_sp1_unpatched_with_english_log_is_non_compliant(books):
    a = run(books, wsus())
    assert "wsus_server" in a.roles
    f = a.finding("KB954960")
    assert f.status == Status.NON_COMPLIANT and f.variant == "sp1"
    assert "3.1.6001.65" in f.reason and "ArgumentException" in f.reason
    log_ev = next(e for e in f.evidence if e.probe.startswith("log.scan"))
    texts = [ln.text for ln in log_ev.lines]
    assert any("ClientImplementation.SyncUpdates\tSystem.ArgumentException" in t for t in texts)
    line = next(ln for ln in log_ev.lines if "ArgumentException" in ln.text)
    assert line.timestamp == datetime(2008, 7, 10, 14, 1, 2, 456000, tzinfo=timezone.utc)
    assert line.offset == len(SD_EN.split("\r\n")[0].encode()) + 2
    assert log_ev.rule == "KB954960:sp1-unfixed"
    assert a.finding("KB954474").status == Status.NOT_APPLICABLE


def test_sp1_patched_is_compliant_even_with_old_log_lines(books):
    f = run(books, wsus(dll="3.1.6001.66")).finding("KB954960")
    assert f.status == Status.COMPLIANT
    assert f.evidence[0].value == "3.1.6001.66"


def test_versions_compare_as_numbers_not_strings(books):
    # "3.1.6001.100" < "3.1.6001.66" as strings, but it is a later build
    assert run(books, wsus(dll="3.1.6001.100")).finding("KB954960").status == Status.COMPLIANT
    assert run(books, wsus(dll="3.1.6001.7")).finding("KB954960").status == Status.NON_COMPLIANT


def test_rtm_unpatched_and_mitigated(books):
    h = wsus("3.0.6000.374", "3.0.6000.374", wsus_api=True,
             wsus_updates=[{"id": "u-1", "title": "Office 2003 Service Pack 1", "declined": True, "approvals": []}])
    f = run(books, h).finding("KB954960")
    assert (f.status, f.variant) == (Status.NON_COMPLIANT, "rtm")
    assert "Upgrade to WSUS 3.0 SP1" in f.remedy
    # Decline removes every approval (IUpdate.Decline): an approval record after decline proves nothing
    h.wsus_updates[0]["approvals"] = [{"group": "All Computers", "action": "Install"}]
    assert run(books, h).finding("KB954960").status == Status.NON_COMPLIANT
    h.wsus_updates[0]["approvals"] = []
    # done = a successful wsus_workaround in the audit store; held = no server signature after it
    # (SD_EN's ArgumentException is at 2008-07-10 14:01 UTC)
    after = HostHistory.from_events([("wsus_workaround", "success", datetime(2008, 7, 11, tzinfo=timezone.utc))])
    f = run(books, h, history=after).finding("KB954960")
    assert f.status == Status.MITIGATED and "done by kbfix at 2008-07-11" in f.reason
    before = HostHistory.from_events([("wsus_workaround", "success", datetime(2008, 7, 9, tzinfo=timezone.utc))])
    f = run(books, h, history=before).finding("KB954960")
    assert f.status == Status.NON_COMPLIANT and "did not hold" in f.reason
    failed = HostHistory.from_events([("wsus_workaround", "failed", datetime(2008, 7, 11, tzinfo=timezone.utc))])
    assert run(books, h, history=failed).finding("KB954960").status == Status.NON_COMPLIANT
    # an operator may record the workaround by variable instead
    assert run(books, h, vars={"kb954960_workaround_applied": True}).finding("KB954960").status == Status.MITIGATED


def test_console_only_is_not_a_server(books):
    a = run(books, wsus(install_type=2, dll=None, log=None))
    assert "wsus_console" in a.roles and "wsus_server" not in a.roles
    f = a.finding("KB954960")
    assert f.status == Status.NOT_APPLICABLE and "console" in f.reason
    assert f.evidence[0].value == "InstallType=2"


@pytest.mark.parametrize("culture", sorted(LOCALIZED))
def test_localized_logs_match_on_tokens_and_name_the_language(books, culture):
    line = f"2008-07-10 14:01:02.456 UTC\tError\tw3wp.12\tClientImplementation.SyncUpdates\tSystem.ArgumentException: {LOCALIZED[culture]}\r\n"
    data = b"\xff\xfe" + line.encode("utf-16-le")  # WSUS writes UTF-16LE on some installs
    f = run(books, wsus(log=None, culture=culture, logs={SDLOG_SPACE: data})).finding("KB954960")
    assert f.status == Status.NON_COMPLIANT and "ArgumentException" in f.reason
    ev = next(e for e in f.evidence if e.probe.startswith("log.scan"))
    assert "Log Files" in ev.probe
    assert ev.lines[0].offset == 2  # after the BOM
    assert culture.split("-")[0] in (ev.note or "") or culture in (ev.note or "")


def test_localized_message_alone_is_not_the_signature(books):
    # only a translated text, no method/exception tokens: evidence is secondary, no log claim
    line = "2008-07-10 14:01:02.456 UTC\tError\tw3wp.12\tOther.Component\tElementet er allerede tilføjet.\r\n"
    f = run(books, wsus(log=line)).finding("KB954960")
    assert f.status == Status.NON_COMPLIANT and "ArgumentException" not in f.reason


def test_missing_log_files_still_decide_on_version(books):
    f = run(books, wsus(log=None)).finding("KB954960")
    assert f.status == Status.NON_COMPLIANT
    ev = next(e for e in f.evidence if e.probe.startswith("log.scan"))
    assert ev.value == "log not found" and ev.lines == []


def test_missing_targetdir_falls_back_to_programfiles(books):
    f = run(books, wsus(target=None)).finding("KB954960")
    assert f.status == Status.NON_COMPLIANT
    assert DLL.lower() in f.evidence[1].probe.lower()


def test_missing_dll_is_unknown_not_compliant(books):
    assert run(books, wsus(dll=None)).finding("KB954960").status == Status.UNKNOWN


def test_unreadable_role_key_is_unknown_not_not_applicable(books):
    books_ = books
    c = HostContext("H")
    resp = wsus().respond(gather_ops(books_, c), errors={"wsus_setup": OpError("access_denied", "denied", "0x80070005")})
    a = assess(books_, c, resp)
    assert a.finding("KB954960").status == Status.UNKNOWN
    assert "access_denied" in a.finding("KB954960").reason


def test_configmgr_sp1_x64_wow6432node_with_log(books):
    a = run(books, site())
    assert a.roles == ["configmgr_site_server"]
    f = a.finding("KB954474")
    assert (f.status, f.variant) == (Status.NON_COMPLIANT, "sp1")
    assert "Unexpected DeploymentAction" in f.reason
    assert "Wow6432Node" in f.evidence[0].probe
    log_ev = f.evidence[3]
    bad = next(ln for ln in log_ev.lines if "DeploymentAction" in ln.text)
    # SMS trace time 02:03:04.500 local, bias +420 minutes → 09:03:04.500 UTC
    assert bad.timestamp == datetime(2008, 7, 10, 9, 3, 4, 500000, tzinfo=timezone.utc)


def test_configmgr_rtm_x86_and_rotated_log(books):
    f = run(books, site("4.00.5931.0000", log="nothing interesting\r\n", rotated=WSYNC_BAD, arch="x86")).finding("KB954474")
    assert (f.status, f.variant) == (Status.NON_COMPLIANT, "rtm")
    files = {ln.file for ln in f.evidence[3].lines}
    assert files == {WSYNC[:-4] + ".lo_"}


def test_configmgr_patched_and_other_releases(books):
    assert run(books, site(hotfix=True)).finding("KB954474").status == Status.COMPLIANT
    f = run(books, site("4.00.6487.2000")).finding("KB954474")  # SP2: not this advisory
    assert f.status == Status.NOT_APPLICABLE
    f = run(books, site(log=None)).finding("KB954474")  # no log: SMS 2003 scope cannot be told
    assert f.status == Status.UNKNOWN and "not found" in f.reason
    f = run(books, site(log=None), vars={"kb954474_sms2003_clients": True}).finding("KB954474")
    assert f.status == Status.NON_COMPLIANT and "not found" in f.reason


def test_site_server_with_sup_gets_both_playbooks(books):
    h = site()
    h.registry.update(wsus().registry)
    h.files[DLL] = "3.1.6001.65"
    a = run(books, h)
    assert {"wsus_server", "configmgr_site_server"} <= set(a.roles)
    assert {f.advisory: f.status for f in a.findings} == {"KB954474": Status.NON_COMPLIANT, "KB954960": Status.NON_COMPLIANT}


def test_client_with_office2003_and_lines_is_affected_and_linked(books):
    c = run(books, client(), "PC01")
    f = c.finding("KB954960")
    assert (f.status, f.variant) == (Status.NON_COMPLIANT, "client")
    assert {"wsus_client", "office2003"} <= set(c.roles)
    assert "http://wsus01:8530" in f.reason
    srv = run(books, wsus(), "WSUS01")
    linked = link_clients({"PC01": c, "WSUS01": srv})
    lf = linked["PC01"].finding("KB954960")
    assert lf.linked_host == "WSUS01" and lf.status == Status.NON_COMPLIANT
    fixed = run(books, wsus(dll="3.1.6001.66"), "WSUS01")
    lf = link_clients({"PC01": c, "WSUS01": fixed})["PC01"].finding("KB954960")
    assert lf.status == Status.COMPLIANT and "next synchronization" in lf.reason
    alone = link_clients({"PC01": c})["PC01"].finding("KB954960")
    assert alone.status == Status.NON_COMPLIANT and any("not in this run" in n for n in alone.notes)


def test_client_without_office2003_or_without_soap_fault(books):
    assert run(books, client(office=False)).finding("KB954960").status == Status.NOT_APPLICABLE
    only_400e = "\r\n".join(WU_CLIENT_BAD.split("\r\n")[:2]) + "\r\n"
    f = run(books, client(log=only_400e)).finding("KB954960")
    assert f.status == Status.NOT_APPLICABLE and f.variant is None


def test_office2003_from_installroot_on_wow6432node(books):
    h = client(office=False)
    h.arch = "x64"
    h.registry["HKLM\\SOFTWARE\\Wow6432Node\\Microsoft\\Office\\11.0\\Common\\InstallRoot"] = {"Path": "C:\\Program Files (x86)\\Microsoft Office\\OFFICE11\\"}
    a = run(books, h)
    assert "office2003" in a.roles
    assert a.finding("KB954960").status == Status.NON_COMPLIANT


def test_declared_roles_win_and_digest_ignores_logs(books):
    a = run(books, wsus(), roles=("wsus_server",))
    assert a.roles_declared and a.roles == ["wsus_server"]
    b = run(books, wsus(log=SD_EN + SD_EN), roles=("wsus_server",))
    assert a.facts_digest == b.facts_digest
    c = run(books, wsus(dll="3.1.6001.66"), roles=("wsus_server",))
    assert c.facts_digest != a.facts_digest


def test_truncated_or_missing_answers_are_noted(books):
    c = HostContext("H")
    resp = wsus().respond(gather_ops(books, c), drop=["kb954960_dll.0", "kb954960_dll.1"])
    f = assess(books, c, resp).finding("KB954960")
    assert f.status == Status.UNKNOWN
