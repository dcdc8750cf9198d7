"""plan: desired, live and inventory in, ordered actions out, with every prune rule.

Objects are modelled on the agentic repository: the incident-db app (a Postgres
StatefulSet, its Service, an InfisicalSecret and a PostSync init Job in
`ai-platform`) and velero's credentials transformer (PreSync RBAC hooks, a
PostSync Job).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from reconciler.model import (
    App,
    Change,
    Drift,
    DriftType,
    InventoryItem,
    Manifest,
    Mode,
    ObjectRef,
    Origin,
    Result,
    Source,
    SyncRequest,
    api_group,
)
from reconciler.pairs import Pair, join
from reconciler.plan import (
    DEFAULT_MAX_PRUNE_SHARE,
    Action,
    ActionKind,
    DeletePolicy,
    Phase,
    Plan,
    next_inventory,
    plan,
)
from reconciler.pruneguard import DEFAULT_PRUNE_FLOOR
from reconciler.report import FindingKind
from tests.builders import app

Obj = dict[str, Any]
NS = "ai-platform"


def make_app(
    name: str = "incident-db",
    namespace: str = NS,
    *,
    wave: int = 0,
    prune: bool = True,
    create_namespace: bool = False,
) -> App:
    return app(
        name,
        namespace=namespace,
        repo="agentic_lab",
        sources=(Source(repo_url="https://github.com/x/agentic_lab", repo="agentic_lab"),),
        sync_wave=wave,
        sync_options=("CreateNamespace=true",) if create_namespace else (),
        sync_policy={"automated": {"prune": prune, "selfHeal": True}},
    )


def obj(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = NS,
    annotations: Mapping[str, str] | None = None,
    **rest: Any,
) -> Obj:
    metadata: Obj = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **rest}


def ref(o: Mapping[str, Any]) -> ObjectRef:
    meta = o["metadata"]
    return ObjectRef(api_group(o["apiVersion"]), o["kind"], meta.get("namespace", ""), meta["name"])


def manifest(o: Obj, app: str = "incident-db") -> Manifest:
    return Manifest(ref(o), o, Origin("agentic_lab", "c0ffee", app, "kubernetes/applications"))


def wave(n: int) -> dict[str, str]:
    return {"argocd.argoproj.io/sync-wave": str(n)}


def hook(phase: str, policy: str | None = None) -> dict[str, str]:
    found = {"argocd.argoproj.io/hook": phase}
    if policy:
        found["argocd.argoproj.io/hook-delete-policy"] = policy
    return found


def namespace(name: str = NS) -> Obj:
    return obj("v1", "Namespace", name, None)


def configmap(name: str = "incident-db-init-sql", **kw: Any) -> Obj:
    return obj("v1", "ConfigMap", name, data={"init.sh": "psql -f /sql/schema.sql"}, **kw)


def service(name: str = "postgresql", **kw: Any) -> Obj:
    return obj("v1", "Service", name, spec={"ports": [{"port": 5432}]}, **kw)


def statefulset(name: str = "postgresql", **kw: Any) -> Obj:
    return obj("apps/v1", "StatefulSet", name, spec={"serviceName": name, "replicas": 1}, **kw)


def deployment(name: str = "incident-api", **kw: Any) -> Obj:
    return obj("apps/v1", "Deployment", name, spec={"replicas": 1}, **kw)


def infisical_secret(name: str = "postgresql-credentials", **kw: Any) -> Obj:
    return obj("secrets.infisical.com/v1alpha1", "InfisicalSecret", name, spec={}, **kw)


def crd(plural: str = "infisicalsecrets", **kw: Any) -> Obj:
    return obj(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        f"{plural}.secrets.infisical.com",
        None,
        spec={"group": "secrets.infisical.com", "names": {"kind": "InfisicalSecret"}},
        **kw,
    )


def pvc(name: str = "data-postgresql-0") -> Obj:
    return obj("v1", "PersistentVolumeClaim", name, spec={"resources": {}})


def init_job(**annotations: str) -> Obj:
    return obj(
        "batch/v1",
        "Job",
        "incident-db-init",
        annotations=annotations or hook("PostSync", "BeforeHookCreation"),
        spec={"backoffLimit": 3},
    )


def live_copy(o: Obj) -> Obj:
    """The object as the API server returns it: same content plus server fields."""
    return {**o, "metadata": {**o["metadata"], "uid": f"uid-{o['metadata']['name']}"}}


def changed(o: Obj) -> Drift:
    return Drift(DriftType.CHANGED, ref(o), o["apiVersion"], (Change("/spec/replicas", 2, 1),))


def policy_protection(live: Mapping[str, Any]) -> str | None:
    """What the policy module protects by default: Namespace, PVC, CRD, Prune=false."""
    if live["kind"] in ("Namespace", "PersistentVolumeClaim", "CustomResourceDefinition"):
        return f"{live['kind']} is protected by default"
    options = live["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-options", "")
    return "annotated Prune=false" if "Prune=false" in options else None


def nothing_protected(live: Mapping[str, Any]) -> str | None:
    return None


def joined(
    desired: Iterable[Manifest],
    live: Mapping[ObjectRef, Obj | None],
    inventory: Mapping[str, Iterable[ObjectRef]],
) -> dict[ObjectRef, Pair]:
    """The one join, from inventory given per app."""
    items = [InventoryItem(app, r, "") for app, refs in inventory.items() for r in refs]
    return join(desired, live, items)


def run(
    desired: Iterable[Obj] = (),
    *,
    live: Iterable[Obj] = (),
    inventory: Iterable[Obj] = (),
    drift: Iterable[Drift] = (),
    apps: Iterable[App] = (),
    mode: Mode = "apply",
    render_failed: Iterable[str] = (),
    max_prune_share: float = DEFAULT_MAX_PRUNE_SHARE,
    prune_floor: int = DEFAULT_PRUNE_FLOOR,
    protected: Any = policy_protection,
    requested: Mapping[str, SyncRequest] | None = None,
) -> Plan:
    """One app, incident-db, unless `apps` says otherwise; live objects given as git has them."""
    return plan(
        apps=tuple(apps) or (make_app(),),
        pairs=joined(
            [manifest(o) for o in desired],
            {ref(o): live_copy(o) for o in live},
            {"incident-db": frozenset(ref(o) for o in inventory)},
        ),
        drift={d.ref: d for d in drift},
        mode=mode,
        protected=protected,
        render_failed=frozenset(render_failed),
        max_prune_share=max_prune_share,
        prune_floor=prune_floor,
        requested=requested,
    )


def by_ref(p: Plan) -> dict[ObjectRef, Action]:
    return {a.ref: a for a in p.actions}


def names(actions: Iterable[Action]) -> list[str]:
    return [a.ref.name for a in actions]


def test_create_update_prune_come_from_one_pairing() -> None:
    new, edited, same, removed = configmap(), statefulset(), service(), deployment("old-api")
    pairs = joined(
        [manifest(o) for o in (new, edited, same)],
        {ref(o): live_copy(o) for o in (edited, same, removed)},
        {"incident-db": {ref(edited), ref(same), ref(removed)}},
    )
    assert set(pairs) == {ref(o) for o in (new, edited, same, removed)}
    assert pairs[ref(new)].live is None
    assert pairs[ref(removed)].desired is None
    assert pairs[ref(removed)].app == "incident-db"

    p = run(
        [new, edited, same],
        live=[edited, same, removed],
        inventory=[edited, same, removed],
        drift=[changed(edited)],
    )

    actions = by_ref(p)
    assert len(p.actions) == 4
    assert (actions[ref(new)].kind, actions[ref(new)].result) == (
        ActionKind.CREATE,
        Result.CREATED,
    )
    assert (actions[ref(edited)].kind, actions[ref(edited)].result) == (
        ActionKind.UPDATE,
        Result.CONFIGURED,
    )
    assert actions[ref(edited)].drift == changed(edited)
    assert (actions[ref(same)].kind, actions[ref(same)].result) == (
        ActionKind.NONE,
        Result.UNCHANGED,
    )
    assert (actions[ref(removed)].kind, actions[ref(removed)].result) == (
        ActionKind.PRUNE,
        Result.PRUNED,
    )
    assert actions[ref(new)].manifest == manifest(new)


def test_crds_and_namespaces_come_before_waves() -> None:
    p = run(
        [
            deployment(annotations=wave(-5)),
            crd(annotations=wave(10)),
            namespace() | {"metadata": {"name": NS, "annotations": wave(3)}},
            obj("v1", "ServiceAccount", "migrator", annotations=hook("PreSync")),
            infisical_secret(annotations=wave(-10)),
            obj("v1", "Namespace", "scratch", None, annotations=hook("PostSync")),
        ]
    )

    assert [a.ref.kind for a in p.actions] == [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "InfisicalSecret",
        "Deployment",
        "Namespace",  # a hook keeps its phase, whatever its kind
    ]
    assert p.actions[2].phase is Phase.PRE_SYNC


def test_sync_waves_order_then_kind_order() -> None:
    p = run(
        [
            deployment(),
            infisical_secret(),
            service(),
            configmap("b-config"),
            configmap("a-config"),
            obj("networking.k8s.io/v1", "Ingress", "incident-api", annotations=wave(1)),
            statefulset(annotations=wave(-1)),
            obj("v1", "ServiceAccount", "incident-api"),
        ]
    )

    assert [(a.wave, a.ref.kind, a.ref.name) for a in p.actions] == [
        (-1, "StatefulSet", "postgresql"),
        (0, "ServiceAccount", "incident-api"),
        (0, "ConfigMap", "a-config"),
        (0, "ConfigMap", "b-config"),
        (0, "Service", "postgresql"),
        (0, "Deployment", "incident-api"),
        (0, "InfisicalSecret", "postgresql-credentials"),  # custom kinds after known ones
        (1, "Ingress", "incident-api"),
    ]


def test_app_waves_order_whole_apps() -> None:
    database, api = make_app("postgres", wave=1), make_app("incident-api", wave=2)
    p = plan(
        apps=[api, database],
        pairs=joined(
            [
                manifest(deployment(annotations=wave(-3)), "incident-api"),
                manifest(statefulset(annotations=wave(5)), "postgres"),
            ],
            {},
            {},
        ),
        drift={},
        mode="apply",
        protected=policy_protection,
    )

    assert [a.app for a in p.actions] == ["postgres", "incident-api"]


def test_prune_runs_in_reverse_order_after_applies() -> None:
    old = [
        configmap("old-config"),
        service("old-api"),
        deployment("old-api"),
        infisical_secret("old-credentials"),
        obj("batch/v1", "Job", "old-migration", annotations=wave(-2)),
    ]
    kept = statefulset()
    new = configmap("new-config", annotations=wave(4))

    p = run(
        [kept, new],
        live=[kept, *old],
        inventory=[kept, *old],
        max_prune_share=1.0,
    )

    kinds = [a.kind for a in p.actions]
    assert kinds == [ActionKind.NONE, ActionKind.CREATE] + [ActionKind.PRUNE] * 5
    assert names(a for a in p.actions if a.kind is ActionKind.PRUNE) == [
        "old-credentials",
        "old-api",  # Deployment before the Service it is exposed by
        "old-api",
        "old-config",
        "old-migration",  # wave -2 was applied first, so it goes last
    ]
    assert [a.ref.kind for a in p.actions[3:5]] == ["Deployment", "Service"]
    assert all(a.phase is Phase.PRUNE for a in p.actions[2:])


def test_objects_not_in_inventory_are_never_pruned() -> None:
    by_hand = configmap("debug-notes")  # created with kubectl in the same namespace
    other_app = deployment("grafana")
    owned = service("old-api")

    p = run(
        [statefulset()],
        live=[statefulset(), by_hand, other_app, owned],
        inventory=[statefulset(), owned],
    )

    assert {a.ref for a in p.actions} == {ref(statefulset()), ref(owned)}
    assert by_ref(p)[ref(owned)].kind is ActionKind.PRUNE


def test_protected_kinds_are_not_pruned() -> None:
    keep = configmap("keep-me", annotations={"argocd.argoproj.io/sync-options": "Prune=false"})
    old = [namespace("ai-old"), pvc(), crd("oldthings"), keep, configmap("plain")]
    seen: list[Mapping[str, Any]] = []

    def protected(live: Mapping[str, Any]) -> str | None:
        seen.append(live)
        return policy_protection(live)

    p = run([statefulset()], live=old, inventory=old, max_prune_share=1.0, protected=protected)

    actions = by_ref(p)
    for o in old[:4]:
        assert (actions[ref(o)].kind, actions[ref(o)].result) == (
            ActionKind.NONE,
            Result.SKIPPED,
        )
        assert actions[ref(o)].reason.startswith("protected: ")
    assert actions[ref(keep)].reason == "protected: annotated Prune=false"
    assert actions[ref(configmap("plain"))].kind is ActionKind.PRUNE
    assert all("uid" in live["metadata"] for live in seen)  # judged on the live object


@pytest.mark.parametrize(
    ("desired", "requested"),
    [([], None), ([statefulset()], None), ([], {"incident-db": SyncRequest(prune=True)})],
)
def test_render_failure_blocks_prune_even_when_confirmed(
    desired: list[Obj], requested: Mapping[str, SyncRequest] | None
) -> None:
    owned = [statefulset(), service()]

    p = run(
        desired,
        live=owned,
        inventory=owned,
        render_failed=["incident-db"],
        max_prune_share=1.0,
        requested=requested,
    )

    assert p.writes == ()
    skipped = [a for a in p.actions if a.phase is Phase.PRUNE]
    assert skipped
    assert all(a.result is Result.SKIPPED and "render failed" in a.reason for a in skipped)
    assert p.notes["incident-db"] == ("prune blocked: render failed",)
    assert p.findings == ()  # nothing a person could confirm: the render must be fixed


def test_losing_more_than_the_share_past_the_floor_blocks_prune() -> None:
    owned = [statefulset(), service(), configmap(), deployment()]

    half = run(owned[:2], live=owned, inventory=owned, prune_floor=0)
    most = run(owned[:1], live=owned, inventory=owned, prune_floor=0)
    allowed = run(owned[:1], live=owned, inventory=owned, max_prune_share=0.75, prune_floor=0)
    small = run(owned[:1], live=owned, inventory=owned, prune_floor=3)

    assert names(a for a in half.actions if a.kind is ActionKind.PRUNE) == [
        "incident-api",
        "incident-db-init-sql",
    ]
    assert [a for a in most.actions if a.kind is ActionKind.PRUNE] == []
    assert most.notes == {}
    (finding,) = most.findings
    assert finding.kind is FindingKind.PRUNE_BLOCKED
    assert "mass-deletion guard: 3 of the app's 4 objects" in finding.message
    assert len([a for a in allowed.actions if a.kind is ActionKind.PRUNE]) == 3
    assert len([a for a in small.actions if a.kind is ActionKind.PRUNE]) == 3, "within the floor"


def test_prune_turned_off_reports_candidates() -> None:
    owned = [statefulset(), service()]

    p = run([statefulset()], live=owned, inventory=owned, apps=[make_app(prune=False)])

    gone = by_ref(p)[ref(service())]
    assert (gone.kind, gone.result) == (ActionKind.NONE, Result.SKIPPED)
    assert "automated prune is off" in gone.reason


def test_apps_gone_from_the_catalogue_are_not_pruned() -> None:
    owned = [statefulset(), service()]

    p = plan(
        apps=[make_app("grafana", "monitoring")],
        pairs=joined(
            [], {ref(o): live_copy(o) for o in owned}, {"incident-db": {ref(o) for o in owned}}
        ),
        drift={},
        mode="apply",
        protected=nothing_protected,
        max_prune_share=1.0,
    )

    assert p.writes == ()
    assert p.notes["incident-db"] == ("prune blocked: app is no longer in the catalogue",)


def test_an_object_moved_to_another_app_is_not_pruned() -> None:
    moved = service()

    p = plan(
        apps=[make_app(), make_app("incident-api")],
        pairs=joined(
            [manifest(statefulset()), manifest(moved, "incident-api")],
            {ref(o): live_copy(o) for o in (statefulset(), moved)},
            {"incident-db": {ref(statefulset()), ref(moved)}},
        ),
        drift={},
        mode="apply",
        protected=nothing_protected,
    )
    inventory = next_inventory(
        {"incident-db": {ref(statefulset()), ref(moved)}}, [(a, a.result) for a in p.actions]
    )

    assert p.writes == ()
    assert by_ref(p)[ref(moved)].app == "incident-api"
    assert inventory == {
        "incident-db": frozenset({ref(statefulset())}),
        "incident-api": frozenset({ref(moved)}),
    }


def test_report_mode_plans_no_write() -> None:
    owned = [statefulset(), service("old-api")]
    desired = [statefulset(), configmap(), init_job()]

    p = run(desired, live=owned, inventory=owned, drift=[changed(statefulset())], mode="report")

    assert p.writes == ()
    report_only = [a for a in p.actions if a.kind is ActionKind.REPORT_ONLY]
    assert [(a.ref.kind, a.reason) for a in report_only] == [
        ("ConfigMap", "report-only cluster: would create"),
        ("StatefulSet", "report-only cluster: would update"),
        ("Job", "report-only cluster: would run hook"),
        ("Service", "report-only cluster: would prune"),
    ]
    assert all(a.result is Result.SKIPPED for a in report_only)
    assert len(report_only) == len(p.actions)


def test_unchanged_objects_get_no_action() -> None:
    steady = [namespace(), infisical_secret(), service(), statefulset()]

    p = run([*steady, init_job()], live=[*steady, init_job()], inventory=steady)

    assert p.writes == ()
    assert {a.result for a in p.actions} == {Result.UNCHANGED}
    hook_action = by_ref(p)[ref(init_job())]
    assert hook_action.reason == "app in sync: not run"  # no sync, so no hook run


def test_hooks_are_planned_in_their_phase_or_reported() -> None:
    desired = [
        statefulset(),
        obj(
            "v1",
            "ServiceAccount",
            "velero-credentials-transformer",
            annotations=hook("PreSync", "HookSucceeded"),
        ),
        obj(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "velero-credentials-transformer",
            annotations=hook("PreSync", "HookSucceeded"),
        ),
        obj("batch/v1", "Job", "backrest-ssh-setup", annotations=hook("Sync", "HookSucceeded")),
        init_job(),
        obj("batch/v1", "Job", "notify-failure", annotations=hook("SyncFail")),
        obj(
            "batch/v1",
            "Job",
            "admission-create",
            annotations={
                "helm.sh/hook": "pre-install,pre-upgrade",
                "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
            },
        ),
        obj("v1", "Pod", "chart-test", annotations={"helm.sh/hook": "test"}),
        configmap("local-only", annotations=hook("Skip")),
    ]

    p = run(desired)

    order = [(a.phase, a.kind, a.ref.name) for a in p.actions]
    assert order == [
        (Phase.PRE_SYNC, ActionKind.HOOK, "velero-credentials-transformer"),
        (Phase.PRE_SYNC, ActionKind.HOOK, "velero-credentials-transformer"),
        (Phase.PRE_SYNC, ActionKind.HOOK, "admission-create"),
        (Phase.SYNC, ActionKind.NONE, "local-only"),
        (Phase.SYNC, ActionKind.NONE, "chart-test"),
        (Phase.SYNC, ActionKind.CREATE, "postgresql"),
        (Phase.SYNC, ActionKind.HOOK, "backrest-ssh-setup"),
        (Phase.POST_SYNC, ActionKind.HOOK, "incident-db-init"),
        (Phase.SYNC_FAIL, ActionKind.HOOK, "notify-failure"),
    ]
    actions = by_ref(p)
    assert actions[ref(init_job())].delete_policies == (DeletePolicy.BEFORE_HOOK_CREATION,)
    assert p.actions[0].delete_policies == (DeletePolicy.HOOK_SUCCEEDED,)
    assert p.actions[2].delete_policies == (
        DeletePolicy.BEFORE_HOOK_CREATION,
        DeletePolicy.HOOK_SUCCEEDED,
    )
    assert actions[ref(configmap("local-only"))].reason == "hook Skip: not applied"
    assert actions[ref(configmap("local-only"))].result is Result.SKIPPED
    assert p.notes["incident-db"] == (
        "Pod ai-platform/chart-test: hook helm.sh/hook=test is not supported, so it is not run",
    )
    assert not any(a.tracked for a in p.actions if a.ref != ref(statefulset()))


def test_hook_without_delete_policy_is_recreated_each_sync() -> None:
    job = obj("batch/v1", "Job", "schema-migrate", annotations=hook("PreSync,PostSync"))

    p = run([job, statefulset()], drift=[])

    hooks = [a for a in p.actions if a.kind is ActionKind.HOOK]
    assert [a.phase for a in hooks] == [Phase.PRE_SYNC, Phase.POST_SYNC]
    assert all(a.delete_policies == (DeletePolicy.BEFORE_HOOK_CREATION,) for a in hooks)


def test_create_namespace_plans_the_destination_namespace_once() -> None:
    apps = [make_app(create_namespace=True), make_app("incident-api", create_namespace=True)]
    desired = [manifest(statefulset()), manifest(deployment(), "incident-api")]

    missing = plan(
        apps=apps,
        pairs=joined(desired, {}, {}),
        drift={},
        mode="apply",
        protected=policy_protection,
    )
    present = plan(
        apps=apps,
        pairs=joined(desired, {ref(namespace()): live_copy(namespace())}, {}),
        drift={},
        mode="apply",
        protected=policy_protection,
    )

    first = missing.actions[0]
    assert (first.ref, first.kind, first.app) == (
        ref(namespace()),
        ActionKind.CREATE,
        "incident-api",
    )
    assert first.manifest is not None
    assert first.manifest.obj == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    assert not first.tracked  # like Argo CD, never pruned later
    assert [a.ref.kind for a in missing.actions].count("Namespace") == 1
    assert ref(namespace()) not in by_ref(present)


def test_failed_delete_stays_in_inventory() -> None:
    kept, new, lost, gone = statefulset(), configmap(), service("old-api"), deployment("old-api")
    failed_create = infisical_secret()
    p = run(
        [kept, new, failed_create],
        live=[kept, lost, gone],
        inventory=[kept, lost, gone],
        max_prune_share=1.0,
    )
    actions = by_ref(p)
    real = {ref(lost): Result.FAILED, ref(failed_create): Result.FAILED}

    after = next_inventory(
        {"incident-db": {ref(kept), ref(lost), ref(gone)}},
        [(a, real.get(a.ref, a.result)) for a in p.actions],
    )

    assert actions[ref(lost)].kind is ActionKind.PRUNE
    assert after == {"incident-db": frozenset({ref(kept), ref(new), ref(lost)})}


def test_objects_deleted_by_hand_leave_the_inventory_without_a_write() -> None:
    p = run([statefulset()], live=[statefulset()], inventory=[statefulset(), service()])

    gone = by_ref(p)[ref(service())]
    assert (gone.kind, gone.result, gone.reason) == (
        ActionKind.NONE,
        Result.PRUNED,
        "already absent",
    )
    assert next_inventory(
        {"incident-db": {ref(statefulset()), ref(service())}},
        [(a, a.result) for a in p.actions],
    ) == {"incident-db": frozenset({ref(statefulset())})}


def test_an_invalid_sync_wave_is_noted() -> None:
    p = run([deployment(annotations={"argocd.argoproj.io/sync-wave": "early"})])

    assert p.actions[0].wave == 0
    assert p.notes["incident-db"] == (
        "Deployment.apps ai-platform/incident-api: "
        "argocd.argoproj.io/sync-wave 'early' is not an integer; wave 0",
    )


def test_hooks_run_when_the_app_prunes_only() -> None:
    owned = [statefulset(), service(), service("old-api")]

    p = run([statefulset(), service(), init_job()], live=owned, inventory=owned)

    assert [(a.kind, a.ref.name) for a in p.writes] == [
        (ActionKind.HOOK, "incident-db-init"),
        (ActionKind.PRUNE, "old-api"),
    ]


def test_hooks_and_created_namespaces_stay_out_of_inventory() -> None:
    p = run([statefulset(), init_job()], apps=[make_app(create_namespace=True)])

    after = next_inventory({}, [(a, a.result) for a in p.actions])

    assert [a.ref.kind for a in p.writes] == ["Namespace", "StatefulSet", "Job"]
    assert after == {"incident-db": frozenset({ref(statefulset())})}
