"""The real WindowsUpdate.log samples in ../shared/realdata/windowsupdate, classified by the
KB954960 client rules (see that folder's SOURCES.md for each file's origin).

Each sample is served as `%windir%\\WindowsUpdate.log` of a WSUS client that HAS Office 2003,
so only the log decides. None of the samples shows the KB954960 client signature:
- win7_wua_7.6_healthy: a healthy Windows 7 client, no PT sync, `WSUS server: <NULL>` → no evidence;
- win7_wua_7.6_service_restarts: the same machine, service restarts only → no evidence;
- win2008r2_wsus_search_applicability_errors: a 2008 R2 WSUS client of the 8024400E era
  (`PT: Synchronizing server updates`, then 0x80070057 handler errors) → does not by itself match:
  no `SyncUpdates failure, error = 0x8024400E` and no SOAP fault lines;
- win2008r2_cbs_install_0x800736b3: a CBS install failure → no evidence;
- win2008_download_0x8024402C_tabs_collapsed: a download failure, TABs collapsed → no evidence.
A positive case appends the KB954960 article's client lines, in the real file's TAB format, to
the healthy log: then the client is affected.
"""

from __future__ import annotations

import pytest

from playbooks import HostContext, assess, gather_ops, load_playbooks
from playbooks.model import Status
from tests.playbooks.labhost import LabHostSpec

O2K3 = {"name": "Microsoft Office Professional Edition 2003", "product_code": "{90110409-6000-11D3-8CFE-0150048383C9}"}
POLICY = {"HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate": {"WUServer": "http://wswsus02:80"}}
SAMPLES = {
    "win7_wua_7.6_healthy_rkudache31.log": 0,
    "win7_wua_7.6_service_restarts_rkudache31.log": 0,
    "win2008r2_wsus_search_applicability_errors_trentent.log": 0,
    "win2008r2_cbs_install_0x800736b3_trentent.log": 0,
    "win2008_download_0x8024402C_tabs_collapsed_trentent.log": 0,
}


def _client(log: bytes) -> LabHostSpec:
    return LabHostSpec(arch="x64", registry=dict(POLICY), products=[dict(O2K3)], logs={"C:\\WINDOWS\\WindowsUpdate.log": log})


def _assess(log: bytes):
    books = load_playbooks(["KB954960"])
    ctx = HostContext("CLIENT")
    return assess(books, ctx, _client(log).respond(gather_ops(books, ctx)))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_real_samples_show_no_kb954960_client_signature(realdata, name):
    a = _assess((realdata / "windowsupdate" / name).read_bytes())
    f = a.finding("KB954960")
    assert {"wsus_client", "office2003"} <= set(a.roles)
    assert f.status == Status.NOT_APPLICABLE, f.reason
    wulog = a.facts["kb954960_wulog"]
    assert wulog["exists"] and wulog["hits"]["sync_failure_8024400e"] == 0


def test_2008r2_8024400e_era_log_has_the_sync_but_not_the_signature(realdata):
    data = (realdata / "windowsupdate" / "win2008r2_wsus_search_applicability_errors_trentent.log").read_bytes()
    assert b"PT: Synchronizing server updates" in data and b"0x80070057" in data
    a = _assess(data)
    assert a.finding("KB954960").status == Status.NOT_APPLICABLE
    assert sum(a.facts["kb954960_wulog"]["hits"].values()) == 0


def test_healthy_log_plus_article_lines_is_affected(realdata):
    data = (realdata / "windowsupdate" / "win7_wua_7.6_healthy_rkudache31.log").read_bytes()
    extra = (
        b"2021-08-28\t03:10:00:100\t 648\t13bc\tPT\tWARNING: SyncUpdates failure, error = 0x8024400E, soap client error = 7, "
        b"soap error code = 400, HTTP status code = 200\r\n"
        b"2021-08-28\t03:10:00:100\t 648\t13bc\tPT\tWARNING: SOAP Fault: 0x000190\r\n"
        b"2021-08-28\t03:10:00:100\t 648\t13bc\tPT\tWARNING:     ErrorCode:InternalServerError(5)\r\n"
    )
    a = _assess(data + extra)
    f = a.finding("KB954960")
    assert (f.status, f.variant) == (Status.NON_COMPLIANT, "client")
    ev = next(e for e in f.evidence if e.probe.startswith("log.scan"))
    first = next(ln for ln in ev.lines if "SyncUpdates failure" in ln.text)
    assert first.offset == len(data)  # byte offset of the appended line in the real file
    assert first.text.split("\t")[4] == "PT"  # TAB-separated: date, time, PID, TID, component, text
