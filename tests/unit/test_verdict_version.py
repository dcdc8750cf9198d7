"""An in-sync verdict is stored under a digest that names the cluster's mode and the
diff's version (reconciler.diff.DIFF_VERSION): after an upgrade that changes what the
diff calls in sync, a restart never trusts a verdict the old diff gave, and a verdict
of a report-mode diff is never one of an apply-mode cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from reconciler import drift
from reconciler.diff import DIFF_VERSION
from reconciler.drift import AppRules, Differ, prepare
from reconciler.model import Drift, ObjectRef
from reconciler.pairs import Pair
from reconciler.record import Recorder
from reconciler.store import Store
from tests.unit.test_plan import manifest, obj

DESIRED = obj("v1", "ConfigMap", "settings", data={"level": "info"})
LIVE = DESIRED | {"metadata": DESIRED["metadata"] | {"uid": "u1"}, "data": {"level": "debug"}}
M = manifest(DESIRED)
REF = M.ref


def contain(_ref: ObjectRef, exc: BaseException) -> str:
    return repr(exc)


def differ(store: Store, report_only: bool = True) -> Differ:
    """A fresh diff stage, as after a restart: it remembers only what the store holds."""
    return Differ(
        "prod",
        report_only=report_only,
        client=cast(Any, None),
        cache=cast(Any, None),
        policies=cast(Any, None),
        recorder=Recorder(store, "prod"),
        contain=contain,
    )


def diff_after_restart(store: Store) -> tuple[object, Differ]:
    """The report-mode diff of DESIRED against LIVE by a fresh stage, and the stage."""
    stage = differ(store)
    pair = Pair(REF, M, LIVE, None)
    prepared = prepare([M], tracked=False, contain=contain)
    return stage._diff(pair, AppRules(), prepared, stage.recorder.verdicts()), stage


def test_drift_an_older_diff_called_in_sync_is_found_after_an_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "state.db")
    with monkeypatch.context() as old:
        old.setattr(drift, "DIFF_VERSION", "0")
        found, stage = diff_after_restart(store)
        assert isinstance(found, Drift)
        # As if the old diff had found the pair in sync, and stored its verdict.
        store.remember_in_sync("prod", [(REF, stage.memo[REF][0])])
        assert diff_after_restart(store)[0] is None, "the old version trusts its verdict"
    assert isinstance(diff_after_restart(store)[0], Drift), f"not under version {DIFF_VERSION}"


def test_a_report_mode_verdict_is_not_an_apply_mode_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    prepared = prepare([M], tracked=False, contain=contain)
    report, apply = (
        differ(store, mode).verdict(M, LIVE, AppRules(), prepared) for mode in (True, False)
    )
    assert report != apply
