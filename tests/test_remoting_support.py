"""Helpers for the remoting lab tests: a WSUS + ConfigMgr host fixture, endpoints to lab hosts, and
the op list that gathers every fact the two playbooks read (KB954960, KB954474)."""

from __future__ import annotations

import dataclasses
from typing import Any

from remoting.agent_protocol import OpRequest, op
from remoting.endpoint import Endpoint, Secret, Timeouts
from winlab.fixtures import load_host_fixture_text
from winlab.host import EmulatedHost
from winlab.lab import Lab

ACCOUNT = "Administrator"
PASSWORD = "Pa55w0rd!"
FAST = Timeouts(connect=2.0, operation=3.0, read=6.0, command=20.0)

WSUS_LOG = r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log"
CLIENT_DLL = (r"C:\Program Files\Update Services\WebServices\ClientWebService\bin"
              r"\Microsoft.UpdateServices.WebServices.Client.Dll")

# One Danish WSUS 3.0 SP1 server that is also a ConfigMgr 2007 site server, with the KB954960
# server-side evidence (KB954960 text; localized line in Danish), a German and a Chinese line.
HOST_YAML = r"""
hosts:
  - name: {name}
    os: {{version: 5.2.3790, arch: x64, culture: da-DK}}
    accounts: {{Administrator: "Pa55w0rd!"}}
    registry:
      'HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup':
        TargetDir: 'C:\Program Files\Update Services\'
        VersionString: '3.1.6001.1'
      'HKLM\SOFTWARE\Microsoft\SMS\Setup':
        Installation Directory: 'C:\SMS'
    files:
      'C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.Dll':
        version: 3.1.6001.1
        text: "MZ stand-in"
      'C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log':
        encoding: utf-8
        text: |
          2008-07-10 09:14:03.214 UTC Info w3wp.12 ClientImplementation.SyncUpdates start
          2008-07-10 09:14:03.250 UTC Error w3wp.12 ClientImplementation.SyncUpdates System.ArgumentException: An item with the same key has already been added.
          2008-07-10 09:14:03.251 UTC Error w3wp.12 ClientImplementation.SyncUpdates System.ArgumentException: Der blev allerede tilføjet et element med den samme nøgle.
          2008-07-10 09:14:03.252 UTC Error w3wp.12 ClientImplementation.SyncUpdates System.ArgumentException: Ein Element mit dem gleichen Schlüssel wurde bereits hinzugefügt.
          2008-07-10 09:14:03.253 UTC Error w3wp.12 ClientImplementation.SyncUpdates System.ArgumentException: 已添加了具有相同键的项。
          2008-07-10 09:14:03.260 UTC Error w3wp.12 SoapUtilities.CreateException ThrowException: actor = http://wsus01/ClientWebService/client.asmx, ErrorCode=InternalServerError
      'C:\SMS\Logs\wsyncmgr.log':
        text: |
          Performing legacy sync  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 09:20:01.000-120><thread=2144 (0x860)>
          Error 0x80004005, Unexpected DeploymentAction for update 1293995. Returned from CreateUpdateNode  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 09:20:02.000-120><thread=2144 (0x860)>
    services:
      WsusService: Running
      W3SVC: Running
      SMS_EXECUTIVE: {{status: Running, start_mode: Auto}}
    products:
      - {{name: Microsoft Windows Server Update Services 3.0 SP1, version: 3.1.6001.65, code: '{{B0E0B2F3-0000-0000-0000-000000000001}}'}}
      - {{name: SMS or SCCM 2007 SP1, version: 4.00.6221.1000, view: '32'}}
    wsus_api: true
    wsus_updates:
      - {{id: 6f0a3bd4-0f0c-4a1a-9d8e-0d3c2b8c9e01, title: "Update for Windows Server Update Services 3.0 SP1 (KB954960)"}}
{extra}
"""


def make_hosts(name: str = "WSUS01", extra: str = "") -> list[EmulatedHost]:
    """One emulated host from HOST_YAML; `extra` is YAML appended to the host (e.g. `    faults: {...}`)."""
    return load_host_fixture_text(HOST_YAML.format(name=name, extra=extra), f"{name}.yaml")


def endpoint_for(lab: Lab, name: str, **overrides: Any) -> Endpoint:
    """An Endpoint to lab host `name`: Basic over the lab's scheme (allowed unencrypted over HTTP),
    the lab CA when HTTPS, short timeouts. `overrides` replace any Endpoint field."""
    le = lab.endpoints[name]
    ep = Endpoint(
        host=name,
        address=le.address,
        port=le.port,
        scheme=le.scheme,  # type: ignore[arg-type]
        transport="basic",
        username=ACCOUNT,
        password=Secret(PASSWORD),
        ca_trust_path=str(le.ca_path) if le.ca_path else None,
        allow_unencrypted=le.scheme == "http",
        timeouts=FAST,
    )
    return dataclasses.replace(ep, **overrides)


def gather_ops() -> list[OpRequest]:
    """Every probe the KB954960/KB954474 playbooks need for one host, as one request."""
    return [
        op("wsus", "registry.values", key=r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup", view="both"),
        op("sms", "registry.values", key=r"HKLM\SOFTWARE\Microsoft\SMS\Setup", name="Installation Directory"),
        op("dll", "file.info", path=r"${reg:wsus:TargetDir}WebServices\ClientWebService\bin"
                                    r"\Microsoft.UpdateServices.WebServices.Client.Dll", sha256=True),
        op("sdlog", "log.scan", path=r"${reg:wsus:TargetDir}LogFiles\SoftwareDistribution.log",
           pattern=[r"ClientImplementation\.SyncUpdates System\.ArgumentException", r"SoapUtilities\.CreateException"],
           context=1, max_matches=20, rotated=True, tail_bytes=8 * 1024 * 1024),
        op("wsync", "log.scan", path=r"${reg:sms:Installation Directory}\Logs\wsyncmgr.log",
           pattern=[r"Unexpected DeploymentAction for update", r"Performing legacy sync"], rotated=True),
        op("wulog", "log.scan", path=r"%windir%\WindowsUpdate.log", pattern=r"SyncUpdates failure.*0x8024400E"),
        op("prod", "products.list", pattern=["*Update Services*", "*SCCM*", "*Configuration Manager*", "*Office 2003*"]),
        op("svc", "service.status", name=["WsusService", "W3SVC", "SMS_EXECUTIVE", "wuauserv"]),
        op("upd", "wsus.find_update", title="Update for Windows Server Update Services 3.0 SP1 (KB954960)"),
        op("pf", "env.expand", text="%ProgramFiles%"),
    ]
