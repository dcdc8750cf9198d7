"""What the room is told, from reports and the daemon's health: one notice per app and
kind when a condition opens, changes or closes, never again for the same one; what
cannot be judged this time stays open; Secret values never reach the text."""

from __future__ import annotations

import base64

from reconciler.diff import diff_object
from reconciler.model import Change, Drift, DriftType, ObjectRef, Result
from reconciler.notify import format, notices
from reconciler.plan import PRUNE_HELD
from reconciler.pruneguard import blocked
from reconciler.report import ArgoStatus, Finding, FindingKind, ObjectError, Outcome, Report
from reconciler.store import ComponentRecord
from reconciler.supervise import DEGRADED

CANARY = "canary-s3cr3t-value-7d1f"
SETTINGS = ObjectRef("", "ConfigMap", "web", "settings")
TOKEN = ObjectRef("", "Secret", "web", "token")


def _secret(value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": "web"},
        "data": {"password": base64.b64encode(value.encode()).decode()},
    }


def _secret_drift() -> Drift:
    """A Secret whose live value was changed by hand, as the real diff stage sees it."""
    found = diff_object(TOKEN, _secret(CANARY), _secret(CANARY + "-edited"))
    assert found is not None
    return found


def _config_drift(live: str = "edited") -> Drift:
    return Drift(DriftType.CHANGED, SETTINGS, "v1", (Change("/data/mode", "steady", live),))


def _prod(*drifts: tuple[str, Drift], argocd: dict[str, ArgoStatus] | None = None) -> Report:
    return Report("prod", "report", tuple(drifts), (), (), argocd=argocd or {})


def _text(notice: notices.Notice) -> str:
    content = format.message([notice], {})
    return str(content["body"]) + str(content["formatted_body"])


def test_prod_drift_is_one_notice_per_app_with_a_redacted_summary_and_argo_cds_view() -> None:
    report = _prod(
        ("web", _config_drift()),
        ("web", _secret_drift()),
        argocd={"web": ArgoStatus("OutOfSync", "Healthy")},
    )
    told = notices.transitions({}, notices.report_conditions("prod", "report", report))
    (notice,) = told.notices
    assert (notice.key, notice.state) == ("prod/web/drift", "opened")
    text = _text(notice)
    assert "2 objects differ from git" in text
    assert "Argo CD says: OutOfSync / Healthy" in text
    assert 'ConfigMap web/settings — /data/mode git "steady", live "edited"' in text
    assert 'Secret web/token — /data/password git "<redacted>", live "<redacted>"' in text
    for spelling in (CANARY, base64.b64encode(CANARY.encode()).decode()):
        assert spelling not in text


def test_argo_cds_status_that_cannot_be_read_is_said_so() -> None:
    report = _prod(("web", _config_drift()))
    (notice,) = notices.transitions({}, notices.report_conditions("prod", "report", report)).notices
    assert "Argo CD's sync and health: not readable" in _text(notice)


def test_the_same_drift_found_again_is_not_told_again_and_its_end_is_told_once() -> None:
    first = notices.report_conditions("prod", "report", _prod(("web", _config_drift())))
    opened = notices.transitions({}, first)
    again = notices.report_conditions("prod", "report", _prod(("web", _config_drift("other"))))
    # Same object and field, another value: the same drift, nothing to tell.
    assert notices.transitions(opened.opened, again).notices == ()
    resolved = notices.transitions(opened.opened, {}, beside=lambda _k: ("Argo CD says: x",))
    (closed,) = resolved.notices
    assert (closed.state, closed.key, resolved.closed) == (
        "closed",
        "prod/web/drift",
        ("prod/web/drift",),
    )
    assert "drift closed" in closed.title and closed.lines == ("Argo CD says: x",)
    assert notices.transitions({}, {}).notices == ()


def test_a_drift_that_grows_is_told_as_changed() -> None:
    before = notices.transitions(
        {}, notices.report_conditions("prod", "report", _prod(("web", _config_drift())))
    ).opened
    grown = _prod(("web", _config_drift()), ("web", _secret_drift()))
    (notice,) = notices.transitions(
        before, notices.report_conditions("prod", "report", grown)
    ).notices
    assert notice.state == "changed"


def test_what_a_reconcile_could_not_judge_stays_open() -> None:
    before = {"prod/web/drift": "f1", "prod/api/drift": "f2", "prod/db/drift": "f3"}
    some = _prod()
    # A reconcile of some apps only leaves the others' conditions alone.
    told = notices.transitions(before, {}, notices.closable(some, only={"web"}))
    assert told.closed == ("prod/web/drift",)
    # An app with errors this time, and a cluster that stopped answering, close nothing.
    failing = Report("prod", "report", (), (), (ObjectError("api", None, "render failed"),))
    assert notices.transitions(before, {}, notices.closable(failing)).closed == (
        "prod/db/drift",
        "prod/web/drift",
    )
    gone = Report("prod", "report", (), (), (), unreachable="connection refused")
    assert notices.transitions(before, {}, notices.closable(gone)).closed == ()


def test_an_apply_clusters_failures_and_held_prunes_are_told_with_an_approval_for_the_prune() -> (
    None
):
    ref = ObjectRef("apps", "Deployment", "web", "api")
    held = [ObjectRef("", "ConfigMap", "old", f"cm-{i}") for i in range(40)]
    why = "40 of the app's 50 objects is more than 50%"
    report = Report(
        "agentic",
        "apply",
        (),
        (),
        (),
        outcomes=(
            Outcome("web", ref, Result.FAILED, "admission webhook denied"),
            *(Outcome("old", r, Result.SKIPPED, f"{PRUNE_HELD}{why}") for r in held),
        ),
        findings=(
            blocked("old", why, held),
            Finding("manual", FindingKind.OUT_OF_SYNC, None, "no automated sync"),
            Finding("web", FindingKind.VIOLATION, ref, "no-latest: image tag latest"),
        ),
    )
    found = notices.report_conditions("agentic", "apply", report)
    assert sorted(found) == [
        "agentic/manual/out-of-sync",
        "agentic/old/prune-blocked",
        "agentic/web/failed",
        "agentic/web/violation",
    ]
    assert found["agentic/web/failed"].lines == (f"{ref} — admission webhook denied",)
    prune = found["agentic/old/prune-blocked"]
    assert prune.approval is not None
    assert prune.approval[0] == "prune"
    assert "(40 objects)" in prune.title
    assert prune.approval[1] == "prune 40 objects of old held by the prune guard"
    assert found["agentic/manual/out-of-sync"].approval is not None
    assert found["agentic/manual/out-of-sync"].approval[0] == "sync"
    assert found["agentic/web/violation"].approval is None


def test_a_report_mode_cluster_is_never_offered_an_approval() -> None:
    report = Report(
        "prod",
        "report",
        (),
        (),
        (),
        findings=(Finding("old", FindingKind.PRUNE_BLOCKED, SETTINGS, "held"),),
    )
    found = notices.report_conditions("prod", "report", report)
    assert all(c.approval is None for c in found.values())


def _part(name: str, state: str, detail: str = "") -> ComponentRecord:
    return ComponentRecord(name, state, detail, "", 0, None, None)


def test_the_daemon_degraded_and_back_is_told_once_each_ignoring_the_notifiers_own_trouble() -> (
    None
):
    parts = [_part("worker prod", "ok"), _part("watch agentic ConfigMap", "trouble", "forbidden")]
    found = notices.daemon_conditions(parts, DEGRADED)
    (opened,) = notices.transitions({}, found).notices
    assert opened.title.startswith("daemon degraded: 1 part")
    assert opened.lines == ("watch agentic ConfigMap — trouble: forbidden",)
    # The detail moving on is the same trouble.
    moved = [_part("watch agentic ConfigMap", "trouble", "forbidden again")]
    before = notices.transitions({}, found).opened
    assert notices.transitions(before, notices.daemon_conditions(moved, DEGRADED)).notices == ()
    # The notifier cannot tell the room it cannot reach the room.
    assert notices.daemon_conditions([_part("notify.send", "trouble", "token")], DEGRADED) == {}
    (back,) = notices.transitions(before, notices.daemon_conditions([], DEGRADED)).notices
    assert (back.state, back.title) == ("closed", "daemon back: every part is making progress")


def test_a_notice_survives_its_encoding_for_the_store() -> None:
    report = _prod(("web", _config_drift()))
    (notice,) = notices.transitions({}, notices.report_conditions("prod", "report", report)).notices
    assert notices.Notice.decode(notice.encode()) == notice


def test_many_drifting_objects_stay_one_short_notice() -> None:
    many = [
        ("web", Drift(DriftType.MISSING, ObjectRef("", "ConfigMap", "web", f"cm-{i}"), "v1"))
        for i in range(40)
    ]
    (notice,) = notices.transitions(
        {}, notices.report_conditions("prod", "report", _prod(*many))
    ).notices
    assert "40 objects differ" in notice.title
    assert len(notice.lines) == 1 + notices.MAX_OBJECTS + 1
    assert notice.lines[-1] == "… and 35 more objects"


def test_a_condition_offered_again_says_why_once() -> None:
    held = notices.Notice(
        "agentic/old/prune-blocked",
        "prune-blocked",
        "opened",
        "agentic",
        "old",
        "agentic/old: prune held by the guard (2 objects)",
        ("held", "ConfigMap old/a", "ConfigMap old/b"),
        notices.HIGH,
        "prune",
        "prune 2 objects of old held by the prune guard",
    )
    again = notices.offered_again(held)
    assert again.state == "changed" and again.key == held.key
    assert again.lines == (*held.lines, notices.EXPIRED_LINE)
    assert notices.offered_again(again).lines == again.lines


def test_an_app_named_like_a_credential_keeps_its_message_and_values_stay_redacted() -> None:
    ref = ObjectRef("", "ConfigMap", "velero", "settings")
    report = Report(
        "agentic",
        "apply",
        (),
        (),
        (),
        outcomes=(Outcome("velero-secrets", ref, Result.FAILED, "denied, password=hunter2"),),
    )
    told = notices.transitions({}, notices.report_conditions("agentic", "apply", report))
    (notice,) = told.notices
    text = _text(notice)
    assert "agentic/velero-secrets: sync failed" in text, text
    assert "hunter2" not in text
