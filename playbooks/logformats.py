"""Timestamps of the log formats the playbooks read, parsed to timezone-aware UTC.

- SMS/ConfigMgr trace (wsyncmgr.log): `text  $$<COMPONENT><MM-DD-YYYY HH:MM:SS.mmm+bias><thread=N (0xN)>`;
  bias is minutes and UTC = local + bias (the TIME_ZONE_INFORMATION Bias convention: a site
  at UTC+1 writes `-60`). Source: ConfigMgr 2007 log format, as CMTrace/Trace32 read it.
- WSUS SoftwareDistribution.log: `YYYY-MM-DD HH:MM:SS.mmm UTC<TAB>Level<TAB>process<TAB>component<TAB>text`
  (already UTC). Source: KB954960 article's server log excerpt.
- WindowsUpdate.log (client, pre-Windows 10): `YYYY-MM-DD<TAB>HH:MM:SS:mmm<TAB>PID<TAB>TID<TAB>component<TAB>text`
  in the client's *local* time without an offset: no UTC timestamp can be given, so
  `parse_timestamp` returns None and the line text keeps the local time. Source: the real
  samples in ../shared/realdata/windowsupdate (SOURCES.md).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_SMS_RE = re.compile(
    r"<(\d{2})-(\d{2})-(\d{4}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?([+-]\d{1,4})?><thread="
)
_SD_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?\s+UTC\b")

FORMATS = ("sms_trace", "wsus_softwaredistribution", "windowsupdate", "none")


def _ms(text: str | None) -> int:
    return int((text or "0").ljust(3, "0")) * 1000


def parse_timestamp(line: str, fmt: str) -> datetime | None:
    """The UTC time of one log line in format `fmt` (one of FORMATS), or None when the line
    carries none (continuation lines, local-time-only formats, malformed dates)."""
    try:
        if fmt == "sms_trace":
            m = _SMS_RE.search(line)
            if not m:
                return None
            mo, d, y, hh, mi, ss, ms, bias = m.groups()
            local = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss), _ms(ms))
            return (local + timedelta(minutes=int(bias or 0))).replace(tzinfo=timezone.utc)
        if fmt == "wsus_softwaredistribution":
            m = _SD_RE.match(line)
            if not m:
                return None
            y, mo, d, hh, mi, ss, ms = m.groups()
            return datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss), _ms(ms), tzinfo=timezone.utc)
    except ValueError:  # an impossible date such as 02-30: no timestamp rather than a crash
        return None
    return None
