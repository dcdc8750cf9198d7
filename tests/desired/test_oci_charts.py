"""Helm charts from OCI registries, as Argo CD pulls them (`repoURL: oci://host/path`,
`chart`, `targetRevision`): the real CNCF distribution registry on loopback, serving
HTTPS with a certificate of the test's own CA, charts put there by the real
`helm push`, and the real `reconciler render` pulling them inside the render sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import RenderError
from reconciler.render.charts import pull_env, pull_grant
from reconciler.render.tools import Tools, run_tool
from testenv.gitrepos import make_upstream_and_clone
from testenv.pki import CertAuthority, make_ca
from testenv.registry import Registry
from tests.desired.chart_server import application, reconciler_check
from tests.desired.chart_server import errors_of as _errors_of
from tests.desired.chart_server import render as _render
from tests.desired.conftest import package_chart, require_helm, write_config

REPO_URL = "https://git.example.invalid/lab/apps.git"
SECRET = "hunter2-registry-password"


@dataclass(frozen=True)
class Registries:
    trusted: Registry  # its CA is the config's [render] chart_ca_file
    stranger: Registry  # serves the same chart with a certificate of another CA
    trusted_ca: CertAuthority
    stranger_ca: CertAuthority


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    helm = require_helm()
    work = tmp_path_factory.mktemp("oci")
    trusted_ca = make_ca(work / "trusted-ca", "oci-test-ca")
    stranger_ca = make_ca(work / "stranger-ca", "someone-else")
    trusted = Registry(work / "trusted", trusted_ca)
    stranger = Registry(work / "stranger", stranger_ca)
    try:
        trusted.start()
        stranger.start()
        package = package_chart(helm, work / "src", "hello", "1.0.0", work)
        for registry in (trusted, stranger):
            registry.push_chart(Path(helm), package, "charts")
        yield Registries(trusted, stranger, trusted_ca, stranger_ca)
    finally:
        trusted.stop()
        stranger.stop()


def _application(name: str, source: dict[str, Any]) -> bytes:
    return application(name, {"source": source})


def _chart_app(name: str, repo_url: str, chart: str = "hello", version: str = "1.0.0") -> bytes:
    source = {
        "repoURL": repo_url,
        "chart": chart,
        "targetRevision": version,
        "helm": {"valuesObject": {"greeting": f"from {name}"}},
    }
    return _application(name, source)


def _config(tmp_path: Path, apps: dict[str, bytes], ca_file: Path | None) -> Path:
    """A repo of `apps` (name -> Application) and a config over it trusting `ca_file`."""
    files = {f"kubernetes/argocd-apps/{name}.yaml": doc for name, doc in apps.items()}
    files["README.md"] = b"Applications whose charts come from OCI registries\n"
    _, clone = make_upstream_and_clone(tmp_path, "lab", files)
    render = f'chart_ca_file = "{ca_file}"' if ca_file else ""
    return write_config(tmp_path, {"lab": clone}, urls={"lab": REPO_URL}, render=render)


def _render_lab(
    tmp_path: Path, apps: dict[str, bytes], ca_file: Path | None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """What `_render` makes of the lab of `_config`."""
    return _render(_config(tmp_path, apps, ca_file))


def test_a_chart_from_an_oci_registry_renders_and_is_pulled_once(
    registries: Registries, tmp_path: Path
) -> None:
    host = registries.trusted.host
    apps = {
        "from-oci": _chart_app("from-oci", f"oci://{host}/charts"),
        # Argo CD's form without the scheme (with enableOCI on its credentials).
        "scheme-less": _chart_app("scheme-less", f"{host}/charts/"),
    }
    config = _config(tmp_path, apps, registries.trusted_ca.cert_file)
    blobs = "/v2/charts/hello/blobs/"
    before = len(registries.trusted.requests("GET", blobs))
    objects, errors = _render(config)
    assert errors == []
    for app in ("from-oci", "scheme-less"):
        made = objects[f"{app}/{app}-hello"]
        assert made["metadata"]["namespace"] == app
        assert made["data"]["chart"] == "hello-1.0.0"
        values = json.loads(made["data"]["values"])
        assert values == {"fromChartDefaults": True, "greeting": f"from {app}"}
    pulls = registries.trusted.requests("GET", blobs)
    assert len(pulls) > before, "the charts came from the registry"

    again, errors = _render(config)
    assert errors == [] and again == objects
    assert registries.trusted.requests("GET", blobs) == pulls  # read from the chart cache


def test_a_registry_whose_certificate_is_not_trusted_fails_that_app_only(
    registries: Registries, tmp_path: Path
) -> None:
    objects, errors = _render_lab(
        tmp_path,
        {
            "trusted": _chart_app("trusted", f"oci://{registries.trusted.host}/charts"),
            "stranger": _chart_app("stranger", f"oci://{registries.stranger.host}/charts"),
        },
        registries.trusted_ca.cert_file,
    )
    assert "trusted/trusted-hello" in objects
    assert not any(key.startswith("stranger/") for key in objects)
    message = _errors_of(errors, "stranger")
    assert f"chart not available: hello 1.0.0 from oci://{registries.stranger.host}/charts" in (
        message
    )
    assert "x509" in message and "TLS certificate is not trusted" in message
    assert "[render] chart_ca_file" in message


def test_without_the_ca_file_the_loopback_registry_is_not_trusted(
    registries: Registries, tmp_path: Path
) -> None:
    url = f"oci://{registries.trusted.host}/charts"
    objects, errors = _render_lab(tmp_path, {"from-oci": _chart_app("from-oci", url)}, ca_file=None)
    assert objects == {}
    assert "TLS certificate is not trusted" in _errors_of(errors, "from-oci")


def test_an_unknown_chart_or_version_fails_that_app_naming_it(
    registries: Registries, tmp_path: Path
) -> None:
    url = f"oci://{registries.trusted.host}/charts"
    objects, errors = _render_lab(
        tmp_path,
        {
            "good": _chart_app("good", url),
            "no-version": _chart_app("no-version", url, version="9.9.9"),
            "no-chart": _chart_app("no-chart", url, chart="absent"),
        },
        registries.trusted_ca.cert_file,
    )
    assert set(objects) == {"good/good-hello"}
    assert f"chart not available: hello 9.9.9 from {url}" in _errors_of(errors, "no-version")
    assert f"chart not available: absent 1.0.0 from {url}" in _errors_of(errors, "no-chart")
    for app in ("no-version", "no-chart"):
        assert "not found" in _errors_of(errors, app)


def test_oci_sources_that_are_not_charts_or_carry_credentials_are_refused(
    registries: Registries, tmp_path: Path
) -> None:
    host = registries.trusted.host
    objects, errors = _render_lab(
        tmp_path,
        {
            "manifests": _application(
                "manifests", {"repoURL": f"oci://{host}/charts", "targetRevision": "1", "path": "."}
            ),
            "password": _chart_app("password", f"oci://robot:{SECRET}@{host}/charts"),
        },
        registries.trusted_ca.cert_file,
    )
    assert objects == {}
    assert "OCI sources are supported as Helm charts only" in _errors_of(errors, "manifests")
    refused = _errors_of(errors, "password")
    assert "spec.source.repoURL" in refused and "credentials do not belong" in refused
    assert SECRET not in "\n".join(errors)


def test_a_pull_granted_for_one_registry_cannot_reach_another(
    registries: Registries, tmp_path: Path
) -> None:
    helm = require_helm()
    # The stranger's CA trusted, so only the sandbox stands between helm and it.
    ca = registries.stranger_ca.cert_file
    tools = Tools(None, helm, 60, 1 << 20, tmp_path / "state", chart_ca_file=ca)
    into = tmp_path / "state" / "charts" / "pulled"
    into.mkdir(parents=True)
    stranger = f"oci://{registries.stranger.host}/charts"
    argv = [helm, "pull", "--version=1.0.0", "--untar", f"--untardir={into}", "--"]
    env = pull_env(tools)
    before = registries.stranger.requests("GET", "/v2/")
    granted_elsewhere = pull_grant(f"oci://{registries.trusted.host}/charts", into, tools)
    with pytest.raises(RenderError, match="permission denied"):
        run_tool([*argv, f"{stranger}/hello"], tools, "helm pull", granted_elsewhere, env=env)
    assert registries.stranger.requests("GET", "/v2/") == before
    # Control: granted for the stranger's own URL, the same pull reaches it.
    granted = pull_grant(stranger, into, tools)
    run_tool([*argv, f"{stranger}/hello"], tools, "helm pull", granted, env=env)
    assert (into / "hello" / "Chart.yaml").is_file()


def test_reconciler_check_names_a_chart_ca_file_that_holds_no_certificate(
    tmp_path: Path,
) -> None:
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    config = _config(tmp_path, {}, ca_file=not_pem)
    result = reconciler_check(config)
    assert result.returncode != 0
    assert f"render.chart_ca_file: {not_pem}: expected a readable file of PEM CA certificates" in (
        result.stderr
    )
