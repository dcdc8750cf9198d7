"""The runtime rules that hold a planned write back as the plan is carried out."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from reconciler.guards import without_write
from reconciler.model import ObjectRef, Result
from reconciler.plan import Action, ActionKind, Phase
from reconciler.report import Outcome
from tests.unit.test_plan import configmap, manifest, ref, statefulset

DB = ref(statefulset())
INIT_SQL = ref(configmap())


def _action(kind: ActionKind, target: ObjectRef = DB, app: str = "incident-db") -> Action:
    result = {
        ActionKind.CREATE: Result.CREATED,
        ActionKind.UPDATE: Result.CONFIGURED,
        ActionKind.PRUNE: Result.PRUNED,
        ActionKind.NONE: Result.UNCHANGED,
    }[kind]
    m = None if kind is ActionKind.PRUNE else manifest(statefulset())
    return Action(target, app, kind, result, Phase.SYNC, 0, m, reason="planned")


def _rule(
    action: Action,
    *,
    broken: Mapping[ObjectRef, str] | None = None,
    unreachable: str | None = None,
    held: Mapping[ObjectRef, str] | None = None,
    failed_apps: Collection[str] = (),
    dry_run: bool = False,
) -> Outcome | None:
    return without_write(
        action,
        broken=broken or {},
        unreachable=unreachable,
        held=held or {},
        failed_apps=failed_apps,
        dry_run=dry_run,
    )


def test_a_write_with_nothing_against_it_is_sent() -> None:
    for kind in (ActionKind.CREATE, ActionKind.UPDATE, ActionKind.PRUNE):
        assert _rule(_action(kind)) is None


def test_prune_is_skipped_after_an_apply_of_its_app_failed() -> None:
    prune = _action(ActionKind.PRUNE, INIT_SQL)
    outcome = _rule(prune, failed_apps={"incident-db"})
    assert outcome == Outcome(
        "incident-db",
        INIT_SQL,
        Result.SKIPPED,
        "not pruned: an apply of this app failed in this reconcile",
    )
    assert _rule(prune, failed_apps={"velero"}) is None, "another app's failure changes nothing"
    assert _rule(_action(ActionKind.UPDATE), failed_apps={"incident-db"}) is None


def test_no_write_is_sent_once_the_cluster_is_unreachable() -> None:
    why = "cluster agentic: connection refused"
    for kind in (ActionKind.CREATE, ActionKind.UPDATE, ActionKind.PRUNE):
        outcome = _rule(_action(kind), unreachable=why)
        assert outcome is not None
        assert (outcome.result, outcome.message) == (Result.SKIPPED, f"not attempted: {why}")
    unchanged = _rule(_action(ActionKind.NONE), unreachable=why)
    assert unchanged is not None and unchanged.result is Result.UNCHANGED


def test_an_object_that_could_not_be_prepared_fails_but_its_prune_goes_ahead() -> None:
    broken = {DB: "cannot be prepared: labels is not a mapping"}
    outcome = _rule(_action(ActionKind.UPDATE), broken=broken)
    assert outcome == Outcome("incident-db", DB, Result.FAILED, broken[DB])
    assert _rule(_action(ActionKind.PRUNE), broken=broken) is None


def test_a_held_object_is_not_written() -> None:
    held = {DB: "flapping: something keeps changing it back; retrying in 60s"}
    outcome = _rule(_action(ActionKind.UPDATE), held=held)
    assert outcome == Outcome("incident-db", DB, Result.SKIPPED, held[DB])


def test_an_action_without_a_write_keeps_its_planned_outcome() -> None:
    outcome = _rule(_action(ActionKind.NONE), held={DB: "flapping"})
    assert outcome == Outcome("incident-db", DB, Result.UNCHANGED, "planned")


def test_a_dry_run_writes_nothing_and_says_what_apply_would_do() -> None:
    said = {
        kind: _rule(_action(kind), dry_run=True)
        for kind in (ActionKind.CREATE, ActionKind.UPDATE, ActionKind.PRUNE)
    }
    assert {kind: (o.result, o.message) for kind, o in said.items() if o} == {
        ActionKind.CREATE: (Result.SKIPPED, "dry run: would create"),
        ActionKind.UPDATE: (Result.SKIPPED, "dry run: would update"),
        ActionKind.PRUNE: (Result.SKIPPED, "dry run: would prune"),
    }
