"""Render every Application of the three real homelab repositories, committed
into real git repositories, with Helm charts from a real chart repository."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.model import App
from testenv.gitrepos import FIXTURES
from tests.desired.conftest import (
    ChartRepo,
    Homelab,
    chart_sources,
    fixture_applications,
    unused_port,
    write_config,
)

# Applications whose sources live in GitHub repositories outside the three configured.
UNCONFIGURED = {
    "investmentology": "https://github.com/charlieshreck/investmentology.git",
    "domain-mcps": "https://github.com/charlieshreck/kernow-mcp-servers.git",
}


def _render(config_file: Path) -> Desired:
    config = load_config(config_file)
    return build_desired(config, open_sources(config), tools_for(config))


def _errors(desired: Desired) -> dict[str, str]:
    return {e.app: e.message for e in desired.errors}


def _is_helm(app: App) -> bool:
    return any(s.chart for s in app.sources)


def _configmap(desired: Desired, cluster: str, app: str) -> Mapping[str, Any]:
    maps = [
        m.obj
        for m in desired.clusters[cluster].manifests
        if m.origin.app == app
        and m.obj["kind"] == "ConfigMap"
        and "values" in m.obj.get("data", {})
    ]
    assert len(maps) == 1, f"expected one chart ConfigMap from {app}"
    return maps[0]


@pytest.fixture(scope="module")
def online(
    homelab: Homelab, chart_repo: ChartRepo, tmp_path_factory: pytest.TempPathFactory
) -> Desired:
    config = write_config(
        tmp_path_factory.mktemp("online"),
        homelab.clones,
        mirror=chart_repo.url,
        chart_urls={u for u, _, _ in chart_repo.charts},
    )
    return _render(config)


def test_catalogue_holds_every_application_of_the_three_repositories(online: Desired) -> None:
    expected = {doc["metadata"]["name"] for doc in fixture_applications()}
    catalogued = {a.name for a in online.catalogue.apps} | {e.app for e in online.catalogue.errors}
    assert catalogued == expected
    assert len(expected) >= 120


def test_only_apps_of_unconfigured_repositories_fail(online: Desired) -> None:
    errors = _errors(online)
    assert set(errors) == set(UNCONFIGURED)
    for app, url in UNCONFIGURED.items():
        assert url in errors[app] and "not a configured repo" in errors[app]


def test_every_app_renders_objects_into_its_cluster(online: Desired) -> None:
    for app in online.catalogue.apps:
        if app.name in UNCONFIGURED:
            continue
        produced = [m for m in online.clusters[app.cluster].manifests if m.origin.app == app.name]
        assert produced, f"{app.name} rendered no objects"
        assert all(m.origin.repo and m.origin.commit and m.origin.path for m in produced)


def test_destination_servers_map_to_the_configured_clusters(online: Desired) -> None:
    apps = {a.name: a for a in online.catalogue.apps}
    assert apps["sonarr"].cluster == "prod"
    assert apps["arc-controller"].cluster == "agentic"  # prod repo, agentic server
    assert apps["coroot-agent-prod"].cluster == "prod"  # monit repo, in-cluster server
    assert apps["coroot-agent-agentic"].cluster == "agentic"
    assert apps["victoria-metrics"].cluster == "monit"


def test_namespaced_objects_without_namespace_get_the_destination_namespace(
    online: Desired,
) -> None:
    for cluster in online.clusters.values():
        for m in cluster.manifests:
            if m.ref.namespace:
                assert m.obj["metadata"]["namespace"] == m.ref.namespace
            else:
                assert "namespace" not in m.obj["metadata"], str(m.ref)
    sonarr = [m for m in online.clusters["prod"].manifests if m.origin.app == "sonarr"]
    assert {m.ref.namespace for m in sonarr if m.ref.kind != "Namespace"} == {"media"}


def test_objects_keep_the_commit_and_file_they_came_from(online: Desired, homelab: Homelab) -> None:
    import pygit2

    head = str(pygit2.Repository(str(homelab.clones["monit_homelab"])).head.target)
    gatus = [m for m in online.clusters["monit"].manifests if m.origin.app == "gatus"]
    assert gatus and {m.origin.commit for m in gatus} == {head}
    for m in gatus:
        assert m.origin.repo == "monit_homelab"
        assert (FIXTURES / "monit_homelab" / m.origin.path).is_file()


def test_helm_values_reach_the_chart_in_argo_cd_order(online: Desired) -> None:
    cert_manager = _configmap(online, "prod", "cert-manager")
    assert cert_manager["metadata"]["name"] == "cert-manager-cert-manager"  # releaseName
    assert cert_manager["metadata"]["namespace"] == "cert-manager"
    values = json.loads(cert_manager["data"]["values"])
    assert values["dns01RecursiveNameservers"] == "8.8.8.8:53,1.1.1.1:53"  # comma kept
    assert values["crds"] == {"enabled": True, "keep": True}
    assert values["fromChartDefaults"] is True

    mayastor_values = yaml.safe_load(
        (FIXTURES / "prod_homelab/kubernetes/platform/mayastor/resources/values.yaml").read_text()
    )
    mayastor = json.loads(_configmap(online, "prod", "mayastor-operator")["data"]["values"])
    for key, value in mayastor_values.items():
        assert mayastor[key] == value  # `$values/...` file from the ref source

    metrics = json.loads(_configmap(online, "monit", "victoria-metrics")["data"]["values"])
    assert metrics["server"]["retentionPeriod"] == "12"  # valuesObject
    coroot = _configmap(online, "monit", "coroot-operator")
    assert coroot["metadata"]["name"] == "coroot-operator-coroot-operator"  # app name


def test_charts_are_cached_per_repository_chart_and_version(
    homelab: Homelab, chart_repo: ChartRepo, tmp_path: Path
) -> None:
    urls = {u for u, _, _ in chart_repo.charts}
    config = write_config(tmp_path, homelab.clones, mirror=chart_repo.url, chart_urls=urls)
    assert _errors(_render(config)).keys() == UNCONFIGURED.keys()
    refs = list((tmp_path / "state" / "charts" / "refs").iterdir())
    assert len(refs) == len(chart_repo.charts)  # velero 12.0.0 is one entry, not two apps
    archives = list((tmp_path / "state" / "charts" / "sha256").glob("*.tgz"))
    assert len(archives) == len(chart_repo.charts)
    dead = write_config(
        tmp_path, homelab.clones, mirror=f"http://127.0.0.1:{unused_port()}", chart_urls=urls
    )
    assert _errors(_render(dead)).keys() == UNCONFIGURED.keys()  # served from the cache


def test_offline_helm_apps_fail_with_chart_not_available_and_the_rest_render(
    homelab: Homelab, chart_repo: ChartRepo, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        homelab.clones,
        mirror=f"http://127.0.0.1:{unused_port()}",
        chart_urls={u for u, _, _ in chart_repo.charts},
    )
    desired = _render(config)
    errors = _errors(desired)
    helm_apps = {a.name for a in desired.catalogue.apps if _is_helm(a)}
    assert helm_apps and set(errors) == helm_apps | UNCONFIGURED.keys()
    for app in desired.catalogue.apps:
        if app.name in helm_apps:
            chart = next(s.chart for s in app.sources if s.chart)
            assert "chart not available" in errors[app.name] and str(chart) in errors[app.name]
            assert app.name in desired.clusters[app.cluster].failed
        elif app.name not in UNCONFIGURED:
            assert any(m.origin.app == app.name for m in desired.clusters[app.cluster].manifests)
    assert all(
        chart_sources(doc) for doc in fixture_applications() if doc["metadata"]["name"] in helm_apps
    )


def test_render_command_prints_json_rows_for_one_cluster(
    homelab: Homelab, chart_repo: ChartRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        homelab.clones,
        mirror=chart_repo.url,
        chart_urls={u for u, _, _ in chart_repo.charts},
    )
    assert main(["render", "--config", str(config), "--cluster", "monit", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert err == ""
    assert rows and {r["cluster"] for r in rows} == {"monit"}
    assert all(set(r) == {"cluster", "app", "repo", "commit", "path", "object"} for r in rows)


def test_render_command_prints_yaml_and_one_error_line_per_failed_app(
    homelab: Homelab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, homelab.clones)
    assert main(["render", "--config", str(config), "--cluster", "agentic"]) == 1
    out, err = capsys.readouterr()
    docs = list(yaml.safe_load_all(out))
    assert docs and all(d["apiVersion"] and d["kind"] and d["metadata"]["name"] for d in docs)
    lines = err.splitlines()
    assert any(ln.startswith("app domain-mcps (cluster agentic): ") for ln in lines)
    assert "Traceback" not in err
    assert all(ln.startswith("app ") for ln in lines)


def test_render_command_with_app_prints_only_that_app(
    homelab: Homelab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, homelab.clones)
    assert main(["render", "--config", str(config), "--app", "gatus", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["app"] for r in rows} == {"gatus"}
