"""Kinds that cannot be listed right now (403, 429, a watch failing): the live view
of their objects is unknown, not empty. Their pending prunes wait in the inventory
and their creates are not sent blindly; other kinds plan as usual (invariant 9)."""

from __future__ import annotations

from reconciler.model import GroupKind, Result
from reconciler.plan import WAITING, ActionKind, next_inventory, plan
from tests.unit.test_plan import configmap, joined, make_app, manifest, ref, service

CONFIGMAP = GroupKind("", "ConfigMap")
WHY = "cluster agentic: list ConfigMap: Forbidden (HTTP 403)"


def test_an_unlisted_kind_neither_prunes_as_absent_nor_creates_and_keeps_its_inventory() -> None:
    kept, created, gone = configmap("kept"), configmap("new"), configmap("doomed")
    svc, old_svc = service(), service("old")
    inventory = {"incident-db": {ref(kept), ref(gone), ref(svc), ref(old_svc)}}
    the_plan = plan(
        apps=[make_app()],
        # ConfigMaps unknown; the old Service really is gone
        pairs=joined(
            [manifest(kept), manifest(created), manifest(svc)], {ref(svc): svc}, inventory
        ),
        drift={},
        mode="apply",
        protected=lambda _: None,
        unlisted={CONFIGMAP: WHY},
    )
    actions = {a.ref.name: a for a in the_plan.actions}
    for name in ("kept", "new", "doomed"):
        action = actions[name]
        assert (action.kind, action.result) == (ActionKind.NONE, Result.SKIPPED), name
        assert action.reason == f"{WAITING}kind ConfigMap cannot be listed ({WHY})"
    assert actions["old"].result is Result.PRUNED and actions["old"].reason == "already absent"
    after = next_inventory(inventory, ((a, a.result) for a in the_plan.actions))
    assert after["incident-db"] == {ref(kept), ref(gone), ref(svc)}, "only the old Service left"


def test_a_listed_kind_prunes_what_is_absent_as_before() -> None:
    gone = configmap("doomed")
    the_plan = plan(
        apps=[make_app()],
        pairs=joined(
            [manifest(service())],
            {ref(service()): service()},
            {"incident-db": {ref(gone), ref(service())}},
        ),
        drift={},
        mode="apply",
        protected=lambda _: None,
        unlisted={},
    )
    (prune,) = [a for a in the_plan.actions if a.ref == ref(gone)]
    assert (prune.result, prune.reason) == (Result.PRUNED, "already absent")


def test_create_namespace_waits_while_namespaces_cannot_be_listed() -> None:
    app = make_app(namespace="fresh", create_namespace=True)
    the_plan = plan(
        apps=[app],
        pairs=joined([manifest(service())], {}, {}),
        drift={},
        mode="apply",
        protected=lambda _: None,
        unlisted={GroupKind("", "Namespace"): "not listed yet"},
    )
    assert not [a for a in the_plan.actions if a.ref.kind == "Namespace"]
