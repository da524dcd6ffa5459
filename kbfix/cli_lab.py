"""`kbfix lab …`: run the embedded WS-Management lab (winlab)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import typer

lab_app = typer.Typer(help="Run the embedded WS-Management lab that emulates Windows site servers.", no_args_is_help=True,
                      rich_markup_mode=None)

DEFAULT_INVENTORY = Path("kbfix-lab-inventory.yaml")


def _start_kdc(site: list, workdir: Path | None) -> Any:  # type: ignore[type-arg]
    """Start the lab realm's KDC for `site` (exit 2 with the install hint when it cannot run)."""
    from winlab.kdc import KdcError
    from winlab.kerberos_lab import kdc_for

    try:
        kdc = kdc_for(site, workdir=(workdir / "kdc") if workdir else None)
        kdc.start()
    except (KdcError, ValueError) as exc:
        typer.echo(f"kbfix lab: {exc}", err=True)
        raise typer.Exit(2) from None
    return kdc


def _peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@lab_app.command("up")
def up(
    fixtures: Annotated[Path | None, typer.Option(
        "--fixtures", "-f", help="A fixture YAML file or a folder of them (default: the shipped demo site).",
        exists=True)] = None,
    hosts: Annotated[int | None, typer.Option(
        "--hosts", "-n", min=1, max=20000, help="Clone the site to N hosts (scale runs).")] = None,
    https: Annotated[bool, typer.Option("--https", help="Serve HTTPS with a generated CA (its ca.pem goes into the inventory).")] = False,
    transport: Annotated[str, typer.Option(
        "--transport",
        help="Transport written into the inventory: ntlm (sealed messages), basic, or kerberos (starts a "
             "throwaway MIT KDC on loopback; needs krb5-kdc, krb5-admin-server and kbfix[kerberos]).")] = "ntlm",
    inventory_out: Annotated[Path, typer.Option(
        "--inventory-out", "-o", help="Where to write the inventory for the served hosts.")] = DEFAULT_INVENTORY,
    distinct_addresses: Annotated[bool, typer.Option(
        "--distinct-addresses", help="Give each host its own 127.x.y.z address instead of its own port.")] = False,
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535,
        help="Listening port; 0 = an ephemeral port per host. With --distinct-addresses, 5985 (or 5986 "
             "with --https) gives every host Windows' own WinRM port.")] = 0,
    workdir: Annotated[Path | None, typer.Option(
        "--workdir", help="Keep the CA and credential files here (default: a temporary folder).")] = None,
) -> None:
    """Serve emulated Windows hosts over WinRM on loopback until Ctrl-C or SIGTERM.

    Writes an inventory for the served hosts once every listener accepts, then prints a summary of
    what each host saw when it stops. Example:

        kbfix lab up --https --inventory-out lab.yaml
        kbfix check -i lab.yaml          # in another terminal

    Scale run: `kbfix lab up --hosts 1000 --distinct-addresses --port 5985`.
    """
    if transport not in ("ntlm", "basic", "kerberos"):
        raise typer.BadParameter("use ntlm, basic or kerberos", param_hint="--transport")
    chosen: Literal["ntlm", "basic"] = "basic" if transport == "basic" else "ntlm"
    from winlab import fixtures as fixture_module
    from winlab.lab import Lab

    started = time.monotonic()
    try:
        site = fixture_module.load_fixtures(fixtures) if fixtures else fixture_module.demo_site()
        if hosts:
            site = fixture_module.clone_site(site, hosts)
    except ValueError as exc:  # FixtureError is a ValueError naming file, line and field
        typer.echo(f"kbfix lab: {exc}", err=True)
        raise typer.Exit(2) from None
    loaded = time.monotonic()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        if port and not distinct_addresses and len(site) > 1:
            raise typer.BadParameter("one port for several hosts needs --distinct-addresses", param_hint="--port")
        with contextlib.ExitStack() as stack:
            kdc = _start_kdc(site, workdir) if transport == "kerberos" else None
            if kdc is not None:
                stack.callback(kdc.stop)
            lab = stack.enter_context(
                Lab(site, https=https, distinct_addresses=distinct_addresses, workdir=workdir, port=port))
            listening = time.monotonic()
            if kdc is not None:
                from winlab.kerberos_lab import write_kerberos_inventory

                path = write_kerberos_inventory(lab, kdc, inventory_out)
            else:
                path = lab.write_inventory(inventory_out, transport=chosen)
            for ep in list(lab.endpoints.values())[:10]:
                typer.echo(f"  {ep.name:<16} {ep.url}")
            if len(lab.endpoints) > 10:
                typer.echo(f"  … and {len(lab.endpoints) - 10} more")
            typer.echo(
                f"kbfix lab: {len(site)} hosts listening ({'https' if https else 'http'}, {transport}); "
                f"loaded in {loaded - started:.2f} s, listening in {listening - loaded:.2f} s; "
                f"peak RSS {_peak_rss_mib():.0f} MiB"
            )
            if lab.ca_path:
                typer.echo(f"kbfix lab: CA file {lab.ca_path}")
            if kdc is not None:
                typer.echo(f"kbfix lab: KDC for realm {kdc.realm} on 127.0.0.1:{kdc.port}; in the client's shell: "
                           f"export KRB5_CONFIG={kdc.krb5_conf}")
            typer.echo(f"kbfix lab: inventory {path}  (Ctrl-C to stop)")
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            typer.echo("\n" + lab.summary())
    finally:
        signal.signal(signal.SIGTERM, previous)
