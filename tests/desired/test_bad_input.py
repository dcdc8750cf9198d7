"""Bad input gets one clear error on the app concerned, never a traceback, and
never stops the other apps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.model import ObjectRef
from testenv.gitrepos import FileContent, Symlink, make_upstream_and_clone
from tests.desired.conftest import HELM, unused_port

URL = "https://git.example.invalid/lab.git"
SERVER = "https://10.20.0.40:6443"
CONFIG_MAP = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  k: v\n"
SECRET_VALUE = "hunter2-do-not-print"


def _app(name: str, path: str | None = None, server: str = SERVER, **source: object) -> bytes:
    src: dict[str, object] = {"repoURL": URL, "targetRevision": "main", **source}
    if path is not None:
        src["path"] = path
    return yaml.safe_dump(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": {"source": src, "destination": {"server": server, "namespace": "lab"}},
        }
    ).encode()


def _lab_files() -> dict[str, FileContent]:
    dead = f"http://127.0.0.1:{unused_port()}"
    return {
        "apps/good.yaml": _app("good", "good"),
        "apps/secretive.yaml": _app("secretive", "secretive"),
        "secretive/secret.yaml": yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds"},
                "stringData": {"password": SECRET_VALUE},
            }
        ).encode(),
        "good/cm.yaml": CONFIG_MAP.replace(b"shared", b"only-good"),
        "apps/malformed.yaml": _app("malformed", "malformed"),
        "malformed/bad.yaml": f"apiVersion: v1\nkind: Secret\ndata: [{SECRET_VALUE}\n".encode(),
        "apps/nameless.yaml": _app("nameless", "nameless"),
        "nameless/cm.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
        "apps/kindless.yaml": _app("kindless", "kindless"),
        "kindless/cm.yaml": b"apiVersion: v1\nmetadata:\n  name: x\n",
        "apps/dup.yaml": _app("dup-a", "dup-a") + b"---\n" + _app("dup-b", "dup-b"),
        "dup-a/cm.yaml": CONFIG_MAP,
        "dup-b/cm.yaml": CONFIG_MAP,
        "apps/kustomize.yaml": _app("broken-kustomize", "broken-kustomize"),
        "broken-kustomize/kustomization.yaml": b"resources:\n  - missing.yaml\n",
        "apps/chart.yaml": yaml.safe_dump(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": "unreachable-chart"},
                "spec": {
                    "source": {"repoURL": dead, "chart": "nginx", "targetRevision": "1.0.0"},
                    "destination": {"server": SERVER, "namespace": "lab"},
                },
            }
        ).encode(),
        "apps/missing.yaml": _app("missing-path", "not/committed"),
        "apps/symlink.yaml": _app("escaping-symlink", "symlink"),
        "symlink/cm.yaml": Symlink("../../outside.yaml"),
        "apps/big.yaml": _app("too-big", "big"),
        "big/cm.yaml": CONFIG_MAP + b"# padding\n" * 400,
        "apps/nowhere.yaml": _app("unknown-server", "good", server="https://10.99.0.1:6443"),
        "apps/set.yaml": b"apiVersion: argoproj.io/v1alpha1\nkind: ApplicationSet\n"
        b"metadata:\n  name: generated\n",
        "apps/unparseable.yaml": b"kind: Application\nmetadata: [\n",
        "apps/README.md": b"not an application\n",
    }


EXPECTED = {
    "malformed": "malformed/bad.yaml: malformed YAML at line",
    "nameless": "nameless/cm.yaml: document 1 (ConfigMap) has no metadata.name",
    "kindless": "kindless/cm.yaml: document 1 has no kind",
    "broken-kustomize": "kustomize build of broken-kustomize failed",
    "unreachable-chart": "chart not available: nginx 1.0.0 from http://127.0.0.1:",
    "missing-path": "path not/committed does not exist at commit",
    "escaping-symlink": "symlink/cm.yaml at commit",
    "too-big": "big/cm.yaml: 4069 bytes is over the 2000-byte file limit",
    "unknown-server": "destination server https://10.99.0.1:6443 is not listed",
    "generated": "ApplicationSet in lab:apps/set.yaml is not supported",
    "lab:apps/unparseable.yaml": "apps/unparseable.yaml: malformed YAML at line 3",
}


@pytest.fixture(scope="module")
def lab_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("lab")
    _, clone = make_upstream_and_clone(base, "lab", _lab_files())
    config = base / "config.toml"
    config.write_text(f"""
[daemon]
state_dir = "state"
[render]
helm = "{HELM}"
max_file_bytes = 2000
timeout_seconds = 30
[[repos]]
name = "lab"
path = "{clone}"
url = "{URL}"
apps = ["apps"]
[[clusters]]
name = "agentic"
mode = "apply"
kubeconfig = "agentic.kubeconfig"
servers = ["{SERVER}"]
""")
    return config


@pytest.fixture(scope="module")
def lab(lab_config: Path) -> Desired:
    config = load_config(lab_config)
    return build_desired(config, open_sources(config), tools_for(config))


@pytest.mark.parametrize(("app", "message"), sorted(EXPECTED.items()))
def test_each_bad_app_gets_one_error_naming_the_cause(lab: Desired, app: str, message: str) -> None:
    errors = [e.message for e in lab.errors if e.app == app]
    assert len(errors) == 1 and message in errors[0], errors


def test_the_symlink_error_says_it_leaves_the_repository(lab: Desired) -> None:
    (error,) = [e.message for e in lab.errors if e.app == "escaping-symlink"]
    assert "points outside the repository" in error


def test_only_the_bad_apps_fail_and_the_good_ones_render(lab: Desired) -> None:
    assert {e.app for e in lab.errors} == set(EXPECTED)
    agentic = lab.clusters["agentic"]
    assert [(m.origin.app, str(m.ref)) for m in agentic.manifests] == [
        ("good", "ConfigMap lab/only-good"),
        ("secretive", "Secret lab/creds"),
    ]
    assert set(agentic.failed) == {e.app for e in lab.errors if e.cluster == "agentic"}
    # An object two apps render is theirs to settle: set aside, neither app fails.
    assert {"dup-a", "dup-b"} <= set(agentic.apps)
    assert agentic.contested == {
        ObjectRef("", "ConfigMap", "lab", "shared"): {
            "dup-a": "lab:dup-a/cm.yaml",
            "dup-b": "lab:dup-b/cm.yaml",
        }
    }


def test_errors_never_quote_document_content(lab: Desired) -> None:
    assert all(SECRET_VALUE not in str(e) for e in lab.errors)


def test_render_command_reports_one_line_per_error_and_exits_1(
    lab_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--config", str(lab_config)]) == 1
    out, err = capsys.readouterr()
    docs = list(yaml.safe_load_all(out))
    assert [d["metadata"]["name"] for d in docs] == ["only-good", "creds"]
    lines = err.splitlines()
    assert len(lines) == len(EXPECTED) + 1
    assert lines[-1] == (
        "cluster agentic: ConfigMap lab/shared is rendered by app dup-a (lab:dup-a/cm.yaml) "
        "and app dup-b (lab:dup-b/cm.yaml): shared, applied by none of them"
    )
    assert "Traceback" not in err and SECRET_VALUE not in err
    for app in EXPECTED:
        assert sum(ln.startswith(f"app {app}") for ln in lines) == 1


def test_render_of_one_app_that_cannot_be_catalogued_reports_it(
    lab_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--config", str(lab_config), "--app", "generated"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("app generated: ApplicationSet")


def test_render_of_an_unknown_app_or_cluster_is_a_usage_error(
    lab_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--config", str(lab_config), "--app", "nope"]) == 2
    assert main(["render", "--config", str(lab_config), "--cluster", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown app 'nope'" in err and "unknown cluster 'nope'" in err


def test_render_output_never_shows_secret_values(
    lab_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for output in ("yaml", "json"):
        main(["render", "--config", str(lab_config), "--app", "secretive", "-o", output])
        out = capsys.readouterr().out
        assert "password" in out and "creds" in out
        assert SECRET_VALUE not in out
