"""Remote fetches are opt-in: a commit cannot make the management host call an
address `[render] allow_remote` does not list. Each test points the attack at a
loopback HTTP server of its own and counts the requests it received."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.security.conftest import MakeLab, application
from tests.security.untrusted import assert_only_app_failed, chart, recording_server

VALUES = b"greeting: from-the-network\n"
CONFIG_MAP = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fetched\n"
CHART = chart('  greeting: {{ .Values.greeting | default "none" | quote }}\n')


def _values_app(url: str) -> bytes:
    return application("evil", {"path": "charts/evil", "helm": {"valueFiles": [url]}})


def test_a_helm_value_file_url_is_refused_without_a_request(attack_lab: MakeLab) -> None:
    with recording_server({"/values.yaml": VALUES}) as server:
        app = _values_app(f"{server.url}/values.yaml")
        result = attack_lab({"kubernetes/argocd-apps/evil.yaml": app, **CHART}).render()
    assert server.requests == []
    assert_only_app_failed(result, "evil", "value file", "not in [render] allow_remote")


def test_a_helm_value_file_from_an_allowed_host_is_fetched_and_used(attack_lab: MakeLab) -> None:
    with recording_server({"/values.yaml": VALUES}) as server:
        app = _values_app(f"{server.url}/values.yaml")
        lab = attack_lab(
            {"kubernetes/argocd-apps/evil.yaml": app, **CHART},
            render_toml=f'allow_remote = ["127.0.0.1:{server.port}"]',
        )
        result = lab.render()
    assert result.returncode == 0, result.stderr
    assert server.requests == ["/values.yaml"]
    evil = [r["object"] for r in json.loads(result.stdout) if r["app"] == "evil"]
    assert evil[0]["data"] == {"greeting": "from-the-network"}


def test_allowing_another_port_of_the_same_host_does_not_allow_this_one(
    attack_lab: MakeLab,
) -> None:
    with recording_server({"/values.yaml": VALUES}) as server:
        app = _values_app(f"{server.url}/values.yaml")
        result = attack_lab(
            {"kubernetes/argocd-apps/evil.yaml": app, **CHART},
            render_toml=f'allow_remote = ["127.0.0.1:{server.port + 1}"]',
        ).render()
    assert server.requests == []
    assert_only_app_failed(result, "evil", f"127.0.0.1:{server.port}", "allow_remote")


@pytest.mark.parametrize(
    "kustomization",
    [
        "resources:\n- {url}/cm.yaml\n",
        "resources:\n- 127.0.0.1:{port}/cm\n",
        "resources:\n- git::{url}/repo.git//cm?ref=main\n",
        "components:\n- {url}/component\n",
        "resources:\n- cm.yaml\npatches:\n- path: {url}/cm.yaml\n",
        "configMapGenerator:\n- name: x\n  files:\n  - {url}/cm.yaml\n",
        "configMapGenerator:\n- name: x\n  files:\n  - key={url}/cm.yaml\n",
        "resources:\n- cm.yaml\nopenapi:\n  path: {url}/cm.yaml\n",
        "resources:\n- ../base\n",  # the remote entry is in a local base
    ],
)
def test_a_kustomize_remote_reference_is_refused_without_a_request(
    attack_lab: MakeLab, kustomization: str
) -> None:
    with recording_server({"/cm.yaml": CONFIG_MAP}) as server:
        text = kustomization.format(url=server.url, port=server.port)
        files = {
            "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "kz/evil"}),
            "kz/evil/kustomization.yaml": text.encode(),
            "kz/evil/cm.yaml": CONFIG_MAP,
            "kz/base/kustomization.yaml": f"resources:\n- {server.url}/cm.yaml\n".encode(),
        }
        result = attack_lab(files).render()
    assert server.requests == []
    assert_only_app_failed(result, "evil", "kustomization.yaml", "not in [render] allow_remote")


def test_kustomize_helm_charts_are_not_pulled(attack_lab: MakeLab) -> None:
    """kustomize's chart inflator pulls from `helmCharts[].repo`: a repository that
    [render] allow_remote does not name is refused before kustomize runs."""
    with recording_server({}) as server:
        helm_charts = {"helmCharts": [{"name": "x", "repo": server.url, "version": "1.0.0"}]}
        files = {
            "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "kz/evil"}),
            "kz/evil/kustomization.yaml": yaml.safe_dump(helm_charts).encode(),
        }
        result = attack_lab(files).render()
    assert server.requests == []
    assert_only_app_failed(result, "evil", "helmCharts[0].repo", "not in [render] allow_remote")


def test_local_chart_dependencies_are_not_fetched(attack_lab: MakeLab) -> None:
    """`helm template` of a chart whose dependency is missing fails; it never downloads it."""
    with recording_server({}) as server:
        files = dict(CHART)
        files["charts/evil/Chart.yaml"] = (
            "apiVersion: v2\nname: evil\nversion: 0.1.0\ndependencies:\n"
            f"- name: dep\n  version: 1.0.0\n  repository: {server.url}\n"
        ).encode()
        app = application("evil", {"path": "charts/evil"})
        result = attack_lab({"kubernetes/argocd-apps/evil.yaml": app, **files}).render()
    assert server.requests == []
    assert_only_app_failed(result, "evil", "helm template of charts/evil failed")
