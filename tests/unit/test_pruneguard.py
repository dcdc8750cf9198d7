"""The prune guard: small prunes go, mass deletions wait for a person and say so, objects'
own Prune=/Delete= options hold, and an Application removed from git deletes or orphans
its objects as its finalizer says, never on a catalogue it could not read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from reconciler.model import App, AppError, Result, SyncRequest
from reconciler.plan import ActionKind, Plan, plan
from reconciler.pruneguard import (
    AppTrace,
    Departure,
    Fate,
    Limits,
    deletes_resources,
    departure,
    guard,
    object_options,
)
from reconciler.report import FindingKind
from tests.unit.test_plan import (
    Obj,
    by_ref,
    configmap,
    deployment,
    joined,
    live_copy,
    make_app,
    manifest,
    nothing_protected,
    policy_protection,
    pvc,
    ref,
    run,
    service,
    statefulset,
)

GONE = "old-api"
TRACE = AppTrace(GONE, "agentic_lab", "kubernetes/argocd-apps/old-api.yaml", True)
FINALIZER = "resources-finalizer.argocd.argoproj.io"


def pruned(p: Plan) -> list[str]:
    return sorted(a.ref.name for a in p.actions if a.kind is ActionKind.PRUNE)


def configmaps(n: int, prefix: str = "cm", **kw: Any) -> list[Obj]:
    return [configmap(f"{prefix}-{i:02d}", **kw) for i in range(n)]


def options(value: str) -> dict[str, str]:
    return {"argocd.argoproj.io/sync-options": value}


# -- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finalizers", "deletes"),
    [
        ([FINALIZER], True),
        ([f"{FINALIZER}/foreground"], True),
        (["kubernetes", f"{FINALIZER}/background"], True),
        ([f"{FINALIZER}/sideways"], False),
        (["kubernetes"], False),
        (None, False),
        (FINALIZER, False),  # not a list: Argo CD would refuse the Application
    ],
)
def test_the_resources_finalizer_in_each_form_deletes_resources(
    finalizers: Any, deletes: bool
) -> None:
    assert deletes_resources(finalizers) is deletes


def test_object_sync_options_are_read_from_the_comma_separated_annotation() -> None:
    obj = configmap(annotations=options("ServerSideApply=true, Prune=confirm,Delete=false,bad"))
    assert object_options(obj) == {
        "ServerSideApply": "true",
        "Prune": "confirm",
        "Delete": "false",
        "bad": "",  # read as an app's option is: a name with no value matches no value
    }
    assert object_options(configmap()) == {}


def _departure(
    trace: AppTrace | None = TRACE,
    *,
    catalogued: Iterable[App] = (),
    errors: Iterable[AppError] = (),
    commits: Iterable[str] = ("agentic_lab",),
) -> Departure:
    return departure(GONE, trace, catalogued=catalogued, errors=errors, commits=frozenset(commits))


def test_an_application_removed_with_the_finalizer_deletes_and_without_orphans() -> None:
    assert _departure().fate is Fate.DELETE
    orphan = _departure(AppTrace(GONE, TRACE.repo, TRACE.path, False))
    assert orphan.fate is Fate.ORPHAN
    assert "removed from git without the resources finalizer" in orphan.why


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"commits": ()}, "repo agentic_lab could not be read"),
        # A YAML error in the Application's own file: its catalogue error names the file.
        ({"errors": [AppError(f"agentic_lab:{TRACE.path}", "line 3: bad indent")]}, "error"),
        # The file moved and broke in one commit: any unreadable file of the repo keeps it.
        ({"errors": [AppError("agentic_lab:kubernetes/argocd-apps/x.yaml", "bad")]}, "error"),
        ({"errors": [AppError(GONE, "spec.source is required", "agentic")]}, "error"),
        ({"errors": [AppError("renamed", f"agentic_lab:{TRACE.path}: metadata.name")]}, "error"),
        ({"trace": None}, "not on record"),
    ],
)
def test_an_app_is_never_taken_for_removed_on_a_catalogue_that_may_hide_it(
    kw: dict[str, Any], why: str
) -> None:
    found = _departure(**kw)
    assert found.fate is Fate.KEEP
    assert why in found.why


def test_an_application_moved_to_another_cluster_orphans_what_it_left() -> None:
    moved = make_app(GONE)
    found = _departure(catalogued=[replace(moved, cluster="monit")])
    assert found.fate is Fate.ORPHAN
    assert "now destined for monit" in found.why


def test_a_small_prune_passes_the_floor_whatever_its_share() -> None:
    limits = Limits(floor=5, max_share=0.5)
    assert guard({"beszel": 2}, {"beszel": 3}, limits) == {}
    assert guard({"web": 5}, {"web": 5}, limits) == {}
    held = guard({"web": 6}, {"web": 10}, limits)
    assert held == {"web": held["web"]} and "6 of the app's 10 objects" in held["web"]
    assert guard({"web": 6}, {"web": 12}, limits) == {}, "half or less passes"


def test_many_small_prunes_that_empty_the_cluster_are_held_together() -> None:
    losing = {f"app-{i}": 3 for i in range(4)}
    held = guard(losing, {**{app: 3 for app in losing}, "big": 4}, Limits(5, 0.5))
    assert set(held) == set(losing)
    assert all("12 of the cluster's 16 objects" in why for why in held.values())
    assert guard(losing, {**{app: 3 for app in losing}, "big": 20}, Limits(5, 0.5)) == {}


def test_an_app_held_alone_still_counts_towards_the_cluster_share() -> None:
    held = guard({"big": 13, "small": 3}, {"big": 14, "small": 4, "other": 10}, Limits(5, 0.5))
    assert "13 of the app's 14 objects" in held["big"]
    assert "16 of the cluster's 28 objects" in held["small"]


def test_limits_refuse_values_outside_their_range() -> None:
    with pytest.raises(ValueError, match="max_prune_share"):
        Limits(5, 1.5)
    with pytest.raises(ValueError, match="prune_floor"):
        Limits(-1, 0.5)


# -- through plan() ------------------------------------------------------------------------


def test_a_small_app_losing_two_of_three_objects_prunes_them() -> None:
    # monit's beszel: Deployment and Service leave git, the PVC stays.
    owned = [deployment("beszel"), service("beszel"), pvc("beszel-data")]

    p = run([pvc("beszel-data")], live=owned, inventory=owned)

    assert pruned(p) == ["beszel", "beszel"]
    assert p.findings == () and p.notes == {}


def test_a_held_prune_is_skipped_with_why_and_a_finding_lists_objects_and_the_command() -> None:
    owned = configmaps(14)

    p = run(owned[:1], live=owned, inventory=owned)

    held = [a for a in p.actions if a.ref.name != "cm-00"]
    assert len(held) == 13
    assert all(a.result is Result.SKIPPED and "mass-deletion guard" in a.reason for a in held)
    (finding,) = p.findings
    assert (finding.app, finding.kind, finding.ref) == (
        "incident-db",
        FindingKind.PRUNE_BLOCKED,
        None,
    )
    assert finding.message.startswith("13 objects not pruned: mass-deletion guard: 13 of")
    assert "ConfigMap ai-platform/cm-01, " in finding.message
    assert "cm-10" in finding.message and "cm-11" not in finding.message
    assert "and 3 more" in finding.message
    assert finding.message.endswith("confirm with `reconciler sync --app incident-db --prune`")


def test_a_confirmed_prune_passes_the_guards_but_not_the_protections() -> None:
    owned = [*configmaps(12), pvc()]
    confirm = {"incident-db": SyncRequest(prune=True)}

    p = run(owned[:1], live=owned, inventory=owned, requested=confirm)
    unconfirmed = run(owned[:1], live=owned, inventory=owned, requested={"x": SyncRequest(True)})
    manual = run(owned[:1], live=owned, inventory=owned, requested={"incident-db": SyncRequest()})

    assert len(pruned(p)) == 11 and p.findings == ()
    assert by_ref(p)[ref(pvc())].reason.startswith("protected: ")
    assert pruned(unconfirmed) == [] and pruned(manual) == []


def test_the_cluster_guard_holds_a_commit_that_empties_most_of_the_cluster() -> None:
    apps = [make_app(f"app-{i}", "apps") for i in range(4)]
    objects = {app.name: configmaps(3, app.name) for app in apps}
    live = [o for objs in objects.values() for o in objs]

    def cluster_plan(requested: Mapping[str, SyncRequest] | None = None) -> Plan:
        # Each app keeps one object and loses two: 8 of 12 objects at once.
        desired = [manifest(objs[0], app) for app, objs in objects.items()]
        return plan(
            apps=apps,
            pairs=joined(
                desired,
                {ref(o): live_copy(o) for o in live},
                {app: [ref(o) for o in objs] for app, objs in objects.items()},
            ),
            drift={},
            mode="apply",
            protected=nothing_protected,
            prune_floor=5,
            requested=requested,
        )

    held = cluster_plan()
    confirmed = cluster_plan({"app-0": SyncRequest(prune=True)})

    assert pruned(held) == []
    assert sorted(f.app for f in held.findings) == [a.name for a in apps]
    assert all("8 of the cluster's 12 objects" in f.message for f in held.findings)
    # app-0's two go as confirmed; the other six are no more than half the cluster.
    assert len(pruned(confirmed)) == 8


@pytest.mark.parametrize(
    ("automated", "requested", "prunes"),
    [
        ({"prune": False}, None, False),
        ({"prune": False}, SyncRequest(prune=True), True),
        ({"prune": True, "enabled": False}, None, False),
        (None, SyncRequest(prune=False), False),
        (None, SyncRequest(prune=True), True),
    ],
)
def test_automated_prune_off_waits_for_sync_with_prune(
    automated: Mapping[str, Any] | None, requested: SyncRequest | None, prunes: bool
) -> None:
    owned = [statefulset(), service()]
    policy = {"automated": automated} if automated is not None else {}
    app = replace(make_app(), sync_policy=policy)

    p = run(
        [statefulset()],
        live=owned,
        inventory=owned,
        apps=[app],
        requested={"incident-db": requested} if requested else None,
    )

    assert pruned(p) == (["postgresql"] if prunes else [])
    if not prunes:
        (finding,) = p.findings
        assert "automated prune is off" in finding.message
        assert "Service ai-platform/postgresql" in finding.message


@pytest.mark.parametrize(("allow_empty", "prunes"), [(False, False), (True, True)])
def test_an_empty_render_prunes_only_with_allow_empty(allow_empty: bool, prunes: bool) -> None:
    owned = [statefulset(), service()]
    policy = {"automated": {"prune": True, "allowEmpty": allow_empty}}
    app = replace(make_app(), sync_policy=policy)

    p = run([], live=owned, inventory=owned, apps=[app])

    assert len(pruned(p)) == (2 if prunes else 0)
    if not prunes:
        (finding,) = p.findings
        assert "render produced no objects" in finding.message


def test_prune_false_keeps_and_prune_confirm_waits_for_a_person() -> None:
    keep = configmap("keep", annotations=options("Prune=false"))
    ask = configmap("ask", annotations=options("ServerSideApply=true,Prune=confirm"))
    owned = [statefulset(), keep, ask]

    p = run([statefulset()], live=owned, inventory=owned, protected=nothing_protected)
    confirmed = run(
        [statefulset()],
        live=owned,
        inventory=owned,
        protected=nothing_protected,
        requested={"incident-db": SyncRequest(prune=True)},
    )

    actions = by_ref(p)
    assert actions[ref(keep)].result is Result.SKIPPED
    assert actions[ref(keep)].reason.startswith("Prune=false")
    assert actions[ref(ask)].reason.startswith("prune blocked: Prune=confirm")
    (finding,) = p.findings
    assert "1 object not pruned: Prune=confirm" in finding.message
    assert "ConfigMap ai-platform/ask" in finding.message
    assert pruned(confirmed) == ["ask"]


def _removed(fate: Fate, owned: list[Obj], live: list[Obj] | None = None, **kw: Any) -> Plan:
    live = owned if live is None else live
    return plan(
        apps=[make_app()],
        pairs=joined(
            [manifest(statefulset())],
            {ref(o): live_copy(o) for o in [statefulset(), *live]},
            {"incident-db": [ref(statefulset())], GONE: [ref(o) for o in owned]},
        ),
        drift={},
        mode="apply",
        protected=policy_protection,
        departed={GONE: Departure(fate, f"{fate.value} why")},
        **kw,
    )


def test_an_app_removed_with_the_finalizer_prunes_all_but_delete_false() -> None:
    kept = configmap("kept", annotations=options("Delete=false"))
    confirm = configmap("confirm", annotations=options("Delete=confirm"))
    owned = [deployment(), service(), kept, confirm, pvc()]

    p = _removed(Fate.DELETE, owned)

    assert pruned(p) == ["incident-api", "postgresql"]
    actions = by_ref(p)
    assert actions[ref(kept)].reason.startswith("Delete=false")
    orphans = {f.ref: f for f in p.findings if f.kind is FindingKind.ORPHANED}
    assert set(orphans) == {ref(kept), ref(pvc())}
    assert orphans[ref(kept)].message == "kept by Delete=false: delete why"
    (waits,) = [f for f in p.findings if f.kind is FindingKind.PRUNE_BLOCKED]
    assert waits.app == GONE and "Delete=confirm" in waits.message
    assert f"reconciler sync --app {GONE} --prune" in waits.message


def test_an_app_removed_without_the_finalizer_orphans_and_lists_each_live_object() -> None:
    owned = [deployment(), service()]

    p = _removed(Fate.ORPHAN, owned, live=[deployment()])

    assert p.writes == ()
    actions = by_ref(p)
    assert actions[ref(deployment())].reason == "orphaned: orphan why"
    # Deleted by someone since: it leaves the inventory, and the list.
    assert actions[ref(service())].result is Result.PRUNED
    assert actions[ref(service())].kind is ActionKind.NONE
    assert [(f.kind, f.ref, f.message) for f in p.findings] == [
        (FindingKind.ORPHANED, ref(deployment()), "orphan why")
    ]


def test_an_app_not_known_removed_keeps_everything_and_notes_why() -> None:
    owned = [deployment(), service()]

    p = _removed(Fate.KEEP, owned, requested={GONE: SyncRequest(prune=True)})

    assert p.writes == () and p.findings == ()
    assert p.notes[GONE] == ("prune blocked: keep why",)


def test_a_removed_app_past_the_guard_waits_and_its_confirmation_deletes() -> None:
    owned = configmaps(8)

    held = _removed(Fate.DELETE, owned)
    confirmed = _removed(Fate.DELETE, owned, requested={GONE: SyncRequest(prune=True)})

    assert pruned(held) == []
    (finding,) = held.findings
    assert finding.app == GONE and "8 of the app's 8 objects" in finding.message
    assert len(pruned(confirmed)) == 8 and confirmed.findings == ()


def test_what_orphaned_apps_left_does_not_dilute_the_cluster_share() -> None:
    apps = [make_app("app-a", "apps"), make_app("app-b", "apps")]
    objects = {app.name: configmaps(4, app.name) for app in apps}
    left = configmaps(20, "left")
    every = [*left, *(o for objs in objects.values() for o in objs)]

    p = plan(
        apps=apps,
        pairs=joined(
            [manifest(objs[0], app) for app, objs in objects.items()],
            {ref(o): live_copy(o) for o in every},
            {
                **{app: [ref(o) for o in objs] for app, objs in objects.items()},
                GONE: [ref(o) for o in left],
            },
        ),
        drift={},
        mode="apply",
        protected=nothing_protected,
        departed={GONE: Departure(Fate.ORPHAN, "orphan why")},
    )

    # 6 of the 8 objects still managed (not of 28): held, though each app is within the floor.
    assert pruned(p) == []
    blocked = [f for f in p.findings if f.kind is FindingKind.PRUNE_BLOCKED]
    assert len(blocked) == 2
    assert all("6 of the cluster's 8 objects" in f.message for f in blocked)
    assert sum(f.kind is FindingKind.ORPHANED for f in p.findings) == 20
