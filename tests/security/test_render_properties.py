"""Property test through the real CLI: whatever Applications and manifest trees a
commit holds, `reconciler render` answers with exit 0, 1 or 2 and no traceback,
and the honest app beside them still renders.

Each example is a real git repository rendered by a real CLI process (with the
real helm and kustomize), so there are fewer examples than in the in-process
properties of tests/faults/test_bad_input_properties.py; like those, they are
derandomised so CI replays the same ones."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testenv.config import Repo, Target, write_config
from testenv.gitrepos import make_upstream_and_clone
from tests.desired.conftest import HELM
from tests.faults.test_bad_input_properties import hostile_values, json_values
from tests.helpers_lab import reconciler_cli
from tests.security.conftest import AGENTIC, HONEST_APP, REPO_URL, honest_files

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=not os.environ.get("RECONCILER_HYPOTHESIS_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

source_kinds = st.sampled_from(["directory", "kustomize", "helm"])
source_keys = st.sampled_from(
    [
        ("path",),
        ("chart",),
        ("targetRevision",),
        ("helm", "releaseName"),
        ("helm", "valueFiles"),
        ("helm", "parameters"),
        ("helm", "values"),
        ("directory", "include"),
        ("directory", "recurse"),
    ]
)
kustomizations = st.fixed_dictionaries(
    {},
    optional={
        "resources": st.lists(hostile_values | st.just("cm.yaml"), max_size=3),
        "components": st.lists(hostile_values, max_size=2),
        "namespace": hostile_values,
        "commonLabels": json_values,
        "configMapGenerator": st.lists(
            st.fixed_dictionaries({"name": st.just("g"), "files": st.lists(hostile_values)}),
            max_size=1,
        ),
    },
)
manifests = st.one_of(
    json_values.map(lambda v: yaml.safe_dump(v).encode()),
    st.binary(max_size=100),
    st.just(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\n  labels: [a]\n"),
)


def _files(
    kind: str, changes: list[tuple[tuple[str, ...], Any]], kustomization: Any, manifest: bytes
) -> dict[str, bytes]:
    source: dict[str, Any] = {"repoURL": REPO_URL, "targetRevision": "main", "path": "apps/prop"}
    for path, value in changes:
        target = source
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(target.get(key, {}), dict) else {}
        target[path[-1]] = value
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "prop"},
        "spec": {"source": source, "destination": {"server": AGENTIC, "namespace": "prop"}},
    }
    files = {
        **{k: v for k, v in honest_files().items() if isinstance(v, bytes)},
        "kubernetes/argocd-apps/prop.yaml": yaml.safe_dump(app).encode(),
        "apps/prop/cm.yaml": manifest,
    }
    if kind == "kustomize":
        files["apps/prop/kustomization.yaml"] = yaml.safe_dump(kustomization).encode()
    if kind == "helm":
        files["apps/prop/Chart.yaml"] = b"apiVersion: v2\nname: prop\nversion: 0.1.0\n"
        files["apps/prop/templates/cm.yaml"] = manifest
    return files


def _render(base: Path, files: dict[str, bytes]) -> Any:
    _, clone = make_upstream_and_clone(base, "lab", files)
    config = write_config(
        base / "config.toml",
        [Repo("lab", clone, REPO_URL, "kubernetes/argocd-apps")],
        [Target("agentic", False, base / "agentic.kubeconfig", AGENTIC)],
        {"daemon": {"state_dir": str(base / "state")}, "render": {"helm": str(HELM)}},
    )
    return reconciler_cli(config, "render", "-o", "json")


@SETTINGS
@given(
    kind=source_kinds,
    changes=st.lists(st.tuples(source_keys, hostile_values), max_size=3),
    kustomization=kustomizations,
    manifest=manifests,
)
def test_any_commit_renders_or_fails_per_app_without_a_traceback(
    tmp_path: Path,
    kind: str,
    changes: list[tuple[tuple[str, ...], Any]],
    kustomization: Any,
    manifest: bytes,
) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    result = _render(base, _files(kind, changes, kustomization, manifest))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2), (result.returncode, result.stderr)
    assert HONEST_APP in {row["app"] for row in json.loads(result.stdout)}, result.stderr
    if result.returncode == 1:
        assert any("prop" in line for line in result.stderr.splitlines()), result.stderr
