"""What a reconcile records: each app's verdict and the inventory after its writes."""

from __future__ import annotations

from reconciler.model import InventoryItem, Result
from reconciler.pairs import join
from reconciler.plan import WAITING, Action, ActionKind, Phase
from reconciler.record import app_records, inventory_after
from reconciler.report import ArgoStatus, ObjectError, Outcome, Report
from tests.unit.test_plan import (
    changed,
    configmap,
    live_copy,
    make_app,
    manifest,
    ref,
    service,
    statefulset,
)

DB, API = make_app(), make_app("incident-api")


def test_an_app_with_drift_or_an_error_is_out_of_sync() -> None:
    waiting = Outcome("incident-api", ref(service()), Result.SKIPPED, f"{WAITING}kind Service")
    report = Report(
        cluster="agentic",
        mode="apply",
        drifts=(("incident-db", changed(statefulset())),),
        violations=(),
        errors=(),
        outcomes=(waiting,),
    )
    records = {r.app: r for r in app_records(report, [DB, API], {"incident-db": "Healthy"})}
    assert (records["incident-db"].sync, records["incident-db"].drift) == ("OutOfSync", 1)
    assert records["incident-db"].health == "Healthy"
    assert records["incident-api"].sync == "OutOfSync"
    assert records["incident-api"].error == f"{ref(service())}: {WAITING}kind Service"


def test_the_first_error_of_an_app_is_kept_and_argo_cd_health_wins() -> None:
    report = Report(
        cluster="prod",
        mode="report",
        drifts=(),
        violations=(),
        errors=(ObjectError("incident-db", None, "first"), ObjectError("incident-db", None, "2")),
        argocd={"incident-db": ArgoStatus("Synced", "Degraded")},
    )
    (record,) = app_records(report, [DB], {"incident-db": "Healthy"})
    assert (record.sync, record.error, record.health) == ("OutOfSync", "first", "Degraded")


def test_inventory_after_drops_pruned_and_adds_applied_with_gits_api_version() -> None:
    applied, pruned, failed = statefulset(), configmap(), service()
    pairs = join(
        [manifest(applied)],
        {ref(o): live_copy(o) for o in (pruned, failed)},
        [
            InventoryItem("incident-db", ref(pruned), "v1"),
            InventoryItem("incident-db", ref(failed), "v1beta"),
        ],
    )
    steps = [
        (
            Action(
                ref(applied),
                "incident-db",
                ActionKind.CREATE,
                Result.CREATED,
                Phase.SYNC,
                0,
                tracked=True,
            ),
            Outcome("incident-db", ref(applied), Result.CREATED),
        ),
        (
            Action(ref(pruned), "incident-db", ActionKind.PRUNE, Result.PRUNED, Phase.PRUNE, 0),
            Outcome("incident-db", ref(pruned), Result.PRUNED),
        ),
        (
            Action(ref(failed), "incident-db", ActionKind.PRUNE, Result.PRUNED, Phase.PRUNE, 0),
            Outcome("incident-db", ref(failed), Result.FAILED, "refused"),
        ),
    ]
    assert inventory_after(pairs, steps) == [
        InventoryItem("incident-db", ref(failed), "v1beta"),
        InventoryItem("incident-db", ref(applied), "apps/v1"),
    ]
