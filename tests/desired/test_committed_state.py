"""`reconciler render` shows what is committed on the tracked ref: uncommitted
edits and untracked files in the operator's clone never change its output;
a commit on the tracked ref does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pygit2
import pytest

from reconciler.cli import main
from testenv.gitrepos import commit_files, fixture_files, make_upstream_and_clone
from tests.desired.conftest import write_config

GATUS = "kubernetes/platform/gatus/deployment.yaml"
EXTRA = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: added-by-test\n"


def _render(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["render", "--config", str(config), "--app", "gatus", "-o", "json", *extra]) == 0
    return capsys.readouterr().out


def _edited(clone: Path) -> bytes:
    return (clone / GATUS).read_bytes().replace(b"gatus-config", b"gatus-config-edited")


@pytest.fixture
def monit(tmp_path: Path) -> tuple[Path, Path]:
    return make_upstream_and_clone(tmp_path, "monit_homelab", fixture_files("monit_homelab"))


def _dirty(clone: Path) -> None:
    (clone / GATUS).write_bytes(_edited(clone))
    (clone / GATUS).with_name("untracked.yaml").write_bytes(EXTRA)


def test_uncommitted_edits_do_not_change_render_and_a_local_commit_does(
    monit: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, clone = monit
    config = write_config(tmp_path / "cfg", {"monit_homelab": clone}, ref="refs/heads/main")
    before = _render(config, capsys)
    assert "gatus-config" in before
    _dirty(clone)
    assert _render(config, capsys) == before
    commit_files(pygit2.Repository(str(clone)), "refs/heads/main", {GATUS: _edited(clone)}, "edit")
    after = _render(config, capsys)
    assert after != before and "gatus-config-edited" in after and "added-by-test" not in after


def test_a_commit_pushed_upstream_is_rendered_after_fetch(
    monit: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream, clone = monit
    config = write_config(tmp_path / "cfg", {"monit_homelab": clone})
    before = _render(config, capsys)
    _dirty(clone)
    commit_files(
        pygit2.Repository(str(upstream)), "refs/heads/main", {GATUS: _edited(clone)}, "pushed"
    )
    assert _render(config, capsys) == before
    assert "gatus-config-edited" in _render(config, capsys, "--fetch")


def test_render_offline_keeps_the_last_fetched_commit_and_says_so(
    monit: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream, clone = monit
    config = write_config(tmp_path / "cfg", {"monit_homelab": clone})
    commit_files(
        pygit2.Repository(str(upstream)), "refs/heads/main", {GATUS: _edited(clone)}, "pushed"
    )
    fetched = _render(config, capsys, "--fetch")
    shutil.rmtree(upstream)
    assert main(["render", "--config", str(config), "--app", "gatus", "-o", "json", "--fetch"]) == 0
    out, err = capsys.readouterr()
    assert out == fetched and "gatus-config-edited" in out
    assert "offline, keeping the last fetched commit" in err
