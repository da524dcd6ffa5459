"""The WS-Management shell service of one emulated host: a SOAP request in, a SOAP answer out.

Owns the six Windows Remote Shell actions (MS-WSMV 3.1.4: Create, Command, Send, Receive,
Signal, Delete), the per-host WinRM limits (MaxEnvelopeSizekb, MaxShellsPerUser, idle timeout,
the OperationTimeout long-poll) and the faults that belong to the protocol layer
(`receive_timeout`, `quota`, `drop_mid_receive`, `drop_after_mutation`, `stderr_flood`). HTTP, authentication and
the network faults live in `winlab.server`.
"""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from winlab import hostile, soap
from winlab.hostapi import LabHost
from winlab.shells import ShellError, ShellTable
from winlab.soap import NS_SHELL, SoapFault, WsmanRequest

#: WinRM's MaxTimeoutms default (60 s): the longest OperationTimeout the service honours
#: (MS docs "Installation and configuration for Windows Remote Management", WinRM config).
MAX_OPERATION_TIMEOUT_S = 60.0
#: OperationTimeout when the request carries none (WinRM's default, 60 s).
DEFAULT_OPERATION_TIMEOUT_S = 60.0
#: pywinrm's and Windows' default MaxEnvelopeSize (153600 bytes) when the request names none.
DEFAULT_CLIENT_ENVELOPE = 153600
#: Bytes kept free in a Receive answer for the envelope around the base64 streams.
_ENVELOPE_OVERHEAD = 4096


@dataclass(frozen=True)
class Reply:
    """The service's answer: HTTP status, SOAP body, the action name to record, and `drop` when the
    server must close the connection without answering."""

    status: int
    body: bytes
    action: str
    drop: bool = False


def _shell_q(tag: str) -> str:
    return f"{{{NS_SHELL}}}{tag}"


class WsmanService:
    """WS-Man for one host. `address` is the endpoint URL echoed in CreateResponse (`a:Address`);
    `stop` is the lab's stop Event (interrupts injected waits)."""

    def __init__(self, host: LabHost, address: str, stop: threading.Event) -> None:
        self.host = host
        self.address = address
        self.shells = ShellTable(host)
        self._stop = stop
        self._drop_mid_receive_pending = host.faults.drop_mid_receive
        self._lock = threading.Lock()

    def _fault(self, fault: SoapFault, relates_to: str | None, action: str) -> Reply:
        return Reply(fault.http_status, soap.fault_envelope(fault, relates_to, self.host.name), action)

    def handle(self, body: bytes, user: str) -> Reply:
        """Answer one SOAP request from the authenticated `user` (never raises for client input)."""
        limit = int(self.host.max_envelope_kb) * 1024
        if len(body) > limit:
            return self._fault(soap.fault_envelope_too_big(limit), None, "Other")
        try:
            req = soap.parse_request(body)
        except SoapFault as fault:
            return self._fault(fault, None, "Other")
        action = req.action if req.action in soap.RESPONSE_ACTIONS else "Other"
        try:
            if req.resource_uri != soap.RESOURCE_CMD or action == "Other":
                raise soap.fault_action_not_supported(req.action_uri)
            owner = user.upper()
            if action == "Create":
                return Reply(200, self._create(req, owner), action)
            if action == "Command":
                return Reply(200, self._command(req, owner), action)
            if action == "Send":
                return Reply(200, self._send(req, owner), action)
            if action == "Receive":
                return self._receive(req, owner)
            if action == "Signal":
                return Reply(200, self._signal(req, owner), action)
            self.shells.delete(req.shell_id, owner)
            return Reply(200, soap.empty_response("Delete", req.message_id), action)
        except SoapFault as fault:
            return self._fault(fault, req.message_id, action)
        except ShellError as err:
            if err.kind in ("drop", "stopped"):
                return Reply(0, b"", action, drop=True)
            return self._fault(self._shell_fault(err, req), req.message_id, action)

    def _shell_fault(self, err: ShellError, req: WsmanRequest) -> SoapFault:
        if err.kind == "quota":
            return soap.fault_quota(self.host.max_shells_per_user)
        if err.kind == "access_denied":
            return soap.fault_access_denied()
        if err.kind == "timeout":
            return soap.fault_timed_out()
        return soap.fault_shell_not_found(req.shell_id or "")

    # ------------------------------------------------------------------------------- actions

    def _body(self, req: WsmanRequest, tag: str) -> Element:
        if req.body is None or req.body.tag != _shell_q(tag):
            raise soap.fault_schema(f"rsp:{tag} expected in Body")
        return req.body

    def _create(self, req: WsmanRequest, owner: str) -> bytes:
        shell = self._body(req, "Shell")
        codepage_text = req.options.get("WINRS_CODEPAGE", "437")
        if not codepage_text.isdigit() or len(codepage_text) > 6:
            raise soap.fault_schema("WINRS_CODEPAGE is not a number")
        env: dict[str, str] = {}
        env_el = shell.find(_shell_q("Environment"))
        if env_el is not None:
            for var in env_el.findall(_shell_q("Variable")):
                name = var.get("Name")
                if name:
                    env[name] = var.text or ""
        idle_el = shell.find(_shell_q("IdleTimeOut"))
        idle = soap.parse_duration_s(idle_el.text) if idle_el is not None else None
        if self.host.faults.quota:
            self.host.records.fault("quota")
        shell_id = self.shells.create(owner, int(codepage_text), env, idle, quota_fault=self.host.faults.quota)
        return soap.create_response(req.message_id, self.address, shell_id)

    def _command(self, req: WsmanRequest, owner: str) -> bytes:
        line = self._body(req, "CommandLine")
        command_el = line.find(_shell_q("Command"))
        command = (command_el.text or "").strip() if command_el is not None else ""
        args = [a.text or "" for a in line.findall(_shell_q("Arguments"))]
        command_id = self.shells.command(req.shell_id, owner, command, args)
        return soap.command_response(req.message_id, command_id)

    def _send(self, req: WsmanRequest, owner: str) -> bytes:
        send = self._body(req, "Send")
        streams = send.findall(_shell_q("Stream"))
        if not streams:
            raise soap.fault_schema("rsp:Stream expected in rsp:Send")
        for stream in streams:
            try:
                data = base64.b64decode((stream.text or "").strip(), validate=True)
            except binascii.Error:
                raise soap.fault_schema("stdin is not base64") from None
            end = (stream.get("End") or "").lower() == "true"
            self.shells.send(req.shell_id, owner, stream.get("CommandId"), data, end)
        return soap.empty_response("Send", req.message_id)

    def _signal(self, req: WsmanRequest, owner: str) -> bytes:
        signal = self._body(req, "Signal")
        code_el = signal.find(_shell_q("Code"))
        code = (code_el.text or "").strip() if code_el is not None else ""
        if code not in (soap.SIGNAL_TERMINATE, soap.SIGNAL_CTRL_C):
            raise soap.fault_schema("unknown signal code")
        self.shells.signal(req.shell_id, owner, signal.get("CommandId"), code == soap.SIGNAL_TERMINATE)
        return soap.empty_response("Signal", req.message_id)

    def _receive(self, req: WsmanRequest, owner: str) -> Reply:
        receive = self._body(req, "Receive")
        desired = receive.find(_shell_q("DesiredStream"))
        command_id = desired.get("CommandId") if desired is not None else None
        timeout = min(req.operation_timeout_s or DEFAULT_OPERATION_TIMEOUT_S, MAX_OPERATION_TIMEOUT_S)
        if self.host.faults.receive_timeout:
            # The command exists and runs, but no output arrives within OperationTimeout.
            self.shells.check(req.shell_id, owner, command_id)
            self.host.records.fault("receive_timeout")
            if self._stop.wait(timeout):
                return Reply(0, b"", "Receive", drop=True)
            raise soap.fault_timed_out()
        if self.host.faults.stderr_flood:
            # A hostile host: the process writes error records as fast as it can and never exits,
            # so every Receive carries a full envelope of stderr and CommandState Running
            # ([MS-WSMV] 3.1.4.14; winlab.hostile).
            self.shells.check(req.shell_id, owner, command_id)
            self.host.records.fault("stderr_flood")
            envelope = req.max_envelope_size or DEFAULT_CLIENT_ENVELOPE
            chunk = max(1024, (envelope - _ENVELOPE_OVERHEAD) * 3 // 4)
            body = soap.receive_response(
                req.message_id, command_id or "", "",
                base64.b64encode(hostile.flood_chunk(chunk)).decode("ascii"), False, None,
            )
            return Reply(200, body, "Receive")
        with self._lock:
            drop_now = self._drop_mid_receive_pending
            self._drop_mid_receive_pending = False
        if drop_now:
            self.shells.check(req.shell_id, owner, command_id)
            self.host.records.fault("drop_mid_receive")
            return Reply(0, b"", "Receive", drop=True)
        envelope = req.max_envelope_size or DEFAULT_CLIENT_ENVELOPE
        chunk = max(1024, (envelope - _ENVELOPE_OVERHEAD) * 3 // 4)
        try:
            out, err, done, result, _number = self.shells.receive(req.shell_id, owner, command_id, timeout, chunk)
        except ShellError as exc:
            if exc.kind == "drop":
                self.host.records.fault("drop_after_mutation")
            raise
        body = soap.receive_response(
            req.message_id,
            command_id or "",
            base64.b64encode(out).decode("ascii"),
            base64.b64encode(err).decode("ascii"),
            done,
            result.exit_code if result is not None else None,
        )
        return Reply(200, body, "Receive")
