"""Objects whose kind the cluster does not serve (no CRD installed, none in git).

They cannot be created, so they fail without a write; an app whose only "change"
is such an object is not syncing, so its hooks do not run again on every
reconcile (invariant 3: a reconcile that can change nothing writes nothing).
"""

from __future__ import annotations

from reconciler.model import GroupKind, Result
from reconciler.plan import ActionKind, plan
from tests.unit.test_plan import (
    hook,
    infisical_secret,
    joined,
    make_app,
    manifest,
    obj,
    ref,
    service,
)

INFISICAL = GroupKind("secrets.infisical.com", "InfisicalSecret")


def _plan(unserved: set[GroupKind]) -> dict[str, tuple[ActionKind, Result, str]]:
    secret = infisical_secret()
    svc = service()
    job = obj("batch/v1", "Job", "incident-db-init", annotations=hook("PreSync"))
    desired = [manifest(secret), manifest(svc), manifest(job)]
    live = {ref(svc): svc, ref(job): job}  # the Service is in sync, the secret absent
    the_plan = plan(
        apps=[make_app()],
        pairs=joined(desired, live, {}),
        drift={},
        mode="apply",
        protected=lambda _: None,
        unserved=unserved,
    )
    return {a.ref.kind: (a.kind, a.result, a.reason) for a in the_plan.actions}


def test_an_object_of_an_unserved_kind_fails_without_a_write_and_runs_no_hook() -> None:
    actions = _plan({INFISICAL})
    kind, result, reason = actions["InfisicalSecret"]
    assert (kind, result) == (ActionKind.NONE, Result.FAILED)
    assert "does not serve InfisicalSecret" in reason
    assert actions["Job"][0] is ActionKind.NONE, "the app has nothing to sync: no hook"


def test_a_served_kind_is_created_and_its_app_runs_its_hooks() -> None:
    actions = _plan(set())
    assert actions["InfisicalSecret"][:2] == (ActionKind.CREATE, Result.CREATED)
    assert actions["Job"][0] is ActionKind.HOOK
