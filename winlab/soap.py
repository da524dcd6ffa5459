"""SOAP 1.2 / WS-Management envelopes for the lab server: parse requests safely, build responses and faults.

Owns the wire shape of every message the lab answers. Requests are parsed with defusedxml (DTDs,
entity declarations and external references are refused), then checked for the headers MS-WSMV
requires; anything else becomes a `SoapFault` the server sends back. Responses are small text
templates with every variable value XML-escaped (faster than building trees: the lab answers
thousands of requests per second across 1000 hosts).

Shapes follow real Windows messages: ../shared/realdata/winrm/*.xml (pywinrm and WinRb test
fixtures captured from Windows; see SOURCES.md there) and MS-WSMV 3.1.4 (Windows Remote Shell).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDR = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"

#: WS-Man action URI → the short name the lab records (`HostRecords.requests`).
ACTIONS: dict[str, str] = {
    f"{NS_TRANSFER}/Create": "Create",
    f"{NS_SHELL}/Command": "Command",
    f"{NS_SHELL}/Send": "Send",
    f"{NS_SHELL}/Receive": "Receive",
    f"{NS_SHELL}/Signal": "Signal",
    f"{NS_TRANSFER}/Delete": "Delete",
}
RESPONSE_ACTIONS: dict[str, str] = {
    "Create": f"{NS_TRANSFER}/CreateResponse",
    "Command": f"{NS_SHELL}/CommandResponse",
    "Send": f"{NS_SHELL}/SendResponse",
    "Receive": f"{NS_SHELL}/ReceiveResponse",
    "Signal": f"{NS_SHELL}/SignalResponse",
    "Delete": f"{NS_TRANSFER}/DeleteResponse",
}
SIGNAL_TERMINATE = f"{NS_SHELL}/signal/terminate"
SIGNAL_CTRL_C = f"{NS_SHELL}/signal/ctrl_c"
STATE_DONE = f"{NS_SHELL}/CommandState/Done"
STATE_RUNNING = f"{NS_SHELL}/CommandState/Running"

_DURATION = re.compile(r"^P(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration_s(text: str | None) -> float | None:
    """An xs:duration such as `PT20S`, `PT1.5S` or `PT1M` → seconds; a bare number is taken as
    seconds (pywinrm sends `IdleTimeOut` unconverted). None for anything else."""
    if text is None:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not match or text in ("P", "PT"):
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


# --------------------------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class SoapFault(Exception):
    """A WS-Management fault the server answers with.

    code: `s:Sender` or `s:Receiver`; subcode: e.g. `w:TimedOut`; reason: the s:Reason text;
    wsman_code: the `f:WSManFault Code` (None for WMI-style faults); wmi_code: an `MSFT_WmiError
    error_Code` detail instead (the quota fault); http_status: 500 or 400; detail_uri: an optional
    `w:FaultDetail` URI.
    """

    code: str
    subcode: str
    reason: str
    wsman_code: int | None = None
    wmi_code: int | None = None
    http_status: int = 500
    detail_uri: str | None = None
    message: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


# Texts are Windows' own (English), trailing spaces included, as in ../shared/realdata/winrm.
TIMEOUT_TEXT = (
    "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
)


def fault_timed_out() -> SoapFault:
    """OperationTimeout expired with no output (Receive long-poll): w:TimedOut 2150858793 (0x80338029),
    HTTP 500 — realdata/winrm/pywinrm_fault_timedout_2150858793.xml."""
    return SoapFault("s:Receiver", "w:TimedOut", TIMEOUT_TEXT, wsman_code=2150858793)


def fault_shell_not_found(shell_id: str) -> SoapFault:
    """Unknown or expired ShellId: w:InvalidSelectors, WSManFault 2150858843 = 0x8033805B
    ERROR_WSMAN_UNEXPECTED_SELECTORS, with Windows' Remote Shell message (pywinrm test fixtures)."""
    return SoapFault(
        "s:Sender",
        "w:InvalidSelectors",
        "The WS-Management service cannot process the request because the request contained invalid "
        "selectors for the resource. ",
        wsman_code=2150858843,
        detail_uri="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
        message=(
            f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was "
            "not found on the server. Possible causes are: the specified ShellId is incorrect or the shell "
            "no longer exists on the server. Provide the correct ShellId or create a new shell and retry "
            "the operation. "
        ),
    )


def fault_schema(detail: str = "") -> SoapFault:
    """Malformed or hostile envelope: w:SchemaValidationError 2150858817 (0x80338041), s:Sender,
    HTTP 400 (realdata/winrm/pywinrm_fault_schema_validation_2150858817.xml gives code/subcode)."""
    text = "The SOAP XML in the message does not match the corresponding XML schema definition. Change the XML and retry. "
    return SoapFault("s:Sender", "w:SchemaValidationError", text, wsman_code=2150858817, http_status=400,
                     message=text + (detail[:200] if detail else ""))


def fault_envelope_too_big(limit_bytes: int) -> SoapFault:
    """Request larger than MaxEnvelopeSizekb: w:EncodingLimit with FaultDetail MaxEnvelopeSize (DMTF
    DSP0226 fault for an oversized envelope), WSManFault 2150858824 = 0x80338048
    ERROR_WSMAN_MAX_ENVELOPE_SIZE_EXCEEDED (winerror.h). Not 2150858760: that is 0x80338008
    ERROR_WSMAN_SUBSCRIPTION_CLOSED in winerror.h."""
    return SoapFault(
        "s:Sender",
        "w:EncodingLimit",
        "The WS-Management service cannot process the request because the envelope size in the request is "
        f"too large (the limit is {limit_bytes} bytes). ",
        wsman_code=2150858824,
        detail_uri="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/MaxEnvelopeSize",
    )


def fault_quota(max_shells: int) -> SoapFault:
    """MaxShellsPerUser exceeded on Create: s:Sender / w:QuotaLimit with an MSFT_WmiError detail,
    error_Code 2150859173 (HRESULT 0x803381a5) — realdata/winrm/winrb_wmi_error_v2_quota.xml."""
    return SoapFault(
        "s:Sender",
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. The maximum number of concurrent shells for "
        "this user has been exceeded. Close existing shells or raise the quota for this user. ",
        wmi_code=2150859173,
        message=(
            "The WS-Management service cannot process the request. This user is allowed a maximum number of "
            f"{max_shells} concurrent shells, which has been exceeded. Close existing shells or raise the "
            "quota for this user. "
        ),
    )


def fault_access_denied() -> SoapFault:
    """The user may not use this resource (e.g. another user's shell): w:AccessDenied, WSManFault 5
    (ERROR_ACCESS_DENIED, "Access is denied.")."""
    return SoapFault("s:Sender", "w:AccessDenied", "Access is denied. ", wsman_code=5)


def fault_action_not_supported(action: str) -> SoapFault:
    """An action the shell resource does not implement: a:ActionNotSupported, WSManFault 2150858771 =
    0x80338013 ERROR_WSMAN_ACTION_NOT_SUPPORTED (winerror.h)."""
    return SoapFault(
        "s:Sender",
        "a:ActionNotSupported",
        "The action is not supported by the service. ",
        wsman_code=2150858771,
        message=f"The WS-Management service cannot process the request. The action {action[:200]} is not supported. ",
    )


def fault_must_understand(tag: str) -> SoapFault:
    """A mustUnderstand header the service does not process: s:MustUnderstand (no subcode), an
    s:NotUnderstood header naming it, no detail (realdata/winrm/pywinrm_fault_must_understand.xml)."""
    return SoapFault(
        "s:MustUnderstand", "",
        "The WS-Management service cannot process a SOAP header in the request that is marked as "
        "mustUnderstand by the client. ",
        extra={"not_understood": tag},
    )


def fault_internal(text: str = "Unspecified error ") -> SoapFault:
    """A server-side failure (injected HTTP 500): s:Receiver / w:InternalError, WSManFault
    2147500037 (E_FAIL, 0x80004005)."""
    return SoapFault("s:Receiver", "w:InternalError", text, wsman_code=2147500037)


# ------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class WsmanRequest:
    """One parsed WS-Man request.

    action: the short name (`Create`…`Delete`) or the full URI when unknown; message_id: as sent;
    shell_id: the `ShellId` selector or None; operation_timeout_s: from w:OperationTimeout (None if
    absent); max_envelope_size: the client's w:MaxEnvelopeSize in bytes (None if absent); options:
    w:OptionSet name → value; body: the first child of s:Body or None.
    """

    action: str
    action_uri: str
    message_id: str
    resource_uri: str
    shell_id: str | None
    operation_timeout_s: float | None
    max_envelope_size: int | None
    options: dict[str, str]
    body: Element | None


_ACTION_TEXT = re.compile(rb"Action[^>]*>\s*([^<\s]{1,300})\s*<")


def sniff_action(data: bytes) -> str:
    """The short action name of a request without parsing it (for counting a request the lab
    refuses before parsing, e.g. an injected HTTP 500); `Other` when not recognisable."""
    match = _ACTION_TEXT.search(data[:8192])
    return ACTIONS.get(match.group(1).decode("ascii", "replace"), "Other") if match else "Other"


#: Header namespaces the service processes (WS-Addressing, WS-Management, Microsoft's WS-Man
#: extensions); a mustUnderstand header from any other namespace gets s:MustUnderstand.
_UNDERSTOOD_NAMESPACES = frozenset({NS_ADDR, NS_WSMAN, "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"})


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def parse_request(data: bytes) -> WsmanRequest:
    """Parse one SOAP envelope (bytes, UTF-8 or with an XML declaration) into a `WsmanRequest`.

    Raises `SoapFault` (w:SchemaValidationError) for malformed XML, DTDs or entities, a root that
    is not a SOAP 1.2 Envelope, or a missing Header/Body/Action/MessageID/ResourceURI.
    """
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except Exception as exc:  # ParseError, DTDForbidden, EntitiesForbidden, ValueError, UnicodeError …
        raise fault_schema(type(exc).__name__) from None
    if root.tag != _q(NS_SOAP, "Envelope"):
        raise fault_schema("root is not a SOAP 1.2 Envelope")
    header = root.find(_q(NS_SOAP, "Header"))
    body_el = root.find(_q(NS_SOAP, "Body"))
    if header is None or body_el is None:
        raise fault_schema("Header and Body are required")

    def text_of(ns: str, tag: str) -> str | None:
        el = header.find(_q(ns, tag))
        return None if el is None else (el.text or "").strip()

    for child in header:
        must = child.get("mustUnderstand") or child.get(_q(NS_SOAP, "mustUnderstand")) or ""
        if must.strip().lower() in ("true", "1") and _namespace(child.tag) not in _UNDERSTOOD_NAMESPACES:
            raise fault_must_understand(child.tag)
    action_uri = text_of(NS_ADDR, "Action")
    message_id = text_of(NS_ADDR, "MessageID")
    resource_uri = text_of(NS_WSMAN, "ResourceURI")
    if not action_uri or not message_id or resource_uri is None:
        raise fault_schema("Action, MessageID and ResourceURI are required")
    shell_id = None
    selectors = header.find(_q(NS_WSMAN, "SelectorSet"))
    if selectors is not None:
        for sel in selectors.findall(_q(NS_WSMAN, "Selector")):
            if (sel.get("Name") or "") == "ShellId":
                shell_id = (sel.text or "").strip()
    options: dict[str, str] = {}
    option_set = header.find(_q(NS_WSMAN, "OptionSet"))
    if option_set is not None:
        for opt in option_set.findall(_q(NS_WSMAN, "Option")):
            name = opt.get("Name")
            if name:
                options[name] = (opt.text or "").strip()
    max_env_text = text_of(NS_WSMAN, "MaxEnvelopeSize")
    max_env: int | None = None
    if max_env_text:
        if not max_env_text.isdigit() or len(max_env_text) > 12:
            raise fault_schema("MaxEnvelopeSize is not a number")
        max_env = int(max_env_text)
    op_text = text_of(NS_WSMAN, "OperationTimeout")
    op_timeout = parse_duration_s(op_text)
    if op_text is not None and op_timeout is None:
        raise fault_schema("OperationTimeout is not an xs:duration")
    children = list(body_el)
    return WsmanRequest(
        action=ACTIONS.get(action_uri, action_uri),
        action_uri=action_uri,
        message_id=message_id,
        resource_uri=resource_uri,
        shell_id=shell_id,
        operation_timeout_s=op_timeout,
        max_envelope_size=max_env,
        options=options,
        body=children[0] if children else None,
    )


# ----------------------------------------------------------------------------------------- responses

_ENVELOPE_OPEN = (
    '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
)


def new_message_id() -> str:
    """A fresh `uuid:XXXXXXXX-…` MessageID, upper-case as Windows writes it."""
    return "uuid:" + str(uuid.uuid4()).upper()


def envelope(action_uri: str, relates_to: str | None, body: str, extra_header: str = "") -> bytes:
    """A complete response envelope (UTF-8 bytes) with Windows' header order: Action, MessageID, To,
    RelatesTo (omitted when the request had no usable MessageID). `body`/`extra_header` are trusted
    markup built here."""
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    return (
        f"{_ENVELOPE_OPEN}<s:Header><a:Action>{escape(action_uri)}</a:Action>"
        f"<a:MessageID>{new_message_id()}</a:MessageID><a:To>{ANONYMOUS}</a:To>{relates}{extra_header}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def fault_envelope(fault: SoapFault, relates_to: str | None, machine: str) -> bytes:
    """The envelope for `fault` (Action …/wsman/fault), with a WSManFault or MSFT_WmiError detail."""
    detail = ""
    if fault.detail_uri:
        detail += f"<w:FaultDetail>{escape(fault.detail_uri)}</w:FaultDetail>"
    if fault.wsman_code is not None:
        detail += (
            '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
            f"Code={quoteattr(str(fault.wsman_code))} Machine={quoteattr(machine)}>"
            f"<f:Message>{escape(fault.message or fault.reason)}</f:Message></f:WSManFault>"
        )
    if fault.wmi_code is not None:
        message = escape(fault.message or fault.reason)
        detail += (
            "<p:MSFT_WmiError b:IsCIM_Error='true' xmlns:b='http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd' "
            "xmlns:cim='http://schemas.dmtf.org/wbem/wscim/1/common' "
            "xmlns:p='http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError' xsi:type='p:MSFT_WmiError_Type' "
            "xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'>"
            "<p:CIMStatusCode xsi:type='cim:cimUnsignedInt'>27</p:CIMStatusCode>"
            f"<p:Message xsi:type='cim:cimString'>{message}</p:Message>"
            f"<p:MessageID xsi:type='cim:cimString'>HRESULT 0x{fault.wmi_code:08x}</p:MessageID>"
            "<p:error_Category xsi:type='cim:cimUnsignedInt'>30</p:error_Category>"
            f"<p:error_Code xsi:type='cim:cimUnsignedInt'>{fault.wmi_code}</p:error_Code>"
            "<p:error_Type xsi:type='cim:cimString'>HRESULT</p:error_Type>"
            f"<p:error_WindowsErrorMessage xsi:type='cim:cimString'>{message}</p:error_WindowsErrorMessage>"
            "</p:MSFT_WmiError>"
        )
    subcode = f"<s:Subcode><s:Value>{escape(fault.subcode)}</s:Value></s:Subcode>" if fault.subcode else ""
    body = (
        f"<s:Fault><s:Code><s:Value>{escape(fault.code)}</s:Value>{subcode}</s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text>'
        f"</s:Reason>{'<s:Detail>' + detail + '</s:Detail>' if detail else ''}</s:Fault>"
    )
    not_understood = fault.extra.get("not_understood")
    if not_understood:
        ns = _namespace(not_understood)
        local = not_understood.rpartition("}")[2]
        header = (f"<s:NotUnderstood qname={quoteattr('nu:' + local)} xmlns:nu={quoteattr(ns)}/>" if ns
                  else f"<s:NotUnderstood qname={quoteattr(local)}/>")
        return envelope("http://schemas.xmlsoap.org/ws/2004/08/addressing/fault", relates_to, body, header)
    return envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body)


def create_response(relates_to: str, address: str, shell_id: str) -> bytes:
    """CreateResponse: x:ResourceCreated with the ShellId selector (realdata pywinrm_open_shell_response.xml)."""
    body = (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{RESOURCE_CMD}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{escape(shell_id)}</w:Selector></w:SelectorSet>'
        "</a:ReferenceParameters></x:ResourceCreated>"
    )
    return envelope(RESPONSE_ACTIONS["Create"], relates_to, body)


def command_response(relates_to: str, command_id: str) -> bytes:
    """CommandResponse carrying the CommandId (realdata pywinrm_run_cmd_response.xml)."""
    body = f"<rsp:CommandResponse><rsp:CommandId>{escape(command_id)}</rsp:CommandId></rsp:CommandResponse>"
    return envelope(RESPONSE_ACTIONS["Command"], relates_to, body)


def empty_response(action: str, relates_to: str) -> bytes:
    """SendResponse / SignalResponse / DeleteResponse (realdata signal/close responses)."""
    body = {"Send": "<rsp:SendResponse/>", "Signal": "<rsp:SignalResponse/>", "Delete": ""}[action]
    return envelope(RESPONSE_ACTIONS[action], relates_to, body)


def receive_response(
    relates_to: str,
    command_id: str,
    stdout_b64: str,
    stderr_b64: str,
    done: bool,
    exit_code: int | None,
) -> bytes:
    """ReceiveResponse: base64 stdout/stderr chunks; when `done`, End="true" streams and CommandState
    Done with ExitCode (realdata pywinrm_receive_response_done.xml), else CommandState Running."""
    cid = quoteattr(command_id)
    parts = ["<rsp:ReceiveResponse>"]
    if stdout_b64:
        parts.append(f'<rsp:Stream Name="stdout" CommandId={cid}>{stdout_b64}</rsp:Stream>')
    if stderr_b64:
        parts.append(f'<rsp:Stream Name="stderr" CommandId={cid}>{stderr_b64}</rsp:Stream>')
    if done:
        parts.append(f'<rsp:Stream Name="stdout" CommandId={cid} End="true"/>')
        parts.append(f'<rsp:Stream Name="stderr" CommandId={cid} End="true"/>')
        parts.append(
            f'<rsp:CommandState CommandId={cid} State="{STATE_DONE}"><rsp:ExitCode>{int(exit_code or 0)}'
            "</rsp:ExitCode></rsp:CommandState>"
        )
    else:
        parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_RUNNING}"/>')
    parts.append("</rsp:ReceiveResponse>")
    return envelope(RESPONSE_ACTIONS["Receive"], relates_to, "".join(parts))
