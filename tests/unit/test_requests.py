"""The request spool: what the command drops, what the daemon reads back, and the
lines a sync prints whether it ran here or in the daemon."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from reconciler import requests
from reconciler.model import Change, Drift, DriftType, ObjectRef, Result, SyncRequest
from reconciler.plan import PRUNE_HELD, UNAPPROVED, ActionKind
from reconciler.report import ObjectError, Outcome, Report
from tests.unit.test_plan import by_ref, pvc, ref, run
from tests.unit.test_pruneguard import configmaps, pruned


def test_a_request_is_dropped_atomically_private_and_read_back(tmp_path: Path) -> None:
    spool = requests.prepare(tmp_path)
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700

    request = requests.submit(tmp_path, "web", prune=True)

    (path,) = spool.iterdir()
    assert path.name == f"{request.id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["app"] == "web"
    assert requests.pending(spool) == [(path, request)]
    assert request.prune and request.user
    assert requests.withdraw(tmp_path, request.id)
    assert not requests.withdraw(tmp_path, request.id), "already gone: taken by the daemon"
    assert requests.pending(spool) == []


def test_a_spool_that_cannot_be_used_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(requests.SpoolError, match="does not exist: the running daemon takes no"):
        requests.submit(tmp_path, "web", prune=False)
    (tmp_path / "requests").write_text("not a directory")
    with pytest.raises(requests.SpoolError, match=r"cannot write a request to .*requests"):
        requests.submit(tmp_path, "web", prune=False)


def test_a_malformed_request_is_named_not_raised(tmp_path: Path) -> None:
    spool = requests.prepare(tmp_path)
    (spool / "garbage.json").write_text("{nope")
    (spool / "list.json").write_text("[]")
    (spool / "abcdef0123456789.json").write_text(json.dumps({"id": "abcdef0123456789"}))
    (spool / "0123456789abcdef.json").write_text(
        json.dumps(
            {"id": "ffffffffffffffff", "app": "a", "prune": False, "requested_at": "t", "user": "u"}
        )
    )
    (spool / ".half-written.tmp").write_text("{")
    found = {path.name: why for path, why in requests.pending(spool)}
    assert set(found) == {
        "garbage.json",
        "list.json",
        "abcdef0123456789.json",
        "0123456789abcdef.json",
    }
    assert str(found["garbage.json"]).startswith("unreadable: ")
    assert found["list.json"] == "not a JSON object"
    assert "needs id, app, requested_at and user" in str(found["abcdef0123456789.json"])
    assert "not the hex token its file is named after" in str(found["0123456789abcdef.json"])


CM = ObjectRef("", "ConfigMap", "ns", "settings")


def report(**kw: object) -> Report:
    base: dict[str, object] = {
        "cluster": "agentic",
        "mode": "apply",
        "drifts": (),
        "violations": (),
        "errors": (),
        "duration_s": 1.25,
    }
    return Report(**(base | kw))  # type: ignore[arg-type]


def test_sync_output_is_the_lines_and_exit_code_of_one_app() -> None:
    done = report(
        outcomes=(
            Outcome("web", CM, Result.CREATED),
            Outcome("web", ObjectRef("", "Secret", "ns", "t"), Result.UNCHANGED),
            Outcome("other", CM, Result.FAILED, "422"),
        ),
        drifts=(("other", Drift(DriftType.CHANGED, CM, "v1", (Change("/a", 1, 2),))),),
        notes={"web": ("prune blocked: guard",), "other": ("ignored",)},
    )

    output = requests.sync_output(done, "web")

    assert output.out == (
        "agentic/web ConfigMap ns/settings: created",
        "agentic: converged in 1.2s (1 created, 1 unchanged)",
    )
    assert output.err == ("agentic/web: prune blocked: guard",)
    assert output.exit_code == requests.EXIT_OK
    assert output.lines[-1] == "err: agentic/web: prune blocked: guard"
    assert requests.sync_output(done, "other").exit_code == requests.EXIT_FAILED
    assert requests.sync_output(done, None).out[-1].startswith("agentic: failed")
    broken = report(errors=(ObjectError("web", None, "app web: render failed"),))
    assert requests.sync_output(broken, "web").exit_code == requests.EXIT_STOPPED


def test_a_prune_bound_to_objects_confirms_only_those_and_holds_the_rest() -> None:
    # An approval offered for 3 held objects, carried out after the prune grew to 10.
    owned = configmaps(11)
    shown = frozenset(ref(o) for o in owned[1:4])
    bound = {"incident-db": SyncRequest(prune=True, objects=shown)}

    p = run(owned[:1], live=owned, inventory=owned, requested=bound)
    whole = run(
        owned[:1], live=owned, inventory=owned, requested={"incident-db": SyncRequest(True)}
    )

    assert pruned(p) == ["cm-01", "cm-02", "cm-03"]
    held = by_ref(p)[ref(owned[5])]
    assert held.kind is ActionKind.NONE and held.reason == PRUNE_HELD + UNAPPROVED
    (finding,) = p.findings
    assert "7 objects not pruned: not among the objects the approval showed" in finding.message
    assert len(pruned(whole)) == 10, "the command's `sync --prune` still confirms them all"


def test_an_object_bound_prune_still_keeps_what_protections_keep() -> None:
    owned = [*configmaps(3), pvc()]
    every = frozenset(ref(o) for o in owned)
    p = run(
        owned[:1],
        live=owned,
        inventory=owned,
        requested={"incident-db": SyncRequest(True, every)},
    )
    assert pruned(p) == ["cm-01", "cm-02"]
    assert by_ref(p)[ref(pvc())].reason.startswith("protected: ")


def _asked(app: str, prune: bool, *names: str) -> requests.Request:
    objects = frozenset(ObjectRef("", "ConfigMap", "ns", n) for n in names) if names else None
    return requests.Request(f"{app}{names}", app, prune, "t", "u", None, objects)


def test_requests_of_one_app_merge_into_one_sync_pruning_what_any_confirms() -> None:
    a, b = ObjectRef("", "ConfigMap", "ns", "a"), ObjectRef("", "ConfigMap", "ns", "b")
    wanted = requests.wanted(
        [
            _asked("web", True, "a"),
            _asked("web", True, "b"),
            _asked("web", False),
            _asked("db", False),
            _asked("api", True, "a"),
            _asked("api", True),
        ]
    )
    assert wanted == {
        "web": SyncRequest(True, frozenset({a, b})),
        "db": SyncRequest(False, None),
        "api": SyncRequest(True, None),
    }


@pytest.mark.parametrize(
    "ref_",
    [
        ObjectRef("", "ConfigMap", "ai", "init-sql"),
        ObjectRef("", "Namespace", "", "ai"),
        ObjectRef("rbac.authorization.k8s.io", "ClusterRole", "", "system:view"),
        ObjectRef("apps", "Deployment", "ai", "web"),
    ],
)
def test_an_object_ref_is_read_back_from_its_text(ref_: ObjectRef) -> None:
    assert ObjectRef.parse(str(ref_)) == ref_
