"""syncpolicy: what an app's syncPolicy lets the reconciler write, and how its sync
options change single actions, on plans made by the real planner."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reconciler.model import App, GroupKind, ObjectRef, Result, SyncRequest
from reconciler.plan import Action, ActionKind, Phase, Plan, plan
from reconciler.report import Finding, FindingKind, Outcome
from reconciler.syncpolicy import (
    desired_digest,
    gate,
    keep_ignored,
    synced_apps,
    with_options,
)
from tests.unit.test_plan import (
    changed,
    configmap,
    deployment,
    infisical_secret,
    joined,
    live_copy,
    make_app,
    manifest,
    obj,
    ref,
    run,
)

MANUAL = replace(make_app(), sync_policy={})
NO_SELF_HEAL = replace(make_app(), sync_policy={"automated": {"prune": True}})


def drifting_plan(app: Any) -> Plan:
    """incident-db with a ConfigMap to create and a Deployment edited live."""
    edited = deployment()
    return run(
        [configmap(), edited],
        live=[live_copy(edited)],
        drift=[changed(edited)],
        apps=[app],
    )


def writes(the_plan: Plan) -> list[ActionKind]:
    return [a.kind for a in the_plan.writes]


def test_an_app_without_automated_writes_nothing_and_says_how_to_sync_it() -> None:
    planned = drifting_plan(MANUAL)
    assert writes(planned) == [ActionKind.CREATE, ActionKind.UPDATE]

    gated, held = gate(planned, [MANUAL], changed={"incident-db"}, requested={})

    assert gated.writes == ()
    assert held == {"incident-db"}
    skipped = [a for a in gated.actions if a.result is Result.SKIPPED]
    assert len(skipped) == 2
    assert all("run `reconciler sync --app incident-db`" in a.reason for a in skipped)
    assert gated.findings == (
        Finding(
            "incident-db",
            FindingKind.OUT_OF_SYNC,
            None,
            "syncPolicy.automated is not set: run `reconciler sync --app incident-db`",
        ),
    )


def test_a_requested_app_without_automated_is_synced_as_planned() -> None:
    planned = drifting_plan(MANUAL)
    gated, held = gate(
        planned, [MANUAL], changed=(), requested={"incident-db": SyncRequest(prune=False)}
    )
    assert gated == planned
    assert held == frozenset()


def test_an_app_without_automated_in_sync_has_no_finding() -> None:
    cm = configmap()
    planned = run([cm], live=[live_copy(cm)], apps=[MANUAL])
    gated, held = gate(planned, [MANUAL], changed=(), requested={})
    assert gated.findings == ()
    assert held == {"incident-db"}  # held all the same: nothing of it may be written


def test_without_self_heal_a_changed_desired_state_is_applied() -> None:
    planned = drifting_plan(NO_SELF_HEAL)
    gated, held = gate(planned, [NO_SELF_HEAL], changed={"incident-db"}, requested={})
    assert gated == planned
    assert held == frozenset()


def test_without_self_heal_a_live_edit_alone_is_reported_not_reverted() -> None:
    planned = drifting_plan(NO_SELF_HEAL)
    gated, held = gate(planned, [NO_SELF_HEAL], changed=(), requested={})
    assert gated.writes == ()
    assert held == {"incident-db"}
    (finding,) = gated.findings
    assert finding.kind is FindingKind.OUT_OF_SYNC
    assert finding.message.startswith("selfHeal is off: live edits are reported, not reverted")


def test_self_heal_apps_and_automated_enabled_false() -> None:
    healing = make_app()
    planned = drifting_plan(healing)
    assert gate(planned, [healing], changed=(), requested={})[0] == planned
    disabled = replace(make_app(), sync_policy={"automated": {"enabled": False, "selfHeal": True}})
    gated, _ = gate(drifting_plan(disabled), [disabled], changed={"incident-db"}, requested={})
    assert gated.writes == ()


def test_the_desired_digest_follows_the_manifests_and_options_not_the_commit() -> None:
    app = make_app()
    base = desired_digest(app, ["a: 1", "b: 2"])
    assert desired_digest(app, ["b: 2", "a: 1"]) == base
    moved = replace(app, origin=replace(app.origin, commit="feedface"))
    assert desired_digest(moved, ["a: 1", "b: 2"]) == base
    assert desired_digest(app, ["a: 1", "b: 3"]) != base
    assert desired_digest(replace(app, sync_options=("ServerSideApply=true",)), ["a: 1"]) != (
        desired_digest(app, ["a: 1"])
    )


def test_prune_propagation_policy_is_carried_to_the_prune() -> None:
    app = replace(make_app(), sync_options=("PrunePropagationPolicy=orphan",))
    old = configmap("old-settings")
    planned = run([configmap()], live=[live_copy(old)], inventory=[old], apps=[app])
    (prune,) = [a for a in planned.actions if a.kind is ActionKind.PRUNE]
    assert prune.propagation == "Background"
    carried = with_options(planned, [app], live={}, unserved=())
    (prune,) = [a for a in carried.actions if a.kind is ActionKind.PRUNE]
    assert prune.propagation == "Orphan"


def dep(**kw: Any) -> dict[str, Any]:
    return obj("apps/v1", "Deployment", "incident-api", **kw)


RESPECTING = replace(
    make_app(),
    sync_options=("RespectIgnoreDifferences=true",),
    ignore_differences=(
        {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]},
        {
            "group": "apps",
            "kind": "Deployment",
            "jqPathExpressions": [".metadata.annotations.owner"],
        },
    ),
)


def test_respect_ignore_differences_applies_the_live_value_at_ignored_paths() -> None:
    desired = dep(spec={"replicas": 1, "paused": False}, annotations={"owner": "git"})
    live = dep(spec={"replicas": 5, "paused": True}, annotations={"owner": "hpa"})
    planned = run([desired], live=[live], drift=[changed(desired)], apps=[RESPECTING])
    carried = with_options(planned, [RESPECTING], live={ref(desired): live}, unserved=())
    (update,) = carried.writes
    assert update.manifest is not None
    assert update.manifest.obj["spec"] == {"replicas": 5, "paused": False}
    assert update.manifest.obj["metadata"]["annotations"] == {"owner": "hpa"}
    assert desired["spec"]["replicas"] == 1, "the rendered manifest is left alone"


def test_respect_ignore_differences_drops_an_ignored_field_live_does_not_have() -> None:
    desired = dep(spec={"replicas": 3})
    live = dep(spec={})
    assert keep_ignored(desired, live, RESPECTING)["spec"] == {}


def test_without_respect_ignore_differences_git_is_applied_as_it_is() -> None:
    app = replace(RESPECTING, sync_options=())
    desired = dep(spec={"replicas": 1})
    live = dep(spec={"replicas": 5})
    planned = run([desired], live=[live], drift=[changed(desired)], apps=[app])
    assert with_options(planned, [app], live={ref(desired): live}, unserved=()) == planned


def test_skip_dry_run_on_missing_resource_makes_the_object_wait_not_fail() -> None:
    secret = infisical_secret()
    kind = GroupKind("secrets.infisical.com", "InfisicalSecret")

    def planned(app: App) -> Plan:
        pairs = joined([manifest(secret), manifest(configmap())], {}, {})
        the_plan = plan(
            apps=[app],
            pairs=pairs,
            drift={},
            mode="apply",
            protected=lambda _: None,
            unserved={kind},
        )
        return with_options(the_plan, [app], live={}, unserved={kind})

    def outcome(the_plan: Plan) -> tuple[Result, str]:
        (action,) = [a for a in the_plan.actions if a.ref == ref(secret)]
        return action.result, action.reason

    assert outcome(planned(make_app()))[0] is Result.FAILED
    skipping = replace(make_app(), sync_options=("SkipDryRunOnMissingResource=true",))
    result, reason = outcome(planned(skipping))
    assert result is Result.SKIPPED
    assert reason.startswith("waiting: the cluster does not serve InfisicalSecret")


def _action(app: str, kind: ActionKind, name: str = "x") -> Action:
    return Action(ObjectRef("", "ConfigMap", "ns", name), app, kind, Result.CREATED, Phase.SYNC, 0)


def test_only_apps_whose_sync_completed_are_recorded_as_synced() -> None:
    apps = [replace(make_app(), name=name) for name in ("ok", "held", "broken", "failed", "wait")]

    def step(app: str, kind: ActionKind, result: Result, message: str = "") -> Any:
        action = _action(app, kind)
        return action, Outcome(app, action.ref, result, message)

    steps = [
        step("ok", ActionKind.CREATE, Result.CREATED),
        step("ok", ActionKind.NONE, Result.SKIPPED, "prune blocked: guard"),
        step("failed", ActionKind.UPDATE, Result.FAILED, "422"),
        step("wait", ActionKind.NONE, Result.SKIPPED, "waiting: kind cannot be listed"),
        step("held", ActionKind.CREATE, Result.SKIPPED, "flapping"),
    ]
    done = synced_apps(steps, apps, held={"held"}, failed={"broken"})
    assert done == {"ok"}
