"""Chart credentials from files named in [[render.chart_credentials]], against real
servers: a loopback HTTP chart repository asking for basic auth and the real CNCF
distribution registry with htpasswd users. Right credentials render; wrong or
missing ones fail that app only, with messages that never hold the password; the
password reaches no argv, no environment, no log and no other host."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import ChartCredential
from reconciler.errors import RenderError
from reconciler.render import charts
from reconciler.render.charts import Chart, chart_archive
from reconciler.render.tools import Tools, run_tool
from testenv.charts import package_chart
from testenv.pki import CertAuthority, make_ca
from testenv.registry import Registry
from tests.desired.chart_server import ChartServer, errors_of, reconciler_check, render
from tests.desired.conftest import require_helm
from tests.desired.test_chart_cache import chart_app, lab_config
from tests.helpers_lab import reconciler_cli

PASSWORD = "s3cret-chart-password-7f2a"
WRONG = "not-the-password-9c1d"


def password_file(directory: Path, name: str, password: str, mode: int = 0o600) -> Path:
    file = directory / f"{name}.password"
    file.write_text(password + "\n")
    file.chmod(mode)
    return file


def credentials(*entries: tuple[str, str, Path]) -> str:
    """[[render.chart_credentials]] tables for (url, username, password_file)."""
    return "".join(
        f'[[render.chart_credentials]]\nurl = "{url}"\nusername = "{user}"\n'
        f'password_file = "{file}"\n'
        for url, user, file in entries
    )


@pytest.fixture
def private_repo(tmp_path: Path) -> Iterator[ChartServer]:
    require_helm()
    server = ChartServer(tmp_path / "private", user="robot", password=PASSWORD)
    server.add_chart("hello", "1.0.0")
    yield server
    server.stop()


def test_http_repository_credentials_render_and_wrong_or_missing_ones_fail_that_app_only(
    tmp_path: Path,
) -> None:
    require_helm()
    servers = {
        name: ChartServer(tmp_path / name, user="robot", password=PASSWORD)
        for name in ("right", "wrong", "missing")
    }
    try:
        for server in servers.values():
            server.add_chart("hello", "1.0.0")
        config, _ = lab_config(
            tmp_path,
            {f"kubernetes/argocd-apps/{n}.yaml": chart_app(n, s.url) for n, s in servers.items()},
            extra=credentials(
                (servers["right"].url, "robot", password_file(tmp_path, "right", PASSWORD)),
                (servers["wrong"].url, "robot", password_file(tmp_path, "wrong", WRONG)),
            ),
        )
        result = reconciler_cli(config, "render", "-o", "json")
    finally:
        for server in servers.values():
            server.stop()
    assert PASSWORD not in result.stdout + result.stderr
    assert WRONG not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    objects = {f"{r['app']}/{r['object']['metadata']['name']}" for r in json.loads(result.stdout)}
    assert objects == {"right/right-hello"}
    refused = errors_of(lines, "wrong")
    assert f"chart not available: hello 1.0.0 from {servers['wrong'].url}" in refused
    assert "HTTP 401" in refused
    assert "the credentials of [render] chart_credentials were refused" in refused
    missing = errors_of(lines, "missing")
    assert "the server asks for credentials: add them to [render] chart_credentials" in missing
    assert servers["missing"].seen == [("/index.yaml", None)]


def test_a_password_file_others_can_read_is_refused_naming_it(
    private_repo: ChartServer, tmp_path: Path
) -> None:
    readable = password_file(tmp_path, "readable", PASSWORD, mode=0o644)
    config, _ = lab_config(
        tmp_path,
        {"kubernetes/argocd-apps/a.yaml": chart_app("a", private_repo.url)},
        extra=credentials((private_repo.url, "robot", readable)),
    )
    objects, lines = render(config)
    assert objects == {}
    message = errors_of(lines, "a")
    assert f"password_file {readable} is readable by others (mode 644)" in message
    assert PASSWORD not in "\n".join(lines)
    check = reconciler_check(config)
    assert check.returncode != 0
    assert f"render.chart_credentials[0].password_file: {readable}: readable by others" in (
        check.stderr
    )


def test_credentials_go_to_the_repositorys_own_host_only(
    private_repo: ChartServer, tmp_path: Path
) -> None:
    # The index names its archive on another server (another port: another origin).
    elsewhere = ChartServer(tmp_path / "elsewhere")
    try:
        package = private_repo.add_chart("other", "1.0.0", archive_url=elsewhere.url)
        package.rename(elsewhere.directory / package.name)
        config, _ = lab_config(
            tmp_path,
            {
                "kubernetes/argocd-apps/other.yaml": yaml_app("other", private_repo.url),
                "kubernetes/argocd-apps/passing.yaml": chart_app(
                    "passing", private_repo.url, passCredentials=True
                ),
            },
            extra=credentials((private_repo.url, "robot", password_file(tmp_path, "p", PASSWORD))),
        )
        objects, lines = render(config)
    finally:
        elsewhere.stop()
    assert "other/other-other" in objects
    assert elsewhere.seen and all(header is None for _, header in elsewhere.seen)
    assert any(header for path, header in private_repo.seen if path == "/index.yaml")
    refused = errors_of(lines, "passing")
    assert "helm.passCredentials: true is not supported" in refused


def yaml_app(name: str, repo_url: str) -> bytes:
    """An app of chart `other` (the one whose archive is elsewhere)."""
    return chart_app(name, repo_url).replace(b"chart: hello", b"chart: other")


# -- OCI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Registry, CertAuthority]]:
    helm = require_helm()
    work = tmp_path_factory.mktemp("private-oci")
    ca = make_ca(work / "ca", "private-oci-ca")
    registry = Registry(work / "registry", ca, users={"robot": PASSWORD})
    try:
        registry.start()
        package = package_chart(helm, work / "src", "hello", "1.0.0", work)
        for repository in ("charts", "other", "third"):
            registry.push_chart(Path(helm), package, repository)
        yield registry, ca
    finally:
        registry.stop()


def test_an_oci_registry_asking_for_a_password_gets_it_from_the_file(
    private_registry: tuple[Registry, CertAuthority], tmp_path: Path
) -> None:
    registry, ca = private_registry
    right = f"oci://{registry.host}/charts"
    wrong = f"oci://{registry.host}/third"  # a prefix of its own, with the wrong password
    missing = f"{registry.host}/other/"  # Argo CD's scheme-less form, and no entry
    config, _ = lab_config(
        tmp_path,
        {
            "kubernetes/argocd-apps/right.yaml": chart_app("right", right),
            "kubernetes/argocd-apps/wrong.yaml": chart_app("wrong", wrong),
            "kubernetes/argocd-apps/missing.yaml": chart_app("missing", missing),
        },
        render=f'chart_ca_file = "{ca.cert_file}"',
        extra=credentials(
            (right, "robot", password_file(tmp_path, "right", PASSWORD)),
            (wrong, "robot", password_file(tmp_path, "wrong", WRONG)),
        ),
    )
    result = reconciler_cli(config, "render", "-o", "json")
    assert PASSWORD not in result.stdout + result.stderr
    assert WRONG not in result.stdout + result.stderr
    objects = {
        f"{row['app']}/{row['object']['metadata']['name']}" for row in json.loads(result.stdout)
    }
    assert objects == {"right/right-hello"}
    lines = result.stderr.splitlines()
    for app in ("wrong", "missing"):
        message = errors_of(lines, app)
        assert "chart not available: hello 1.0.0" in message
    assert "credentials of [render] chart_credentials were refused" in errors_of(lines, "wrong")
    assert "the server asks for credentials: add them to [render] chart_credentials" in (
        errors_of(lines, "missing")
    )


def _pulling(
    private_registry: tuple[Registry, CertAuthority], tmp_path: Path, password: str
) -> tuple[str, str, Tools]:
    """helm, the registry's chart URL, and Tools with `password` for it."""
    registry, ca = private_registry
    url = f"oci://{registry.host}/charts"
    entry = ChartCredential(url, "robot", password_file(tmp_path, "p", password))
    tools = Tools(None, require_helm(), 60, 1 << 20, tmp_path / "state", chart_ca_file=ca.cert_file)
    return require_helm(), url, replace(tools, chart_credentials=(entry,))


def test_an_oci_pull_holds_the_password_in_no_argv_and_no_environment(
    private_registry: tuple[Registry, CertAuthority],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    helm, url, tools = _pulling(private_registry, tmp_path, PASSWORD)
    runs: list[tuple[Sequence[str], Mapping[str, str]]] = []

    def recording(argv: Sequence[str], tools: Tools, what: str, grant: Any, **kw: Any) -> str:
        runs.append((list(argv), dict(kw.get("env") or {})))
        return run_tool(argv, tools, what, grant, **kw)

    monkeypatch.setattr(charts, "run_tool", recording)
    archive, _ = chart_archive(Chart(url, "hello", "1.0.0"), helm, tools)
    assert archive.is_file()
    ((argv, env),) = runs
    assert argv[:2] == [helm, "pull"]
    assert PASSWORD not in " ".join(argv) and PASSWORD not in " ".join(env.values())
    assert PASSWORD not in " ".join(os.environ.values())
    config = next(a.removeprefix("--registry-config=") for a in argv if "--registry-config" in a)
    assert not Path(config).exists(), "the registry config is removed with its pull"
    leftovers = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert not any(PASSWORD.encode() in p.read_bytes() for p in leftovers)


def test_an_oci_pull_with_the_wrong_password_names_the_chart_not_the_password(
    private_registry: tuple[Registry, CertAuthority], tmp_path: Path
) -> None:
    helm, url, tools = _pulling(private_registry, tmp_path, WRONG)
    with pytest.raises(RenderError) as raised:
        chart_archive(Chart(url, "hello", "1.0.0"), helm, tools)
    assert f"chart not available: hello 1.0.0 from {url}" in str(raised.value)
    assert WRONG not in str(raised.value)
