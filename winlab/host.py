"""`EmulatedHost`: one emulated Windows host as the WS-Man server sees it (`winlab.hostapi.LabHost`).

It decides what a Command runs:
- the kbfix agent: the command line is exactly `remoting.agent_delivery.command_line()` and the
  agent bytes on stdin are exactly the shipped `remoting/agent.ps1` (read at run time) → the
  request runs in `winlab.agent_emulator`; other agent bytes → an error, exit 1;
- one of the naive peer's scripts (`winlab.naive_probes`), sent as `powershell -encodedcommand`;
- `hostname`, `whoami`, `echo …` and `cmd /c <one of these>` (connectivity checks);
- anything else → what cmd.exe answers for an unknown command (exit 9009), or, for
  powershell.exe with an unknown script, a PowerShell error (exit 1).
"""

from __future__ import annotations

import base64
import shlex
import threading
from collections.abc import Mapping

from remoting import agent_delivery
from remoting.agent_delivery import build_stdin, parse_stdin
from remoting.agent_protocol import (
    AgentRequest,
    AgentResponse,
    RequestFormatError,
    decode_response,
    encode_request,
    encode_response,
)
from winlab import hostile
from winlab.agent_emulator import AgentContext, run_request
from winlab.agent_request import parse_like_agent
from winlab.faults import Faults
from winlab.hostapi import ProcessResult
from winlab.hoststate import HostState
from winlab.naive_probes import clixml_errors, decode_encoded_command, run_naive_script
from winlab.power import PowerState
from winlab.records import HostRecords
from winlab.templates import HostTemplate

AGENT_MISMATCH = "kbfix lab: agent script does not match the shipped agent"
# cmd.exe's message and exit code for a command it cannot find (9009 = "not recognized").
_CMD_NOT_FOUND = "'{0}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
CMD_NOT_FOUND_EXIT = 9009
UTF8_CODEPAGE = 65001
# The shell codepage the kbfix client opens (remoting.wsman_client): pywinrm's default, OEM US.
CLIENT_CODEPAGE = 437


def _stdout_codec(codepage: int) -> str:
    """Python codec for a console codepage (65001 UTF-8, 437/850 OEM, 936 GBK, 1252 ANSI)."""
    if codepage == 65001:
        return "utf-8"
    return f"cp{codepage}" if codepage > 0 else "cp437"


class EmulatedHost:
    """One emulated host: name, accounts, faults, WinRM quotas, records and mutable `state`.

    Built from a `HostTemplate` (see `winlab.fixtures`); `name` overrides the template's (clones).
    `time_scale` multiplies every simulated sleep (installer seconds, ps_start_ms): 0 makes
    them instant, 1.0 (default from the fixture) is real time.
    """

    def __init__(self, template: HostTemplate, name: str | None = None) -> None:
        self.template = template
        self.name: str = name or template.name
        self.site: str | None = template.site
        self.accounts: Mapping[str, str] = template.accounts
        self.faults: Faults = template.faults
        self.max_envelope_kb: int = template.max_envelope_kb
        self.max_shells_per_user: int = template.max_shells_per_user
        self.idle_timeout_s: float = template.idle_timeout_s
        self.cbt_hardening_level: str = template.cbt_hardening_level  # read by winlab.server (issue 16)
        self.time_scale: float = template.time_scale
        self.records = HostRecords()
        self.state: HostState = template.state.copy(self.name.upper())
        # reboot (issue 21): boot time and restarts; the server subscribes to close/reopen the listener
        self.power = PowerState(self.state, template.boot, self.time_scale)

    def __repr__(self) -> str:
        return f"EmulatedHost({self.name!r})"

    # --- LabHost ---------------------------------------------------------------------------------

    def execute(
        self,
        command: str,
        args: list[str],
        stdin: bytes,
        env: Mapping[str, str],
        codepage: int,
        cancel: threading.Event,
    ) -> ProcessResult:
        """Run one command to completion (see module docstring). Blocks for simulated time;
        returns early when `cancel` is set."""
        self.records.process_started()
        if codepage == UTF8_CODEPAGE and self.state.os.before_2008_r2:
            # Windows before Server 2008 R2 / Windows 7 "fail on the default UTF-8 codepage (65001)"
            # (chef/knife-windows PR #400): the command "immediately returns with no output but
            # without invoking the script" (WinRb/WinRM issue #232, Server 2008 SP2).
            self.records.fault("codepage_65001")
            return ProcessResult(b"", b"", 0)
        argv = [command, *args] if args else _split_command(command)
        if not argv:
            return ProcessResult(b"", b"", 0)
        exe = argv[0].lower().rsplit("\\", 1)[-1]
        if exe in ("powershell", "powershell.exe"):
            if self.faults.ps_start_ms and cancel.wait(self.faults.ps_start_ms / 1000 * self.time_scale):
                return ProcessResult(b"", b"", 1)
            if self.faults.hang_command:
                self.records.fault("hang_command")
                cancel.wait()
                return ProcessResult(b"", b"", 1)
            return self._powershell(command, args, argv, stdin, env, codepage, cancel)
        return self._cmd(argv, env, codepage)

    # --- cmd.exe ---------------------------------------------------------------------------------

    def _cmd(self, argv: list[str], env: Mapping[str, str], codepage: int) -> ProcessResult:
        """The few programs a connectivity check runs (`hostname`, `whoami`, `echo`, `cmd /c …`);
        anything else gets cmd.exe's answer for an unknown command."""
        codec = _stdout_codec(codepage)
        exe = argv[0].lower().rsplit("\\", 1)[-1]
        if exe in ("cmd", "cmd.exe") and len(argv) > 2 and argv[1].lower() in ("/c", "/k"):
            return self._cmd(argv[2:], env, codepage)
        if exe in ("hostname", "hostname.exe"):
            return ProcessResult((self.state.computer_name + "\r\n").encode(codec, "replace"), b"", 0)
        if exe in ("whoami", "whoami.exe"):
            who = f"{self.state.computer_name}\\{self.state.user}".lower()
            return ProcessResult((who + "\r\n").encode(codec, "replace"), b"", 0)
        if exe == "echo":
            text = " ".join(argv[1:]) if len(argv) > 1 else "ECHO is on."
            return ProcessResult((self.state.expand(text, env) + "\r\n").encode(codec, "replace"), b"", 0)
        return ProcessResult(b"", _CMD_NOT_FOUND.format(argv[0]).encode(codec, "replace"), CMD_NOT_FOUND_EXIT)

    # --- powershell.exe --------------------------------------------------------------------------

    def _powershell(
        self,
        command: str,
        args: list[str],
        argv: list[str],
        stdin: bytes,
        env: Mapping[str, str],
        codepage: int,
        cancel: threading.Event,
    ) -> ProcessResult:
        agent_cmd, agent_args = agent_delivery.command_line()
        if command.lower() == agent_cmd.lower() and list(args) == agent_args:
            return self._agent(stdin, env, cancel)
        script = _encoded_command(argv)
        if script is not None:
            out = run_naive_script(self.state, script)
            if out is not None:
                return ProcessResult(
                    out.stdout.encode(_stdout_codec(codepage), "replace"),
                    clixml_errors(out.errors) if out.errors else b"",
                    out.exit_code,
                )
        message = (
            "The term or script block sent to this kbfix lab host is not one it can run "
            "(only the kbfix agent and the documented naive probes are emulated)."
        )
        return ProcessResult(b"", clixml_errors((message,)), 1)

    def _agent(self, stdin: bytes, env: Mapping[str, str], cancel: threading.Event) -> ProcessResult:
        # What bootstrap.ps1 does on Windows: read both stdin lines and inflate the agent with
        # System.IO.Compression.GZipStream (.NET 2.0+, RFC 1952); parse_stdin does the same,
        # bounded. Only the shipped agent, byte for byte, is run.
        try:
            agent, doc = parse_stdin(stdin)
        except RequestFormatError as exc:
            return ProcessResult(b"", f"kbfix bootstrap: agent or request missing on stdin ({exc})\r\n".encode(), 1)
        try:
            parsed = parse_like_agent(doc)  # as agent.ps1 reads it: a bad line fails its op only
        except RequestFormatError as exc:
            return ProcessResult(b"", f"kbfix agent: {exc}\r\n".encode(), 1)
        # The whole agent, or exactly the sections this request's ops use (agent_for_ops). On
        # Windows an agent missing a section would answer its ops CommandNotFoundException;
        # kbfix never sends one, so the lab refuses it as it refuses any other script.
        agent = agent.replace(b"\r\n", b"\n")
        names = [o.name for o in parsed.request.ops]
        if agent != agent_delivery.read_agent_bytes() and agent != agent_delivery.read_agent_bytes(names):
            return ProcessResult(b"", (AGENT_MISMATCH + "\r\n").encode(), 1)
        ctx = AgentContext(
            state=self.state,
            installers=self.template.installers,
            records=self.records,
            env=dict(env),
            cancel=cancel,
            time_scale=self.time_scale,
            power=self.power,
        )
        document, mutated = run_request(parsed.request, ctx, bad=parsed.bad)
        if self.faults.type_confused or self.faults.escape_names:  # a hostile host (winlab.hostile)
            self.records.fault("type_confused" if self.faults.type_confused else "escape_names")
            document = hostile.apply(
                document, type_confused=self.faults.type_confused, escape_names=self.faults.escape_names
            )
        # The server counts the fault when it actually drops the connection (winlab.wsman).
        drop = bool(mutated and self.faults.drop_after_mutation)
        return ProcessResult(encode_response(document), b"", 0, drop_connection=drop)


def _split_command(command: str) -> list[str]:
    """Split a command line the way cmd.exe finds the program (whitespace, double quotes)."""
    try:
        return shlex.split(command, posix=False)
    except ValueError:
        return command.split()


def _encoded_command(argv: list[str]) -> str | None:
    """The script of `-EncodedCommand`/`-enc`/`-e` (PowerShell accepts any unique prefix)."""
    for i, a in enumerate(argv[1:-1], start=1):
        low = a.lower()
        if low.startswith("-e") and "-encodedcommand".startswith(low) and len(low) >= 2:
            return decode_encoded_command(argv[i + 1])
    return None


def encoded_command_arg(script: str) -> str:
    """base64 of the UTF-16LE script (what `-EncodedCommand` takes; helper for tests)."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def run_agent_request(
    host: EmulatedHost,
    request: AgentRequest,
    *,
    env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[ProcessResult, AgentResponse | None]:
    """Send `request` to `host` as the client does (the real command line and stdin bytes),
    without HTTP: for unit tests and benchmarks of the emulator. Returns the process result and
    the decoded response (None when the process did not answer with one)."""
    cmd, args = agent_delivery.command_line()
    result = host.execute(cmd, args, build_stdin(encode_request(request)), env or {}, CLIENT_CODEPAGE,
                          cancel or threading.Event())
    if result.exit_code != 0:
        return result, None
    return result, decode_response(result.stdout, request.nonce, limit=max(request.limit, 1 << 20))
