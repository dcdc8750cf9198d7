"""What a policy violation does to a plan and a report: the shipped policies judge
desired objects shaped like agentic's (Traefik's LoadBalancer Service), and
refuse_violations keeps every violating object from being written."""

from __future__ import annotations

from typing import Any, cast

from reconciler.drift import UNCHECKED, Differ, prepare, violation_findings
from reconciler.guards import without_write
from reconciler.model import Result, Violation
from reconciler.plan import ActionKind, Plan, refuse_violations
from reconciler.policy import Policies
from reconciler.report import Finding, FindingKind, ObjectError
from tests.unit.policy_helpers import shipped
from tests.unit.test_plan import (
    by_ref,
    changed,
    configmap,
    deployment,
    hook,
    init_job,
    manifest,
    obj,
    ref,
    run,
)

LB_POLICY = "loadbalancer-ip-in-cluster-network"
APP = "incident-db"


def load_balancer(ip: str) -> dict[str, Any]:
    return obj(
        "v1",
        "Service",
        "traefik",
        spec={"type": "LoadBalancer", "loadBalancerIP": ip, "ports": [{"port": 443}]},
    )


def judged(*desired: dict[str, Any]) -> list[Violation]:
    return shipped().evaluate("agentic", [manifest(o) for o in desired])


def refused(the_plan: Plan, *desired: dict[str, Any]) -> Plan:
    return refuse_violations(the_plan, judged(*desired))


def test_a_service_outside_the_network_fails_unwritten_and_the_rest_of_its_app_syncs() -> None:
    outside, web = load_balancer("10.10.0.90"), deployment()
    actions = by_ref(refused(run([outside, web]), outside, web))
    service = actions[ref(outside)]
    assert (service.kind, service.result) == (ActionKind.NONE, Result.FAILED)
    assert not service.writes
    assert service.reason == (
        f"policy violation: {LB_POLICY}: LoadBalancer IP 10.10.0.90 is outside cluster "
        "agentic network 10.20.0.0/24"
    )
    assert (actions[ref(web)].kind, actions[ref(web)].result) == (
        ActionKind.CREATE,
        Result.CREATED,
    )


def test_a_service_inside_the_network_is_created() -> None:
    inside = load_balancer("10.20.0.90")
    assert judged(inside) == []
    assert by_ref(refused(run([inside]), inside))[ref(inside)].kind is ActionKind.CREATE


def test_an_update_that_would_break_a_policy_is_refused_and_nothing_is_pruned() -> None:
    before, after, gone = load_balancer("10.20.0.90"), load_balancer("10.10.0.90"), configmap()
    the_plan = refused(
        run([after], live=[before, gone], inventory=[before, gone], drift=[changed(after)]),
        after,
    )
    actions = by_ref(the_plan)
    assert actions[ref(after)].result is Result.FAILED
    # The refused object is still desired, so never a prune candidate; the app's other
    # prunes wait, as after any failed apply, once the executor has seen the failure.
    assert [a.ref for a in the_plan.actions if a.kind is ActionKind.PRUNE] == [ref(gone)]
    outcome = without_write(
        actions[ref(gone)], broken={}, unreachable=None, held={}, failed_apps={APP}
    )
    assert outcome is not None and outcome.result is Result.SKIPPED


def test_an_app_whose_only_change_is_refused_runs_no_hooks() -> None:
    outside, job = load_balancer("10.10.0.90"), init_job(**hook("PostSync"))
    actions = by_ref(refused(run([outside, job]), outside))
    assert actions[ref(outside)].result is Result.FAILED
    assert (actions[ref(job)].kind, actions[ref(job)].result) == (ActionKind.NONE, Result.SKIPPED)
    assert "break policies" in actions[ref(job)].reason


def test_an_app_with_other_changes_still_runs_its_hooks() -> None:
    outside, web, job = load_balancer("10.10.0.90"), deployment(), init_job(**hook("PostSync"))
    actions = by_ref(refused(run([outside, web, job]), outside))
    assert actions[ref(job)].kind is ActionKind.HOOK


def test_a_report_only_plan_and_live_violations_refuse_nothing() -> None:
    outside = load_balancer("10.10.0.90")
    report_only = run([outside], mode="report")
    assert refused(report_only, outside) == report_only
    live = [Violation(v.policy, v.cluster, v.ref, None, v.message, "live") for v in judged(outside)]
    apply = run([outside])
    assert refuse_violations(apply, live) == apply


def test_each_desired_violation_is_a_finding_of_its_app_and_live_ones_are_not() -> None:
    outside = load_balancer("10.10.0.90")
    [violation] = judged(outside)
    live = Violation(LB_POLICY, "agentic", ref(outside), None, violation.message, "live")
    assert violation_findings([violation, live]) == (
        Finding(APP, FindingKind.VIOLATION, ref(outside), f"{LB_POLICY}: {violation.message}"),
    )


class _Broken:
    """Policies whose evaluation raises, as a bug met by odd input would."""

    def evaluate(self, *_args: Any, **_kw: Any) -> list[Violation]:
        raise KeyError("spec")


def test_an_object_the_policies_cannot_evaluate_is_not_applied_unchecked() -> None:
    def contain(_ref: object, exc: BaseException) -> str:
        return f"internal error: {type(exc).__name__}"

    differ = Differ(
        "agentic",
        report_only=False,
        client=cast(Any, None),
        cache=cast(Any, None),
        policies=cast(Policies, _Broken()),
        recorder=cast(Any, None),
        contain=contain,
    )
    web = manifest(deployment())
    errors: list[ObjectError] = []
    found = differ._violations(prepare([web], tracked=True, contain=contain), [], errors)
    assert [(v.policy, v.ref, v.source) for v in found] == [(UNCHECKED, web.ref, "desired")]
    assert [e.ref for e in errors] == [web.ref]
    # So the plan fails the object without a write, as for any violation.
    (action,) = by_ref(refuse_violations(run([deployment()]), found)).values()
    assert (action.kind, action.result) == (ActionKind.NONE, Result.FAILED)
    assert action.reason.startswith(f"policy violation: {UNCHECKED}: could not be evaluated")
