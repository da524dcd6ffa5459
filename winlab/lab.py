"""`Lab`: start the WS-Management lab for a list of emulated hosts, in-process, and stop it cleanly.

Owns the lab's lifetime (work dir, NTLM credential file, generated PKI, the `LabServer`), the
endpoint list clients use, the per-host records, the exit summary and the kbfix inventory file
the lab writes for its hosts.

    with Lab(hosts) as lab:
        ep = lab.endpoints["WSUS01"]            # LabEndpoint(url='http://127.0.0.1:40123/wsman', …)
        lab.write_inventory(Path("lab.yaml"))
        ...
        print(lab.summary())
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import yaml

from winlab import auth
from winlab.hostapi import LabHost
from winlab.records import HostRecords
from winlab.server import LabServer
from winlab.tls import make_pki

#: Client timeouts written into the inventory (s): pywinrm needs read > operation.
INVENTORY_TIMEOUTS = {"connect": 5, "operation": 20, "read": 30, "command": 300}
SUMMARY_ACTIONS = ("Create", "Command", "Send", "Receive", "Signal", "Delete", "Auth", "Other")


@dataclass(frozen=True)
class LabEndpoint:
    """Where one emulated host listens. url: e.g. `https://127.0.0.1:40123/wsman`; ca_path: the
    lab CA file clients validate against (None over HTTP)."""

    name: str
    address: str
    port: int
    scheme: str
    url: str
    ca_path: Path | None


class Lab:
    """The embedded lab as a context manager (see the module docstring).

    hosts: the emulated hosts (unique names); https: serve HTTPS with a generated CA; bind: the
    loopback address for all hosts; distinct_addresses: give each host its own 127.x.y.z address;
    port: fixed port (0 = ephemeral); workdir: where the CA and the NTLM credential file go (a
    temporary directory, removed at stop, when None). Raises OSError if a listener cannot bind.
    """

    def __init__(self, hosts: Sequence[LabHost], *, https: bool = False, bind: str = "127.0.0.1",
                 distinct_addresses: bool = False, workdir: Path | None = None, port: int = 0) -> None:
        self.hosts = list(hosts)
        self.https = https
        self.bind = bind
        self.distinct_addresses = distinct_addresses
        self.port = port
        self._given_workdir = workdir
        self.workdir: Path | None = None
        self.ca_path: Path | None = None
        self.endpoints: dict[str, LabEndpoint] = {}
        self._server: LabServer | None = None
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------------------------ lifetime

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Create the work dir, credential file and PKI, bind all listeners and start serving."""
        try:
            if self._given_workdir is None:
                tmp = Path(tempfile.mkdtemp(prefix="winlab-"))
                self._stack.callback(shutil.rmtree, tmp, True)
                self.workdir = tmp
            else:
                self.workdir = self._given_workdir
                self.workdir.mkdir(parents=True, exist_ok=True)
            accounts = [(name, pw) for h in self.hosts for name, pw in h.accounts.items()]
            self._stack.enter_context(auth.ntlm_user_file(self.workdir / "ntlm_users.txt", accounts))
            passwords: dict[tuple[str, str], str] = {}
            for line in auth.ntlm_user_lines(accounts):
                domain, user, password = line.split(":", 2)
                passwords.setdefault((domain.upper(), user.upper()), password)
            ssl_context = None
            server = LabServer(self.hosts, bind=self.bind, distinct_addresses=self.distinct_addresses,
                               port=self.port, ntlm_passwords=passwords)
            if self.https:
                pki = make_pki(self.workdir, set(server.addresses_for()) | {"127.0.0.1"},
                               [h.name for h in self.hosts])
                self.ca_path = pki.ca_path
                ssl_context = pki.server_context()
                server.ssl_context = ssl_context
                server.tls_end_points[ssl_context] = pki.end_point()
                if any(getattr(h.faults, "certificate", "ok") == "expired" for h in self.hosts):
                    server.expired_ssl_context = pki.server_context(expired=True)
                    server.tls_end_points[server.expired_ssl_context] = pki.end_point(expired=True)
            server.start()
            self._server = server
            self._stack.callback(server.stop)
            for name, lst in server.listeners.items():
                self.endpoints[name] = LabEndpoint(name, lst.address, lst.port, lst.scheme, lst.url, self.ca_path)
        except BaseException:
            self._stack.close()
            raise

    def stop(self) -> None:
        """Stop serving, join every thread, close every socket, remove the temporary work dir."""
        self._stack.close()

    @property
    def server(self) -> LabServer:
        """The running `LabServer` (raises RuntimeError before `start`)."""
        if self._server is None:
            raise RuntimeError("the lab is not started")
        return self._server

    # ------------------------------------------------------------------------------- records

    def records(self, name: str) -> HostRecords:
        """The records of host `name` (KeyError for an unknown host)."""
        return self.server.listeners[name].host.records

    def open_shells(self) -> int:
        """Shells open across all hosts (idle-expired shells are closed first)."""
        return sum(lst.service.shells.open_count() for lst in self.server.listeners.values())

    def summary(self) -> str:
        """A plain-text table per host: requests by action, shells opened/open, powershell processes,
        mutating ops, injected faults, body bytes in/out; then totals."""
        head = ["host", *SUMMARY_ACTIONS, "shells", "open", "procs", "mutations", "faults", "bytes_in", "bytes_out"]
        rows: list[list[str]] = []
        totals = [0] * (len(head) - 1)
        for lst in self.server.listeners.values():
            lst.service.shells.open_count()  # expire idle shells so `open` is current
            snap = lst.host.records.snapshot()
            values = [snap["requests"].get(a, 0) for a in SUMMARY_ACTIONS] + [
                snap["shells_opened"], snap["shells_open"], snap["processes_started"], len(snap["mutations"]),
                sum(snap["faults_injected"].values()), snap["bytes_in"], snap["bytes_out"]]
            totals = [t + v for t, v in zip(totals, values, strict=True)]
            rows.append([lst.host.name, *map(str, values)])
        rows.append(["TOTAL", *map(str, totals)])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        return "\n".join(fmt.format(*r) for r in [head, *rows])

    # ----------------------------------------------------------------------------- inventory

    def write_inventory(self, path: Path, *, transport: Literal["ntlm", "basic"] = "ntlm",
                        username: str | None = None) -> Path:
        """Write a kbfix inventory (format `kbfix_inventory: 1`) for the served hosts, atomically
        (temp file + rename). Credentials: the first host's first account (or `username` and its
        password); a host whose first account differs carries its own username/password.
        Returns the absolute path. Raises ValueError when there are no hosts or accounts."""
        if not self.hosts:
            raise ValueError("the lab serves no hosts")
        first = self.hosts[0]
        if username is not None:
            found = auth.match_account(first.accounts, username)
            if found is None:
                raise ValueError(f"{username!r} is not an account of {first.name}")
            default_user, default_pw = username, found[1]
        else:
            if not first.accounts:
                raise ValueError(f"{first.name} has no accounts")
            default_user, default_pw = next(iter(first.accounts.items()))
        https = self.https
        defaults: dict[str, object] = {"scheme": "https" if https else "http", "transport": transport,
                                       "cert_validation": "validate"}
        if https and self.ca_path is not None:
            defaults["ca_trust_path"] = str(self.ca_path.resolve())
        defaults["allow_unencrypted"] = transport == "basic" and not https
        defaults.update({"username": default_user, "password": default_pw, "timeouts": dict(INVENTORY_TIMEOUTS)})
        hosts: dict[str, dict[str, object]] = {}
        for host in self.hosts:
            ep = self.endpoints[host.name]
            entry: dict[str, object] = {"address": ep.address, "port": ep.port}
            site = getattr(host, "site", None)  # EmulatedHost carries the fixture's site; LabHost need not
            if site:
                entry["site"] = site
            found = auth.match_account(host.accounts, default_user)
            if host.accounts and (found is None or found[1] != default_pw):
                user, pw = next(iter(host.accounts.items()))
                entry.update({"username": user, "password": pw})
            hosts[host.name] = entry
        doc = {"kbfix_inventory": 1, "defaults": defaults,
               "groups": {"lab": {"vars": {"lab": True}, "hosts": [h.name for h in self.hosts]}},
               "hosts": hosts}
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("# Written by winlab (kbfix lab): the lab's hosts and accounts. Lab credentials only.\n")
                yaml.safe_dump(doc, fh, sort_keys=False, default_flow_style=None, allow_unicode=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path
