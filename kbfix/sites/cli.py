"""`kbfix worker`: run a per-site Celery worker (registered in kbfix/cli.py with one line).

Example: `kbfix worker --broker redis://broker.corp:6379/0 --site HQ -i hq.yml --concurrency 8`
with KBFIX_SIGN_KEY / KBFIX_SIGN_CERT / KBFIX_SIGN_STORE (or the --sign-* options) naming this
worker's key, its certificate and the certificates it trusts (the controller's). Celery is
imported only when the command runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def worker(
    broker: Annotated[str, typer.Option("--broker", envvar="KBFIX_BROKER",
                                        help="Broker URL: redis://host:6379/0 or amqp://user@host:5672/vhost. Env: KBFIX_BROKER.")],
    site: Annotated[str, typer.Option("--site", help="The site whose queue this worker consumes (hosts' `site`).")],
    inventory: Annotated[list[Path] | None, typer.Option(
        "-i", "--inventory", envvar="KBFIX_INVENTORY",
        help="This worker's own inventory (endpoints and credentials of its site's hosts).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests run at once (threads).")] = 4,
    sign_key: Annotated[Path | None, typer.Option("--sign-key", help="PEM private key. Env: KBFIX_SIGN_KEY.")] = None,
    sign_cert: Annotated[Path | None, typer.Option("--sign-cert", help="PEM certificate. Env: KBFIX_SIGN_CERT.")] = None,
    sign_store: Annotated[str | None, typer.Option(
        "--sign-store", help="Glob of trusted PEM certificates, e.g. 'certs/*.pem'. Env: KBFIX_SIGN_STORE.")] = None,
    namespace: Annotated[str, typer.Option(
        "--namespace", envvar="KBFIX_BROKER_NAMESPACE",
        help="Queue name prefix, the same on the controller. Env: KBFIX_BROKER_NAMESPACE.")] = "kbfix",
    loglevel: Annotated[str, typer.Option("--loglevel", help="Celery log level.")] = "INFO",
) -> None:
    """Consume one site's queue: run each agent request the controller sends against the site's
    hosts, with endpoints and credentials from this worker's own inventory, keyring or environment.
    Every message must be signed by a trusted certificate. Stop with Ctrl-C/SIGTERM (warm shutdown)."""
    from kbfix.config import ConfigError
    from kbfix.sites.signing import ENV_CERT, ENV_KEY, ENV_STORE, Signing
    from kbfix.sites.worker import run_worker

    if not inventory:
        typer.echo("kbfix: error: no inventory: pass -i FILE or set KBFIX_INVENTORY", err=True)
        raise typer.Exit(2)
    env = dict(os.environ)
    for name, value in ((ENV_KEY, sign_key), (ENV_CERT, sign_cert), (ENV_STORE, sign_store)):
        if value is not None:
            env[name] = str(value)
    try:
        from inventory import InventoryError

        run_worker(broker, site, inventory, Signing.from_env(env), concurrency=concurrency, namespace=namespace,
                   loglevel=loglevel)
    except (ConfigError, InventoryError) as exc:
        typer.echo(f"kbfix: error: {exc}", err=True)
        raise typer.Exit(2) from None
