"""Errors that tell the cause, from real helm, kustomize and git: the tool's own
cause lines (not its last line), plugin schemes named as such, the key the user
wrote, a missing git object failing only the apps that read it, and a config that
declares no apps saying so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from testenv import config as testenv_config
from testenv.clusters import ClusterSet
from testenv.gitrepos import FileContent, make_upstream_and_clone
from tests.builders import argo_application, config_map, yaml_file
from tests.desired.conftest import unused_port, write_config
from tests.helpers_lab import SERVERS, reconciler_cli

URL = "https://git.example.invalid/lab.git"
SERVER = "https://10.20.0.40:6443"
CHART = b"apiVersion: v2\nname: demo\nversion: 0.1.0\n"
# Unique contents: git stores equal blobs once, and these two are deleted from the clone.
LOST_MANIFEST = yaml_file(config_map("lost-object-only-here", {}))
LOST_APPLICATION_MARK = b"# the only Application file with this comment\n"
APPLICATION = "kubernetes/argocd-apps/lost-application.yaml"


def _application(name: str, *sources: dict[str, Any]) -> bytes:
    given = [{"repoURL": URL, "targetRevision": "main", **s} for s in sources]
    return argo_application(name, SERVER, "lab", *given)


def _chart(base: str, template: bytes) -> dict[str, FileContent]:
    return {f"{base}/Chart.yaml": CHART, f"{base}/templates/cm.yaml": template}


def _files(dead: str) -> dict[str, FileContent]:
    remote_base = f"https://127.0.0.1:{unused_port()}/org/repo//base?ref=main"
    return {
        # helm prints the YAML parse error, then a hint: the error is the cause.
        "kubernetes/argocd-apps/bad-yaml.yaml": _application(
            "bad-yaml", {"path": "charts/bad-yaml"}
        ),
        **_chart("charts/bad-yaml", b"kind: ConfigMap\nmetadata:\n  name: x\n  a: b\n   c: d\n"),
        # kustomize wraps git's `fatal: ...` and ends with `: exit status 128`.
        "kubernetes/argocd-apps/remote-base.yaml": _application(
            "remote-base", {"path": "remote-base"}
        ),
        "remote-base/kustomization.yaml": f"resources:\n- {remote_base}\n".encode(),
        "kubernetes/argocd-apps/helm-secrets.yaml": _application(
            "helm-secrets",
            {"path": "charts/good", "helm": {"valueFiles": ["secrets://values.yaml"]}},
        ),
        "kubernetes/argocd-apps/helm-s3.yaml": _application(
            "helm-s3",
            {"path": "charts/good", "helm": {"valueFiles": ["s3://bucket/values.yaml"]}},
        ),
        **_chart("charts/good", b"kind: ConfigMap\nmetadata:\n  name: good-chart\n"),
        "charts/good/values.yaml": b"",
        "kubernetes/argocd-apps/missing-path.yaml": _application(
            "missing-path", {"path": "not/committed"}
        ),
        "kubernetes/argocd-apps/dead-chart.yaml": _application(
            "dead-chart", {"repoURL": dead, "chart": "nginx", "targetRevision": "1.0.0"}
        ),
        "kubernetes/argocd-apps/second-source.yaml": _application(
            "second-source", {"path": "good"}, {"path": "not/committed"}
        ),
        "kubernetes/argocd-apps/good.yaml": _application("good", {"path": "good"}),
        "good/cm.yaml": yaml_file(config_map("good", {})),
        "kubernetes/argocd-apps/kustomized.yaml": _application(
            "kustomized", {"path": "kustomized"}
        ),
        "kustomized/kustomization.yaml": b"resources: [cm.yaml]\n",
        "kustomized/cm.yaml": yaml_file(config_map("kustomized", {})),
        "kubernetes/argocd-apps/lost-blob.yaml": _application("lost-blob", {"path": "lost-blob"}),
        "lost-blob/cm.yaml": LOST_MANIFEST,
        APPLICATION: _application("lost-application", {"path": "good"}) + LOST_APPLICATION_MARK,
    }


def _delete_object(clone: Path, path: str) -> str:
    """Remove the loose object of `path` at HEAD from the clone, as a partial clone or a
    lost file leaves it; returns its id."""
    repository = pygit2.Repository(str(clone))
    entry = repository.head.peel(pygit2.Commit).tree[path]
    oid = str(entry.id)
    loose = Path(repository.path) / "objects" / oid[:2] / oid[2:]
    loose.unlink()
    assert not pygit2.Repository(str(clone)).odb.exists(oid)
    return oid


@pytest.fixture(scope="module")
def lab_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("causes")
    dead = f"http://127.0.0.1:{unused_port()}"
    _, clone = make_upstream_and_clone(base, "lab", _files(dead))
    return write_config(
        base, {"lab": clone}, urls={"lab": URL}, render='allow_remote = ["127.0.0.1"]'
    )


@pytest.fixture(scope="module")
def lost(lab_config: Path) -> dict[str, str]:
    """The objects deleted from the lab's clone: path -> object id."""
    clone = Path(load_config(lab_config).repos[0].path)
    return {path: _delete_object(clone, path) for path in ("lost-blob/cm.yaml", APPLICATION)}


@pytest.fixture(scope="module")
def lab(lab_config: Path, lost: dict[str, str]) -> Desired:
    config = load_config(lab_config)
    return build_desired(config, open_sources(config), tools_for(config))


def _error(lab: Desired, app: str) -> str:
    (message,) = [e.message for e in lab.errors if e.app == app]
    return message


def test_helm_yaml_error_keeps_the_parse_error_not_the_debug_hint(lab: Desired) -> None:
    message = _error(lab, "bad-yaml")
    assert message.startswith("spec.source: helm template of charts/bad-yaml failed: ")
    assert "YAML parse error on demo/templates/cm.yaml" in message
    assert "mapping values are not allowed in this context" in message
    assert "--debug" not in message


def test_kustomize_remote_failure_keeps_gits_cause_and_the_exit_status(lab: Desired) -> None:
    message = _error(lab, "remote-base")
    assert message.startswith("spec.source: kustomize build of remote-base failed: ")
    # git's own words, which sit between kustomize's start and its `: exit status 128`.
    assert re.search(r"failed to run '\S*git fetch ", message), message
    assert "fatal: unable to access 'https://127.0.0.1:" in message
    assert message.endswith(": exit status 128")


def test_helm_secrets_value_file_is_named_as_the_plugins(lab: Desired) -> None:
    message = _error(lab, "helm-secrets")
    assert message == (
        "spec.source.helm.valueFiles[0]: value file secrets://values.yaml: helm-secrets "
        "plugin value files (secrets://) are not supported; decrypt them outside the "
        "repository or use a Secret"
    )


def test_other_plugin_schemes_are_named_not_sent_to_allow_remote(lab: Desired) -> None:
    message = _error(lab, "helm-s3")
    assert message.startswith("spec.source.helm.valueFiles[0]: value file s3://bucket/values.yaml")
    assert "URL scheme s3:// (a Helm downloader plugin) are not supported" in message
    assert "does not exist" not in message and "is remote and its host" not in message


@pytest.mark.parametrize(
    ("app", "start"),
    [
        ("missing-path", "spec.source: path not/committed does not exist at commit"),
        ("dead-chart", "spec.source: chart not available: nginx 1.0.0 from http://127.0.0.1:"),
        ("second-source", "spec.sources[1]: path not/committed does not exist at commit"),
    ],
)
def test_render_errors_name_the_key_the_user_wrote(lab: Desired, app: str, start: str) -> None:
    assert _error(lab, app).startswith(start)


def test_no_message_calls_a_single_source_by_a_list_index(lab: Desired) -> None:
    single = [e for e in lab.errors if e.app != "second-source"]
    assert single and all("spec.sources[" not in e.message for e in single)


def test_a_missing_blob_fails_only_the_app_that_reads_it(
    lab: Desired, lost: dict[str, str]
) -> None:
    oid = lost["lost-blob/cm.yaml"]
    commit = lab.commits["lab"]
    assert _error(lab, "lost-blob") == (
        f"spec.source: cannot read lost-blob/cm.yaml at commit {commit[:12]} of repo lab: "
        f"git object {oid} is missing from the repository "
        "(a partial clone or a corrupt pack? `git fsck` in the clone tells)"
    )
    # The directory and kustomize apps of the same commit render (kustomize from a
    # checkout written without the missing object).
    rendered = {m.origin.app for m in lab.clusters["agentic"].manifests}
    assert {"good", "kustomized"} <= rendered


def test_a_checkout_missing_an_object_is_never_kept_for_later_renders(
    lab_config: Path, lab: Desired
) -> None:
    # A later fetch may bring the object: a cached checkout would lack it for good.
    checkouts = lab_config.parent / "state" / "checkouts" / "lab"
    assert checkouts.is_dir()  # kustomize rendered from a checkout written there
    assert not (checkouts / f"{lab.commits['lab']}.2").exists()


def test_a_missing_application_file_is_a_catalogue_error_naming_it(
    lab: Desired, lost: dict[str, str]
) -> None:
    message = _error(lab, f"lab:{APPLICATION}")
    assert f"cannot read {APPLICATION} at commit" in message
    assert lost[APPLICATION] in message


def test_render_with_a_missing_object_exits_1_without_a_traceback(
    lab_config: Path, lost: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--config", str(lab_config)]) == 1
    out, err = capsys.readouterr()
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d}
    assert {"good", "kustomized"} <= names
    assert "Traceback" not in err and "internal error" not in err
    assert sum("lost-blob" in line for line in err.splitlines()) == 1


NO_APPS = (
    "no apps: none of the repos declares an apps directory and the config declares no [[apps]]"
)


def test_a_config_declaring_no_apps_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, clone = make_upstream_and_clone(tmp_path, "lab", {"kubernetes/argocd-apps/good.yaml": b""})
    config = tmp_path / "config.toml"
    config.write_text(f"""
[daemon]
state_dir = "{tmp_path / "state"}"
[[repos]]
name = "lab"
path = "{clone}"
[[clusters]]
name = "agentic"
mode = "apply"
kubeconfig = "agentic.kubeconfig"
servers = ["{SERVER}"]
""")
    # Nothing failed: render's exit code stays 0, check's too (the config is valid).
    assert main(["render", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(NO_APPS)
    (config.parent / "agentic.kubeconfig").write_text("")
    assert main(["check", "--config", str(config)]) == 0
    assert NO_APPS in capsys.readouterr().err


def test_diff_and_sync_on_a_config_declaring_no_apps_say_so(
    clusters: ClusterSet, tmp_path: Path
) -> None:
    _, clone = make_upstream_and_clone(tmp_path, "lab", {"README.md": b"no apps here\n"})
    config = testenv_config.write_config(
        tmp_path / "config.toml",
        [],
        testenv_config.targets(clusters, SERVERS),
        {"daemon": {"state_dir": tmp_path / "state", "metrics_address": ""}},
    )
    config.write_text(config.read_text() + f'[[repos]]\nname = "lab"\npath = "{clone}"\n')
    for command in ("diff", "sync"):
        result = reconciler_cli(config, command)
        # No drift, nothing to converge: each command's own success code.
        assert result.returncode == 0, (command, result.stderr)
        assert result.stderr.startswith(NO_APPS), (command, result.stderr)
        assert "Traceback" not in result.stderr
