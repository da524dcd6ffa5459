"""A throwaway MIT Kerberos realm on loopback for the lab: a real `krb5kdc`, its database, a keytab.

Owns: the realm's files in one temporary folder (kdc.conf, krb5.conf, database, stash, keytab,
log), its principals (users with passwords, `HTTP/<host>` services with random keys written to
the keytab, as `setspn` + a machine account give a Windows server), the `krb5kdc` process on a
free 127.0.0.1 port (UDP and TCP), and the environment (KRB5_CONFIG, KRB5_KDC_PROFILE,
KRB5_KTNAME) that points libkrb5 in this process at it.

Tools: Debian's `krb5-kdc` (`krb5kdc`, `kdb5_util`), `krb5-admin-server` (only `kadmin.local`,
which edits the database directly; `kadmind` is never started) and, for the clock-skew case,
libfaketime from `faketime` (preloaded into the KDC, whose clock it moves; the client's krb5.conf sets `kdc_timesync = 0`
so libkrb5 reports the skew instead of compensating for it, MIT krb5.conf(5)).

The krb5.conf written here turns DNS off (`dns_lookup_kdc`, `dns_lookup_realm`,
`dns_canonicalize_hostname`, `rdns` false) so a lab host name is used exactly as written, and
maps the lab's DNS domain to the realm in `[domain_realm]`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

REALM = "LAB.TEST"
DOMAIN = "lab.test"
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local")
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
INSTALL_HINT = ("apt-get install -y krb5-kdc krb5-admin-server krb5-user libkrb5-dev "
                "(Debian/Ubuntu; faketime too for the clock-skew test)")


class KdcError(RuntimeError):
    """The lab KDC could not be set up or started (missing tools, a failing command)."""


def find_tool(name: str) -> str | None:
    """Absolute path of a Kerberos tool (also looks in sbin folders, often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in _SBIN:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


_LIBFAKETIME = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/faketime/libfaketime.so.1", "/usr/lib64/faketime/libfaketime.so.1")


def find_libfaketime() -> Path | None:
    """libfaketime (Debian package `faketime`/`libfaketime`), or None."""
    return next((Path(p) for p in _LIBFAKETIME if Path(p).is_file()), None)


def missing_tools(*, faketime: bool = False) -> list[str]:
    """The tools this machine lacks for a lab KDC (empty when it can run one)."""
    missing = [t for t in TOOLS if find_tool(t) is None]
    if faketime and find_libfaketime() is None:
        missing.append("faketime (libfaketime)")
    return missing


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return int(port)
    raise KdcError("no free port for the KDC")


class LabKdc:
    """A realm with a running KDC. Use as a context manager or call `start()`/`stop()`.

    users: principal name (without realm) → password; services: host names (FQDN) that get an
    `HTTP/<host>` principal in the keytab; skew_s: run the KDC with its clock this many seconds
    ahead (needs faketime). After `start()`: `krb5_conf`, `keytab`, `port`, `env` (the variables
    a client process needs) are set and this process's environment points at the realm.
    """

    def __init__(self, users: Mapping[str, str], services: list[str], *, realm: str = REALM,
                 domain: str = DOMAIN, workdir: Path | None = None, skew_s: int = 0,
                 set_environ: bool = True) -> None:
        self.realm = realm
        self.domain = domain
        self.users = dict(users)
        self.services = list(services)
        self.skew_s = skew_s
        self.set_environ = set_environ
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kbfix-kdc-"))
        self.port = 0
        self.krb5_conf = self.dir / "krb5.conf"
        self.kdc_conf = self.dir / "kdc.conf"
        self.keytab = self.dir / "http.keytab"
        self.log = self.dir / "kdc.log"
        self.stderr_path = self.dir / "krb5kdc.stderr"
        self._proc: subprocess.Popen[bytes] | None = None
        self._saved: dict[str, str | None] = {}

    # ------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LabKdc:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """Variables pointing libkrb5 at this realm (for this process or a client shell)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.kdc_conf),
                "KRB5_KTNAME": f"FILE:{self.keytab}"}

    def principal(self, user: str) -> str:
        """`user@REALM`."""
        return f"{user}@{self.realm}"

    def service_principal(self, host: str) -> str:
        """`HTTP/host@REALM`, the SPN WinRM registers (MS docs: "Kerberos SPNs for WinRM" use HTTP/)."""
        return f"HTTP/{host}@{self.realm}"

    def start(self) -> None:
        """Create the realm, its principals and keytab, start krb5kdc; raise KdcError on failure
        (after cleaning up whatever was started)."""
        missing = missing_tools(faketime=bool(self.skew_s))
        if missing:
            raise KdcError(f"cannot run a lab KDC: {', '.join(missing)} not installed; {INSTALL_HINT}")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self._write_configs()
        master = secrets.token_urlsafe(24)
        self._run([find_tool("kdb5_util") or "kdb5_util", "create", "-s", "-r", self.realm, "-P", master])
        queries = [f"addprinc +requires_preauth -pw {pw} {self.principal(user)}" for user, pw in self.users.items()]
        for host in self.services:
            queries.append(f"addprinc -randkey {self.service_principal(host)}")
            queries.append(f"ktadd -k {self.keytab} {self.service_principal(host)}")
        # One kadmin.local for all principals: it reads its commands from stdin.
        self._run([find_tool("kadmin.local") or "kadmin.local", "-r", self.realm], stdin="\n".join(queries) + "\n")
        argv = [find_tool("krb5kdc") or "krb5kdc", "-n", "-r", self.realm]
        env = self._tool_env()
        if self.skew_s:
            # libfaketime preloaded into krb5kdc itself (not the `faketime` wrapper, which would be
            # the process we stop, leaving the KDC and its shared-memory segment behind).
            env.update({"LD_PRELOAD": str(find_libfaketime()), "FAKETIME": f"{self.skew_s:+d}",
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        # stderr to a file, not a pipe nobody drains (a full pipe would stall the KDC).
        with self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        self._wait_listening()
        if self.set_environ:
            for key, value in self.env.items():
                self._saved[key] = os.environ.get(key)
                os.environ[key] = value

    def stop(self) -> None:
        """Stop the KDC, restore the environment, remove the realm's files (when ours)."""
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------------------------- helpers

    def _write_configs(self) -> None:
        d = self.dir
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"    kdc_listen = 127.0.0.1:{self.port}\n    kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        database_name = {d / 'principal'}\n        key_stash_file = {d / 'stash'}\n"
            f"        acl_file = {d / 'kadm5.acl'}\n"
            f"        kdc_listen = 127.0.0.1:{self.port}\n        kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            "        max_life = 10h 0m 0s\n        max_renewable_life = 1d 0h 0m 0s\n"
            "        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            "    }\n"
            f"[logging]\n    kdc = FILE:{self.log}\n",
            encoding="utf-8",
        )
        (d / "kadm5.acl").write_text("", encoding="utf-8")
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {self.realm}\n"
            "    dns_lookup_kdc = false\n    dns_lookup_realm = false\n"
            "    dns_canonicalize_hostname = false\n    rdns = false\n"
            "    kdc_timesync = 0\n    udp_preference_limit = 1\n"
            f"    default_ccache_name = FILE:{d / 'ccache'}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n        kdc = 127.0.0.1:{self.port}\n    }}\n"
            "[domain_realm]\n"
            f"    .{self.domain} = {self.realm}\n    {self.domain} = {self.realm}\n",
            encoding="utf-8",
        )

    def _tool_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
        env.update(self.env)
        return env

    def _run(self, argv: list[str], stdin: str | None = None) -> None:
        done = subprocess.run(argv, env=self._tool_env(), capture_output=True, timeout=300, check=False,
                              input=stdin.encode() if stdin is not None else None)
        err = done.stderr.decode(errors="replace")
        # kadmin.local exits 0 even when a command from stdin fails; it says so on stderr.
        if done.returncode != 0 or "error" in err.lower() or "while " in err:
            # stdin holds lab passwords (addprinc -pw): only the tool's own error text is shown.
            raise KdcError(f"{Path(argv[0]).name} failed ({done.returncode}): {err[-300:]}")

    def _wait_listening(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                err = self.stderr_path.read_text(encoding="utf-8", errors="replace")
                raise KdcError(f"krb5kdc exited ({self._proc.returncode}): {err[-300:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise KdcError(f"krb5kdc did not listen on 127.0.0.1:{self.port} within {timeout_s:g} s")


@contextlib.contextmanager
def lab_kdc(users: Mapping[str, str], services: list[str], **kwargs: object) -> Iterator[LabKdc]:
    """`with lab_kdc({"kbfix": "pw"}, ["wsus01.lab.test"]) as kdc:` — see `LabKdc`."""
    kdc = LabKdc(users, services, **kwargs)  # type: ignore[arg-type]
    kdc.start()
    try:
        yield kdc
    finally:
        kdc.stop()
