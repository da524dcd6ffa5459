"""The WinRM configuration resource, read-only: WS-Transfer Get on
`http://schemas.microsoft.com/wbem/wsman/1/config` (what `winrm get winrm/config` reads), for
`kbfix doctor`'s quota step (issue 17).

Windows answers a Get with the `cfg:Config` element of [MS-WSMV] 2.2.4.10 ConfigType (example in
[MS-WSMV] 4.2.1 "Retrieving Configuration"): MaxEnvelopeSizekb, MaxTimeoutms, MaxBatchItems,
MaxProviderRequests, then Client, Service and Winrs ([MS-WSMV] 2.2.4.42 WinrsType: IdleTimeout,
MaxShellsPerUser, MaxMemoryPerShellMB, ...). The configuration is readable by administrators
only (the default RootSDDL `O:NSG:BAD:P(A;;GA;;;BA)...` grants Generic All to BUILTIN\\Administrators,
[MS-WSMV] 4.2.1), so a logon without an administrator token (UAC remote restrictions, KB951016)
gets w:AccessDenied. Put and every other action on the resource answer a:ActionNotSupported:
the lab's configuration is the fixture's, read-only.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from winlab import soap
from winlab.emulate_environment import token_elevated, winrm_config
from winlab.hostapi import LabHost

CONFIG_URI = "http://schemas.microsoft.com/wbem/wsman/1/config"
GET_ACTION = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
GET_RESPONSE_ACTION = "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse"
#: WinRM 2.0 MaxTimeoutms default, as winlab.wsman uses it.
MAX_TIMEOUT_MS = 60000


def is_config_request(resource_uri: str) -> bool:
    """True for the config resource or one of its sub-resources (`…/config/winrs`)."""
    low = resource_uri.strip().lower()
    return low == CONFIG_URI or low.startswith(CONFIG_URI + "/")


def handle(host: LabHost, req: soap.WsmanRequest) -> tuple[int, bytes]:
    """(HTTP status, envelope) for a request on the config resource. Raises soap.SoapFault."""
    if req.action_uri != GET_ACTION:
        raise soap.fault_action_not_supported(req.action_uri)
    state = getattr(host, "state", None)
    if state is not None and not token_elevated(state):
        raise soap.fault_access_denied()
    cfg = winrm_config(state, host.max_envelope_kb, host.max_shells_per_user, host.idle_timeout_s) if state else {
        "MaxEnvelopeSizekb": host.max_envelope_kb, "MaxShellsPerUser": host.max_shells_per_user,
        "MaxMemoryPerShellMB": 150, "IdleTimeout": int(host.idle_timeout_s * 1000)}

    def el(name: str, value: object) -> str:
        return f"<cfg:{name}>{escape(str(value))}</cfg:{name}>"

    winrs = (el("AllowRemoteShellAccess", "true") + el("IdleTimeout", cfg["IdleTimeout"])
             + el("MaxConcurrentUsers", 10) + el("MaxShellRunTime", 28800000) + el("MaxProcessesPerShell", 15)
             + el("MaxMemoryPerShellMB", cfg["MaxMemoryPerShellMB"]) + el("MaxShellsPerUser", cfg["MaxShellsPerUser"]))
    body = (f'<cfg:Config xmlns:cfg="{CONFIG_URI}">' + el("MaxEnvelopeSizekb", cfg["MaxEnvelopeSizekb"])
            + el("MaxTimeoutms", MAX_TIMEOUT_MS) + el("MaxBatchItems", 32000) + el("MaxProviderRequests", 4294967295)
            + "<cfg:Client/><cfg:Service/>" + f"<cfg:Winrs>{winrs}</cfg:Winrs></cfg:Config>")
    return 200, soap.envelope(GET_RESPONSE_ACTION, req.message_id, body)
