"""A site worker SIGKILLed while it runs an installer (real Celery worker, real Redis, the lab):
the mutating request is never delivered again, the controller records the host `unknown`
(OutcomeUnknownError) within seconds instead of hanging, and `apply --resume` through a new
worker re-reads the host and completes without running the installer a second time."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from inventory import load_inventory
from kbfix.runner import RunOptions, run_apply, run_plan
from kbfix.sites.dispatch import BrokerEngine
from kbfix.store import AuditStore
from playbooks.model import Status
from tests import sitesrig
from tests.test_run_lab import demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

HOST = "WSUS-SP1"  # site HQ; one KB954960 install in the plan
SCALE = 2.5  # the fixture's 2 s installer takes 5 s


def _installs(lab: Lab) -> list[float]:
    return [m.at for m in lab.records(HOST).mutations if m.op == "installer.run"]


def test_worker_killed_during_install_gives_unknown_and_resume_completes_without_rerun(tmp_path: Path) -> None:
    url, ns = sitesrig.redis_url(), sitesrig.namespace()
    ids = sitesrig.identities(tmp_path)
    packages = make_packages(tmp_path / "pkgs")
    lab_hosts = load_host_fixture_text(demo_text(time_scale=SCALE), "demo", DEMO_SITE.parent)
    with Lab(lab_hosts) as lab:
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        hosts = [h for h in load_inventory([inventory]).select(None) if h.name == HOST]
        dispatcher = sitesrig.controller_dispatcher(url, ids, ns, ping_s=1.0, liveness_ttl_s=1.0)
        engine = BrokerEngine(dispatcher, packages_dir=packages)
        workers = [sitesrig.start_worker(url, "HQ", inventory, ns, ids.worker, tmp_path)]
        try:
            sitesrig.wait_for_sites(dispatcher, ["HQ"], workers)
            with AuditStore.in_dir(tmp_path / "state") as store:
                plan = run_plan(hosts, engine, store, RunOptions()).plan
                assert plan is not None and plan.host(HOST).actions == 1  # type: ignore[union-attr]
                outcome: list = []
                t = threading.Thread(target=lambda: outcome.append(run_apply(hosts, engine, store, RunOptions(), plan=plan)))
                t.start()
                deadline = time.monotonic() + 60
                while not _installs(lab):
                    assert time.monotonic() < deadline, "the installer did not start: " + workers[0].output()[-2000:]
                    time.sleep(0.02)
                workers[0].proc.send_signal(signal.SIGKILL)
                workers[0].proc.wait(10)
                killed_at = time.monotonic()
                t.join(60)
                assert not t.is_alive()
                noticed_s = time.monotonic() - killed_at
                [first] = outcome[0].results
                assert first.status is Status.UNKNOWN, first
                assert first.error is not None and first.error.kind == "unknown"
                assert "no worker for the site is left" in first.error.message
                assert noticed_s < 15, noticed_s  # the lost worker is noticed by its missing ping, not at the deadline
                run_id = outcome[0].info.id
                assert [r["outcome"] for r in store.intents(run_id)] == ["unknown"]

                # The lab finishes the install the dead worker had started; a new worker comes up.
                time.sleep(max(0.0, _installs(lab)[0] + 2 * SCALE + 0.5 - time.time()))
                workers.append(sitesrig.start_worker(url, "HQ", inventory, ns, ids.worker, tmp_path))
                sitesrig.wait_for_sites(dispatcher, ["HQ"], workers[1:])
                time.sleep(2)  # a redelivered copy of the mutating message, if there were one, would run now
                assert len(_installs(lab)) == 1
                resumed = run_apply(hosts, engine, store, RunOptions(), resume=run_id)
                [final] = resumed.results
                assert final.status in (Status.REMEDIATED, Status.COMPLIANT), final
                assert len(_installs(lab)) == 1  # at most once: never run again
                assert [r for r in store.intents(resumed.info.id) if r["kind"] == "install_package"] == []
        finally:
            sitesrig.stop_workers(workers)
