"""The catalogue: Applications and config-declared apps -> App list, with
clusters and repos resolved through configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.catalogue import Catalogue, build_catalogue
from reconciler.config import load_config
from reconciler.desired import open_sources
from reconciler.model import HelmParameter
from testenv.gitrepos import FileContent, make_upstream_and_clone

MULTI_SOURCE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Application",
    "metadata": {"name": "operator", "annotations": {"argocd.argoproj.io/sync-wave": "-2"}},
    "spec": {
        "sources": [
            {
                "repoURL": "https://charts.example.com",
                "chart": "op",
                "targetRevision": "1.2.3",
                "helm": {
                    "releaseName": "op",
                    "valueFiles": ["$values/values/op.yaml"],
                    "parameters": [{"name": "a", "value": "1", "forceString": True}],
                },
            },
            # Case, a trailing '/' and no '.git': still the configured repo.
            {
                "repoURL": "HTTPS://GitHub.com/Example/Lab/",
                "targetRevision": "main",
                "ref": "values",
            },
        ],
        "destination": {"name": "in-cluster", "namespace": "ops"},
        "syncPolicy": {"automated": {"prune": True}, "syncOptions": ["CreateNamespace=true"]},
        "ignoreDifferences": [
            {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}
        ],
    },
}
BY_NAME: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Application",
    "metadata": {"name": "by-name"},
    "spec": {
        "source": {
            "repoURL": "https://github.com/example/lab.git",
            "path": "x",
            "directory": {"recurse": True, "exclude": "*.json"},
        },
        "destination": {"name": "agentic", "namespace": "x"},
    },
}


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    files: dict[str, FileContent] = {
        "apps/operator.yaml": yaml.safe_dump(MULTI_SOURCE).encode(),
        "apps/nested/by-name.json": json.dumps(BY_NAME).encode(),
        "apps/nested/dupe.yaml": yaml.safe_dump(
            {**BY_NAME, "spec": {**BY_NAME["spec"], "destination": {"name": "agentic"}}}
        ).encode(),
    }
    _, clone = make_upstream_and_clone(tmp_path, "lab", files)
    config_file = tmp_path / "config.toml"
    config_file.write_text(f"""
[daemon]
state_dir = "state"
[[repos]]
name = "lab"
path = "{clone}"
url = "https://github.com/example/lab.git"
apps = ["apps"]
[[clusters]]
name = "prod"
argocd = true
kubeconfig = "k"
servers = ["https://kubernetes.default.svc"]
[[clusters]]
name = "agentic"
mode = "apply"
kubeconfig = "k"
servers = ["https://10.20.0.40:6443"]
[[apps]]
name = "declared"
repo = "lab"
path = "deploy"
cluster = "agentic"
namespace = "declared"
""")
    config = load_config(config_file)
    sources = open_sources(config)
    return build_catalogue(config, sources.trees, sources.urls)


def test_multi_source_application_keeps_its_sources_and_sync_settings(
    catalogue: Catalogue,
) -> None:
    app = next(a for a in catalogue.apps if a.name == "operator")
    assert app.cluster == "prod"  # destination.name in-cluster -> kubernetes.default.svc
    assert app.namespace == "ops" and app.sync_wave == -2
    chart, values = app.sources
    assert chart.chart == "op" and chart.target_revision == "1.2.3" and chart.repo is None
    assert chart.helm is not None and chart.helm.value_files == ("$values/values/op.yaml",)
    assert chart.helm.parameters == (HelmParameter("a", "1", True),)
    assert values.repo == "lab" and values.ref == "values" and values.path is None
    assert app.sync_option("CreateNamespace") == "true"
    assert app.sync_policy["automated"] == {"prune": True}
    assert app.ignore_differences[0]["jsonPointers"] == ["/spec/replicas"]
    assert app.origin.path == "apps/operator.yaml" and len(app.origin.commit) == 40


def test_destination_by_cluster_name_and_directory_options_are_read(
    catalogue: Catalogue,
) -> None:
    app = next(a for a in catalogue.apps if a.name == "by-name")
    assert app.cluster == "agentic" and app.origin.path == "apps/nested/by-name.json"
    (source,) = app.sources
    assert source.directory is not None
    assert (source.directory.recurse, source.directory.exclude) == (True, "*.json")


def test_config_declared_apps_join_the_catalogue(catalogue: Catalogue) -> None:
    app = next(a for a in catalogue.apps if a.name == "declared")
    assert (app.cluster, app.namespace, app.sources[0].path) == ("agentic", "declared", "deploy")
    assert app.origin.repo == "config"


def test_a_second_app_with_the_same_name_is_an_error_on_it(catalogue: Catalogue) -> None:
    (error,) = catalogue.errors
    assert error.app == "by-name" and "apps/nested/dupe.yaml" in error.message
    assert "already used by lab:apps/nested/by-name.json" in error.message
