"""App-of-apps with real repos, helm and kustomize: Applications a Helm chart, a
kustomization or a plain directory renders join the catalogue on a cluster without
Argo CD (and their objects are rendered), stay ordinary desired objects on the Argo
CD cluster, and cycles, over-deep chains and taken names are refused by name while
their siblings render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.config import Config, parse_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.pruneguard import AppTrace, Fate, departure
from testenv.gitrepos import commit_files, make_upstream_and_clone
from tests.desired.conftest import require_helm
from tests.helpers_lab import reconciler_cli

URL = "https://example.invalid/lab.git"
AGENTIC = "https://10.20.0.40:6443"
PROD = "https://kubernetes.default.svc"


def _application(name: str, path: str, server: str = AGENTIC) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "destination": {"server": server, "namespace": name},
            "source": {"repoURL": URL, "path": path},
            "syncPolicy": {"automated": {"prune": True}},
        },
    }


def _configmap(name: str) -> bytes:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}
    return yaml.safe_dump(doc).encode()


def _yaml(*docs: dict[str, Any]) -> bytes:
    return yaml.safe_dump_all(docs).encode()


# A chart whose template renders one Application per entry of .Values.children.
HELM_ROOT = {
    "roots/helm/Chart.yaml": b"apiVersion: v2\nname: root\nversion: 0.1.0\n",
    "roots/helm/values.yaml": yaml.safe_dump({"children": ["helm-child", "plain"]}).encode(),
    "roots/helm/templates/apps.yaml": (
        b"{{- range .Values.children }}\n---\n"
        + yaml.safe_dump(_application("NAME", "children/NAME")).replace("NAME", "{{ . }}").encode()
        + b"{{- end }}\n"
    ),
    "roots/helm/templates/cm.yaml": _configmap("helm-root-own"),
}
KUSTOMIZE_ROOT = {
    "roots/kust/kustomization.yaml": b"resources:\n  - child.yaml\n  - cm.yaml\n",
    "roots/kust/child.yaml": _yaml(_application("kust-child", "children/kust-child")),
    "roots/kust/cm.yaml": _configmap("kust-root-own"),
}
FILES = {
    **HELM_ROOT,
    **KUSTOMIZE_ROOT,
    "apps/helm-root.yaml": _yaml(_application("helm-root", "roots/helm")),
    "apps/kust-root.yaml": _yaml(_application("kust-root", "roots/kust")),
    # The same kustomization on the Argo CD cluster: its Application stays an object.
    "apps/prod-root.yaml": _yaml(_application("prod-root", "roots/kust", PROD)),
    "apps/plain.yaml": _yaml(_application("plain", "children/plain")),
    # A cycle: cyc-a renders cyc-b, which renders cyc-a again and cyc-c.
    "apps/cyc-a.yaml": _yaml(_application("cyc-a", "cyc/a")),
    "cyc/a/app.yaml": _yaml(_application("cyc-b", "cyc/b")),
    "cyc/b/app.yaml": _yaml(_application("cyc-a", "cyc/a"), _application("cyc-c", "cyc/c")),
    "cyc/c/cm.yaml": _configmap("cyc-c-own"),
    # A chain d0 -> d1 -> d2 -> d3 -> d4, one deeper than max_app_depth = 3.
    "apps/d0.yaml": _yaml(_application("d0", "deep/d0")),
    **{f"deep/d{i}/app.yaml": _yaml(_application(f"d{i + 1}", f"deep/d{i + 1}")) for i in range(4)},
    "deep/d2/sibling.yaml": _yaml(_application("d3-sibling", "children/plain-ok")),
    "deep/d4/cm.yaml": _configmap("d4-own"),
    **{f"children/{n}/cm.yaml": _configmap(f"{n}-own") for n in ("helm-child", "kust-child")},
    "children/plain/cm.yaml": _configmap("plain-own"),
    "children/plain-ok/cm.yaml": _configmap("plain-ok-own"),
}


def _config(tmp: Path, clone: Path) -> Config:
    return parse_config(
        {
            "daemon": {"state_dir": str(tmp / "state")},
            "render": {"helm": require_helm(), "max_app_depth": 3},
            "repos": [{"name": "lab", "path": str(clone), "url": URL, "apps": ["apps"]}],
            "clusters": [
                {"name": "agentic", "mode": "apply", "kubeconfig": "k", "servers": [AGENTIC]},
                {"name": "prod", "argocd": True, "kubeconfig": "k", "servers": [PROD]},
            ],
        },
        tmp / "config.toml",
    )


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Desired:
    tmp = tmp_path_factory.mktemp("app-of-apps")
    _, clone = make_upstream_and_clone(tmp, "lab", FILES)
    config = _config(tmp, clone)
    return build_desired(config, open_sources(config), tools_for(config))


def _objects(desired: Desired, cluster: str) -> dict[str, str]:
    """name of each desired object -> the app that renders it."""
    return {m.ref.name: m.origin.app for m in desired.clusters[cluster].manifests}


def _errors(desired: Desired) -> list[str]:
    return [str(e) for e in desired.errors]


def test_a_helm_app_of_apps_on_an_apply_cluster_renders_its_children(desired: Desired) -> None:
    objects = _objects(desired, "agentic")
    assert objects["helm-root-own"] == "helm-root"
    assert objects["helm-child-own"] == "helm-child"
    assert "helm-child" not in objects  # the Application object itself is not applied
    child = next(a for a in desired.catalogue.apps if a.name == "helm-child")
    assert child.origin.where == "app helm-root rendered root/templates/apps.yaml"
    assert child.cluster == "agentic" and child.namespace == "helm-child"


def test_a_kustomize_app_of_apps_on_an_apply_cluster_renders_its_children(
    desired: Desired,
) -> None:
    objects = _objects(desired, "agentic")
    assert objects["kust-root-own"] == "kust-root"
    assert objects["kust-child-own"] == "kust-child"
    kinds = {m.ref.kind for m in desired.clusters["agentic"].manifests}
    assert "Application" not in kinds


def test_on_the_argo_cd_cluster_rendered_applications_stay_desired_objects(
    desired: Desired,
) -> None:
    prod = {(m.ref.kind, m.ref.name) for m in desired.clusters["prod"].manifests}
    assert ("Application", "kust-child") in prod
    assert ("ConfigMap", "kust-root-own") in prod
    # kust-child is the agentic root's child (a different parent on a different cluster).
    child = next(a for a in desired.catalogue.apps if a.name == "kust-child")
    assert child.origin.parent == "kust-root"


def test_a_cycle_is_reported_naming_it_and_the_rest_renders(desired: Desired) -> None:
    cycle = [e for e in _errors(desired) if "cycle" in e]
    assert cycle == [
        "app cyc-b (cluster agentic): renders Application cyc-a, its own ancestor: "
        "cycle cyc-a -> cyc-b -> cyc-a (app cyc-b rendered cyc/b/app.yaml); "
        "it is not rendered again"
    ]
    assert _objects(desired, "agentic")["cyc-c-own"] == "cyc-c"


def test_a_chain_past_the_depth_bound_is_an_error_naming_it_and_siblings_render(
    desired: Desired,
) -> None:
    deep = [e for e in _errors(desired) if "max_app_depth" in e]
    assert len(deep) == 1
    assert deep[0].startswith("app d3 (cluster agentic): renders Application d4 deeper than")
    assert "d0 -> d1 -> d2 -> d3 -> d4" in deep[0]
    objects = _objects(desired, "agentic")
    assert "d4-own" not in objects
    assert objects["plain-ok-own"] == "d3-sibling"


def test_a_child_taking_a_declared_name_is_refused_and_its_siblings_render(
    desired: Desired,
) -> None:
    taken = [e for e in _errors(desired) if "also declared" in e]
    assert taken == [
        "app plain (cluster agentic): app helm-root rendered root/templates/apps.yaml: "
        "the name is also declared at lab:apps/plain.yaml; this Application is refused"
    ]
    plain = next(a for a in desired.catalogue.apps if a.name == "plain")
    assert plain.origin.path == "apps/plain.yaml"  # the declared app is kept
    assert _objects(desired, "agentic")["helm-child-own"] == "helm-child"


def test_the_children_of_a_parent_whose_render_fails_are_kept_not_pruned(tmp_path: Path) -> None:
    child = _application("child", "children/child")
    child["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    upstream, clone = make_upstream_and_clone(
        tmp_path,
        "lab",
        {
            "apps/root.yaml": _yaml(_application("root", "roots/plain")),
            "roots/plain/child.yaml": _yaml(child),
            "roots/plain/own.yaml": _configmap("root-own"),
            "children/child/cm.yaml": _configmap("child-own"),
        },
    )
    config = _config(tmp_path, clone)

    def fate(files: dict[str, bytes | None]) -> Fate:
        if files:
            commit_files(pygit2.Repository(str(upstream)), "refs/heads/main", files, "change")
        desired = build_desired(config, open_sources(config, fetch=True), tools_for(config))
        found = departure(
            "child",
            trace,
            catalogued=desired.catalogue.apps,
            errors=desired.catalogue.errors,
            commits=desired.commits,
        )
        return found.fate

    first = build_desired(config, open_sources(config, fetch=True), tools_for(config))
    app = next(a for a in first.catalogue.apps if a.name == "child")
    trace = AppTrace(app.name, app.origin.repo, app.origin.path, app.prune_on_delete)
    assert trace == AppTrace("child", "lab", "apps/root.yaml", True)

    assert fate({"roots/plain/broken.yaml": b"kind: [\n"}) is Fate.KEEP  # parent fails
    # The parent renders again without the child: removed from git, so deleted.
    assert fate({"roots/plain/broken.yaml": None, "roots/plain/child.yaml": None}) is Fate.DELETE


def test_render_app_finds_an_app_another_app_renders(tmp_path: Path) -> None:
    _, clone = make_upstream_and_clone(tmp_path, "lab", FILES)
    config = tmp_path / "config.toml"
    config.write_text(
        "\n".join(
            [
                "[daemon]",
                f'state_dir = "{tmp_path / "state"}"',
                "[render]",
                f'helm = "{require_helm()}"',
                "[[repos]]",
                'name = "lab"',
                f'path = "{clone}"',
                f'url = "{URL}"',
                'apps = ["apps"]',
                "[[clusters]]",
                'name = "agentic"',
                'mode = "apply"',
                'kubeconfig = "k"',
                f'servers = ["{AGENTIC}"]',
            ]
        )
    )
    child = reconciler_cli(config, "render", "--app", "helm-child", "-o", "json")
    assert [row["object"]["metadata"]["name"] for row in json.loads(child.stdout)] == [
        "helm-child-own"
    ], child.stderr
    unknown = reconciler_cli(config, "render", "--app", "nobody")
    assert unknown.returncode == 2 and "unknown app 'nobody'" in unknown.stderr
