"""The attack suite's lab: one real git repository whose Applications an attacker
wrote, a config pointing at it, and the real `reconciler` CLI run over it.

Each test commits the files of one attack (plus an honest app beside it, which
must keep rendering) and asserts the attack fails safely."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testenv.gitrepos import FileContent, make_upstream_and_clone
from tests.builders import config_map, yaml_file
from tests.desired.conftest import write_config
from tests.helpers_lab import reconciler_cli

REPO_URL = "https://git.example.invalid/attacker/lab.git"
AGENTIC = "https://10.20.0.40:6443"
HONEST_APP = "honest"


def application(name: str, source: Mapping[str, Any], server: str = AGENTIC) -> bytes:
    """An Argo CD Application of the lab repo; `source` is merged over repoURL/targetRevision."""
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": REPO_URL, "targetRevision": "main", **source},
            "destination": {"server": server, "namespace": name},
        },
    }
    return yaml_file(doc)


def honest_files() -> dict[str, FileContent]:
    """An ordinary app that every attack test expects to keep rendering."""
    return {
        f"kubernetes/argocd-apps/{HONEST_APP}.yaml": application(
            HONEST_APP, {"path": f"apps/{HONEST_APP}"}
        ),
        f"apps/{HONEST_APP}/cm.yaml": yaml_file(config_map("still-here", {"k": "v"})),
    }


@dataclass(frozen=True)
class AttackLab:
    """A committed repo with the attack's files, and a config over it."""

    base: Path
    clone: Path
    config: Path
    state_dir: Path

    def render(self, *args: str) -> subprocess.CompletedProcess[str]:
        return reconciler_cli(self.config, "render", "-o", "json", *args)


MakeLab = Callable[..., AttackLab]


@pytest.fixture
def attack_lab(tmp_path: Path) -> MakeLab:
    """`attack_lab(files, render_toml="")`: the attack's files committed beside the
    honest app, and a config whose [render] table gets `render_toml` appended."""

    def make(files: Mapping[str, FileContent], render_toml: str = "") -> AttackLab:
        _, clone = make_upstream_and_clone(tmp_path, "lab", {**honest_files(), **files})
        config = write_config(tmp_path, {"lab": clone}, urls={"lab": REPO_URL}, render=render_toml)
        state = tmp_path / "state"
        return AttackLab(tmp_path, clone, config, state)

    return make
