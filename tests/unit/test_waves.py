"""How a plan is cut into each app's sync steps and when a step's wait is over
(reconciler.waves), with plain data: Argo CD's phases and waves, hook completion,
and a live view that lags behind what was just applied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.model import ObjectRef, Result
from reconciler.plan import Action, ActionKind, Phase
from reconciler.waves import Awaited, HookState, Verdict, cut, hook_state, judge, seen

NS = "ai-platform"


def ref(kind: str, name: str, group: str = "") -> ObjectRef:
    namespaced = kind not in ("Namespace", "CustomResourceDefinition")
    return ObjectRef(group, kind, NS if namespaced else "", name)


def action(
    r: ObjectRef,
    phase: Phase = Phase.SYNC,
    wave: int = 0,
    kind: ActionKind = ActionKind.CREATE,
    app: str = "incident-db",
) -> Action:
    result = Result.UNCHANGED if kind is ActionKind.NONE else Result.CREATED
    return Action(r, app, kind, result, phase, wave)


DEPLOY = ref("Deployment", "api", "apps")
JOB = ref("Job", "migrate", "batch")


def deployment(available: int, *, generation: int = 1, uid: str = "u1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": NS, "uid": uid, "generation": generation},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": available,
        },
    }


def job(condition: str | None, uid: str = "j1") -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "message": "BackoffLimitExceeded"}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": NS, "uid": uid},
        "status": {"conditions": conditions} if condition else {},
    }


def view(*objects: Mapping[str, Any]) -> Any:
    by_ref = {
        ObjectRef(
            o["apiVersion"].rpartition("/")[0],
            o["kind"],
            o["metadata"].get("namespace", ""),
            o["metadata"]["name"],
        ): o
        for o in objects
    }
    return by_ref.get


def test_each_app_is_cut_into_presync_each_wave_postsync_then_prunes() -> None:
    ns, crd = (
        ref("Namespace", NS),
        ref("CustomResourceDefinition", "things.x.io", "apiextensions.k8s.io"),
    )
    actions = [
        action(ns),
        action(crd),
        action(JOB, Phase.PRE_SYNC, kind=ActionKind.HOOK),
        action(ref("ConfigMap", "a")),
        action(ref("Secret", "b")),
        action(DEPLOY, wave=1),
        action(ref("Ingress", "c", "networking.k8s.io"), wave=2),
        action(ref("Job", "smoke", "batch"), Phase.POST_SYNC, kind=ActionKind.HOOK),
        action(ref("Job", "notify", "batch"), Phase.SYNC_FAIL, kind=ActionKind.HOOK),
        action(ref("ConfigMap", "other"), app="other-app"),
        action(ref("ConfigMap", "old"), Phase.PRUNE, 3, ActionKind.PRUNE),
        action(ref("Service", "old"), Phase.PRUNE, 0, ActionKind.PRUNE),
    ]

    steps = cut(actions)

    assert [a.ref for a in steps.first] == [ns, crd]
    assert list(steps.steps) == ["incident-db", "other-app"]
    assert [(s.name, [a.ref.name for a in s.actions]) for s in steps.steps["incident-db"]] == [
        ("PreSync", ["migrate"]),
        ("wave 0", ["a", "b"]),
        ("wave 1", ["api"]),
        ("wave 2", ["c"]),
        ("PostSync", ["smoke"]),
        ("prune", ["old", "old"]),
    ]
    assert [a.ref.name for a in steps.sync_fail["incident-db"]] == ["notify"]
    assert "incident-db" not in {s.app for s in steps.steps["other-app"]}


def test_a_hook_namespace_is_not_put_before_the_apps() -> None:
    hook_ns = action(ref("Namespace", "scratch"), Phase.PRE_SYNC, kind=ActionKind.HOOK)

    steps = cut([hook_ns])

    assert steps.first == ()
    assert [s.phase for s in steps.steps["incident-db"]] == [Phase.PRE_SYNC]


def test_a_step_writes_only_when_one_of_its_actions_does() -> None:
    steps = cut([action(ref("ConfigMap", "a"), kind=ActionKind.NONE), action(DEPLOY, wave=1)])

    assert [s.writes for s in steps.steps["incident-db"]] == [False, True]


def test_a_wave_waits_until_every_applied_object_is_healthy() -> None:
    awaited = [Awaited(ref("ConfigMap", "a"), hook=False), Awaited(DEPLOY, hook=False)]
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": NS},
    }

    progressing = judge(awaited, view(configmap, deployment(available=0)))
    missing = judge(awaited, view(deployment(available=1)))
    healthy = judge(awaited, view(configmap, deployment(available=1)))

    assert (progressing.verdict, progressing.ref) == (Verdict.WAITING, DEPLOY)
    assert "Progressing" in progressing.message
    assert (missing.verdict, missing.ref, missing.message) == (
        Verdict.WAITING,
        ref("ConfigMap", "a"),
        "not healthy (Missing)",
    )
    assert healthy.verdict is Verdict.DONE


def test_a_degraded_object_fails_the_wait_with_its_health_message() -> None:
    stuck = deployment(available=0)
    stuck["status"]["conditions"] = [
        {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "took too long"}
    ]

    judged = judge([Awaited(DEPLOY, hook=False)], view(stuck))

    assert (judged.verdict, judged.ref, judged.hook) == (Verdict.FAILED, DEPLOY, False)
    assert "took too long" in judged.message


def test_a_hook_job_is_awaited_until_complete_and_a_failed_one_fails_the_wait() -> None:
    awaited = [Awaited(JOB, hook=True, uid="j1")]

    assert judge(awaited, view(job(None))).verdict is Verdict.WAITING
    assert judge(awaited, view(job("Complete"))).verdict is Verdict.DONE
    failed = judge(awaited, view(job("Failed")))
    assert (failed.verdict, failed.hook) == (Verdict.FAILED, True)
    assert failed.message == "failed: BackoffLimitExceeded"


def test_hook_states_follow_argo_cd_jobs_pods_and_kinds_without_health() -> None:
    def pod(phase: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": "Never"},
            "status": {"phase": phase},
        }

    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}
    assert hook_state(job("Complete")) is HookState.SUCCEEDED
    assert hook_state(job("Failed")) is HookState.FAILED
    assert hook_state(job(None)) is HookState.RUNNING
    assert hook_state(pod("Running")) is HookState.RUNNING
    assert hook_state(pod("Succeeded")) is HookState.SUCCEEDED
    assert hook_state(pod("Failed")) is HookState.FAILED
    assert hook_state(account) is HookState.SUCCEEDED, "created is done for kinds without health"
    assert hook_state(None) is HookState.RUNNING


def test_the_previous_run_of_a_hook_still_in_the_view_is_not_taken_for_the_new_one() -> None:
    new_run = Awaited(JOB, hook=True, uid="j2")

    assert seen(new_run, job("Complete", uid="j1")) is None
    assert judge([new_run], view(job("Complete", uid="j1"))).verdict is Verdict.WAITING
    assert judge([new_run], view(job("Complete", uid="j2"))).verdict is Verdict.DONE


def test_an_update_counts_only_once_the_view_shows_its_generation() -> None:
    updated = Awaited(DEPLOY, hook=False, uid="u1", generation=2)

    assert judge([updated], view(deployment(available=1, generation=1))).verdict is (
        Verdict.WAITING
    ), "the view still shows the healthy old generation"
    assert judge([updated], view(deployment(available=1, generation=2))).verdict is Verdict.DONE


def test_after_the_last_step_only_hooks_are_awaited() -> None:
    awaited = [Awaited(DEPLOY, hook=False), Awaited(JOB, hook=True, uid="j1")]
    live = view(deployment(available=0), job("Complete"))

    assert judge(awaited, live, hooks_only=True).verdict is Verdict.DONE
    assert judge(awaited, live).verdict is Verdict.WAITING


def test_awaited_reads_uid_and_generation_from_the_apply_answer() -> None:
    answer = {"metadata": {"uid": "u9", "generation": 4}}

    assert Awaited.of(DEPLOY, False, answer) == Awaited(DEPLOY, False, "u9", 4)
    assert Awaited.of(DEPLOY, False, None) == Awaited(DEPLOY, False)
