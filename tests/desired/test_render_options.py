"""Argo CD's render options with real repos, helm and kustomize: `[render]
kustomize_build_options` (`--enable-helm` inflating `helmCharts` from a loopback
chart repository, `--load-restrictor=LoadRestrictionsNone`) and the Helm source
options `parameters`, `fileParameters`, `ignoreMissingValueFiles`, `skipCrds` and
`skipTests`; what is not allowed is refused naming the key or option."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.config import Config, parse_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.render.memo import RenderMemo
from testenv.charts import HELM, CustomKind, package_chart, serve_directory
from testenv.gitrepos import commit_files, make_upstream_and_clone
from tests.desired.conftest import require_helm

URL = "https://example.invalid/lab.git"
AGENTIC = "https://10.20.0.40:6443"
TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: opts
data:
  list: {{ .Values.list | quote }}
  cert: {{ .Values.cert | quote }}
  fromFile: {{ .Values.fromFile | quote }}
"""
TEST_HOOK = """\
apiVersion: v1
kind: Pod
metadata:
  name: opts-test
  annotations:
    helm.sh/hook: test
spec:
  containers: [{name: t, image: busybox}]
"""
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "names": {"kind": "Widget", "plural": "widgets"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object"}},
            }
        ],
    },
}


def _application(name: str, path: str, **source: Any) -> bytes:
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "destination": {"server": AGENTIC, "namespace": name},
            "source": {"repoURL": URL, "path": path, **source},
        },
    }
    return yaml.safe_dump(doc).encode()


def _helm(**options: Any) -> dict[str, Any]:
    return {"helm": options}


def _files(chart_repo: str) -> dict[str, bytes]:
    helm_charts = {
        "helmCharts": [
            {"name": "tiny", "repo": chart_repo, "version": "1.0.0", "releaseName": "kh"}
        ]
    }
    foreign = {"helmCharts": [{"name": "tiny", "repo": "https://charts.example.com"}]}
    return {
        "apps/kust-helm.yaml": _application("kust-helm", "kh"),
        "kh/kustomization.yaml": yaml.safe_dump(helm_charts).encode(),
        "apps/kust-foreign.yaml": _application("kust-foreign", "kf"),
        "kf/kustomization.yaml": yaml.safe_dump(foreign).encode(),
        "apps/kust-outside.yaml": _application("kust-outside", "ko"),
        "ko/kustomization.yaml": b"resources:\n  - ../shared/cm.yaml\n",
        "shared/cm.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n",
        "chart/Chart.yaml": b"apiVersion: v2\nname: opts\nversion: 0.1.0\n",
        "chart/values.yaml": b"list: default\ncert: none\nfromFile: none\n",
        "chart/values-prod.yaml": b"fromFile: values-prod\n",
        "chart/files/cert.pem": b"-----BEGIN CERTIFICATE-----\n",
        "chart/templates/cm.yaml": TEMPLATE.encode(),
        "chart/templates/test.yaml": TEST_HOOK.encode(),
        "chart/crds/widgets.yaml": yaml.safe_dump(CRD).encode(),
        "apps/helm-opts.yaml": _application(
            "helm-opts",
            "chart",
            **_helm(
                parameters=[{"name": "list", "value": "a,b"}],
                fileParameters=[{"name": "cert", "path": "files/cert.pem"}],
                valueFiles=["values-missing.yaml", "values-prod.yaml"],
                ignoreMissingValueFiles=True,
                skipCrds=True,
                skipTests=True,
            ),
        ),
        "apps/helm-plain.yaml": _application("helm-plain", "chart"),
        "apps/helm-missing.yaml": _application(
            "helm-missing", "chart", **_helm(valueFiles=["values-missing.yaml"])
        ),
        "apps/helm-file-url.yaml": _application(
            "helm-file-url",
            "chart",
            **_helm(fileParameters=[{"name": "cert", "path": "https://example.com/x"}]),
        ),
        "apps/helm-bad-flag.yaml": _application("helm-bad-flag", "chart", **_helm(skipCrds="yes")),
    }


@pytest.fixture(scope="module")
def chart_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback Helm repository holding `tiny` 1.0.0 (one ConfigMap and a CRD)."""
    require_helm()
    work = tmp_path_factory.mktemp("tiny")
    served = work / "served"
    served.mkdir()
    kind = CustomKind("example.com", "v1", "Gadget", "gadgets")
    package_chart(HELM, work / "src", "tiny", "1.0.0", served, (kind,))
    with serve_directory(served) as url:
        subprocess.run(
            [str(HELM), "repo", "index", str(served), "--url", url], check=True, timeout=60
        )
        yield url


def _config(tmp: Path, clone: Path, options: str) -> Config:
    return parse_config(
        {
            "daemon": {"state_dir": str(tmp / "state")},
            "render": {
                "helm": require_helm(),
                "allow_remote": ["127.0.0.1"],
                "kustomize_build_options": options,
            },
            "repos": [{"name": "lab", "path": str(clone), "url": URL, "apps": ["apps"]}],
            "clusters": [
                {"name": "agentic", "mode": "apply", "kubeconfig": "k", "servers": [AGENTIC]}
            ],
        },
        tmp / "config.toml",
    )


def _desired(tmp: Path, chart_repo: str, options: str) -> Desired:
    _, clone = make_upstream_and_clone(tmp, "lab", _files(chart_repo))
    config = _config(tmp, clone, options)
    return build_desired(config, open_sources(config), tools_for(config))


@pytest.fixture(scope="module")
def with_options(tmp_path_factory: pytest.TempPathFactory, chart_repo: str) -> Desired:
    options = "--enable-helm --load-restrictor LoadRestrictionsNone"
    return _desired(tmp_path_factory.mktemp("with"), chart_repo, options)


@pytest.fixture(scope="module")
def without_options(tmp_path_factory: pytest.TempPathFactory, chart_repo: str) -> Desired:
    return _desired(tmp_path_factory.mktemp("without"), chart_repo, "")


def _objects(desired: Desired, app: str) -> dict[tuple[str, str], Any]:
    return {
        (m.ref.kind, m.ref.name): m.obj
        for m in desired.clusters["agentic"].manifests
        if m.origin.app == app
    }


def _error(desired: Desired, app: str) -> str:
    return next(str(e) for e in desired.errors if e.app == app)


def test_enable_helm_inflates_helm_charts_from_an_allowed_loopback_repository(
    with_options: Desired,
) -> None:
    objects = _objects(with_options, "kust-helm")
    assert objects[("ConfigMap", "kh-tiny")]["data"]["chart"] == "tiny-1.0.0"


def test_helm_charts_without_enable_helm_are_refused_naming_the_option(
    without_options: Desired,
) -> None:
    message = _error(without_options, "kust-helm")
    assert "kh/kustomization.yaml: helmCharts need kustomize's --enable-helm" in message
    assert 'kustomize_build_options = "--enable-helm"' in message


def test_a_helm_charts_repository_not_allowed_is_refused_naming_it(with_options: Desired) -> None:
    message = _error(with_options, "kust-foreign")
    assert "kf/kustomization.yaml: helmCharts[0].repo https://charts.example.com" in message
    assert "not in [render] allow_remote" in message


def test_load_restrictions_none_reads_files_of_the_checkout_beside_the_kustomization(
    with_options: Desired, without_options: Desired
) -> None:
    assert ("ConfigMap", "shared") in _objects(with_options, "kust-outside")
    assert "kustomize build of ko failed" in _error(without_options, "kust-outside")


def test_helm_source_options_render_as_argo_cd_renders_them(with_options: Desired) -> None:
    objects = _objects(with_options, "helm-opts")
    data = objects[("ConfigMap", "opts")]["data"]
    assert data["list"] == "a,b"  # a parameter's comma stays in the value
    assert data["cert"] == "-----BEGIN CERTIFICATE-----\n"  # fileParameters: the file's text
    assert data["fromFile"] == "values-prod"  # the missing value file was skipped
    assert set(objects) == {("ConfigMap", "opts")}  # skipCrds, skipTests
    plain = _objects(with_options, "helm-plain")
    assert ("CustomResourceDefinition", "widgets.example.com") in plain
    assert ("Pod", "opts-test") in plain


def test_unsupported_helm_option_values_are_refused_naming_the_key(
    with_options: Desired,
) -> None:
    assert _error(with_options, "helm-missing").endswith(
        "spec.source.helm.valueFiles[0]: value file values-missing.yaml does not exist in the "
        "chart (helm.ignoreMissingValueFiles skips such files)"
    )
    assert (
        "spec.source.helm.fileParameters[0].path https://example.com/x: expected a file of "
        "the checkout or $ref/path"
    ) in _error(with_options, "helm-file-url")
    assert "spec.source.helm.skipCrds must be true or false" in _error(
        with_options, "helm-bad-flag"
    )


def test_the_kustomize_output_cache_is_keyed_by_the_build_options(
    tmp_path: Path, chart_repo: str
) -> None:
    _, clone = make_upstream_and_clone(tmp_path, "lab", _files(chart_repo))
    lifted = _config(tmp_path, clone, "--load-restrictor=LoadRestrictionsNone")
    first = build_desired(lifted, open_sources(lifted), tools_for(lifted))
    assert ("ConfigMap", "shared") in _objects(first, "kust-outside")
    # Same commit, same state_dir: the build lifted of its restrictor is not reused.
    strict = _config(tmp_path, clone, "")
    again = build_desired(strict, open_sources(strict), tools_for(strict))
    assert "kustomize build of ko failed" in _error(again, "kust-outside")


def test_a_file_outside_the_kustomization_is_an_input_the_render_memo_follows(
    tmp_path: Path, chart_repo: str
) -> None:
    _, clone = make_upstream_and_clone(tmp_path, "lab", _files(chart_repo))
    lifted = _config(tmp_path, clone, "--load-restrictor=LoadRestrictionsNone")
    # Commits go to the clone's branch; allow_remote off, so kustomize apps may be reused.
    config = dataclasses.replace(
        lifted,
        render=dataclasses.replace(lifted.render, allow_remote=()),
        repos=(dataclasses.replace(lifted.repos[0], ref="refs/heads/main"),),
    )
    kept = RenderMemo()
    build_desired(config, open_sources(config), tools_for(config), memo=kept)
    edited = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  v: two\n"
    repo = pygit2.Repository(str(clone))
    commit_files(repo, "refs/heads/main", {"shared/cm.yaml": edited}, "edit")
    again = build_desired(config, open_sources(config), tools_for(config), memo=kept)
    assert _objects(again, "kust-outside")[("ConfigMap", "shared")]["data"] == {"v": "two"}
