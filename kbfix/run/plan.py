"""`run_plan`: a check that also plans every host's exact actions, and records the plan.

The plan document (`kbfix.planfile.PlanDocument`) is the list of the hosts' results plus
metadata; its SHA-256 digest is recorded in the audit store, so `apply --plan` can refuse a
plan that this store never made (a hand-written or edited file).
"""

from __future__ import annotations

from collections.abc import Sequence

from kbfix.planfile import PlanDocument
from kbfix.run.check import assess_host
from kbfix.run.options import RunControl, RunOptions, RunOutcome
from kbfix.run.protocols import Engine, HostLike, Progress
from kbfix.run.schedule import RunSchedule
from kbfix.store import AuditStore
from kbfix.store.history import use_store_history
from playbooks.reboot import RebootSettings


def run_plan(
    hosts: Sequence[HostLike],
    engine: Engine,
    store: AuditStore,
    options: RunOptions,
    *,
    control: RunControl | None = None,
    progress: Progress | None = None,
    reboot: RebootSettings | None = None,
) -> RunOutcome:
    """A check that also plans: every host's exact actions with the facts they rest on.
    Sessions are opened in check mode, so remoting refuses any mutating op. The outcome's
    `plan` is the reviewable plan document (write it with `PlanDocument.write`); its digest is
    recorded in `store`; `reboot`: the restart settings the plan carries for apply (issue 21),
    inside the digest like everything else a reviewer approves. Hosts unreachable or failed while planning are in the plan with that
    verdict and no actions."""
    run = RunSchedule("plan", store, options, control, progress)
    # windows (issue 13 item 1): "workaround done" comes from the store (read for all hosts at once)
    use_store_history(engine, store, [h.name for h in hosts])
    results = run.rollout(hosts, lambda h: assess_host(engine, store, run.id, h, planning=True), link=engine)
    plan = PlanDocument(
        run_id=run.id,
        created=run.info.started,
        kbfix_version=run.info.kbfix_version,
        inventory_hash=options.inventory_hash,
        hosts=[r.model_copy(update={"vars": {}}) for r in results],  # host vars stay out of the file
        reboot=reboot,
    )
    store.record_plan_document(run.id, plan.digest())
    return run.finish(results, plan)
