"""config.toml validation: typed values, relative paths, and every problem
reported at once with file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.config import Config, load_config
from reconciler.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
VALID = """
[daemon]
state_dir = "state"
[[repos]]
name = "agentic_lab"
path = "clones/agentic_lab"
url = "https://github.com/charlieshreck/agentic_lab.git"
apps = ["kubernetes/argocd-apps"]
[[clusters]]
name = "agentic"
mode = "apply"
kubeconfig = "agentic.kubeconfig"
context = "agentic"
servers = ["https://10.20.0.40:6443"]
network = "10.20.0.0/24"
[[clusters]]
name = "prod"
argocd = true
kubeconfig = "/etc/reconciler/prod.kubeconfig"
servers = ["https://kubernetes.default.svc"]
[[apps]]
name = "extra"
repo = "agentic_lab"
path = "kubernetes/extra"
cluster = "agentic"
namespace = "extra"
"""


def _load(tmp_path: Path, text: str) -> Config:
    file = tmp_path / "config.toml"
    file.write_text(text)
    return load_config(file)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return info.value.problems


def test_valid_config_is_typed_with_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, VALID)
    (repo,) = config.repos
    assert repo.ref == "refs/remotes/origin/main"
    agentic, prod = config.clusters
    assert agentic.mode == "apply" and str(agentic.network) == "10.20.0.0/24"
    assert prod.mode == "report" and prod.argocd and prod.network is None
    assert config.apps[0].namespace == "extra"
    assert config.render.max_file_bytes > 0


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = _load(tmp_path, VALID)
    assert config.state_dir == tmp_path / "state"
    assert config.repos[0].path == tmp_path / "clones" / "agentic_lab"
    assert config.clusters[0].kubeconfig == tmp_path / "agentic.kubeconfig"
    assert config.clusters[1].kubeconfig == Path("/etc/reconciler/prod.kubeconfig")


def test_argocd_cluster_in_apply_mode_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = VALID.replace("argocd = true", 'argocd = true\nmode = "apply"')
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'config.toml'}: clusters[1].mode:")
    assert "Argo CD owns sync" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        VALID.replace('mode = "apply"', 'mode = "sync"')
        .replace('network = "10.20.0.0/24"', 'network = "10.20.0.1/33"')
        .replace('cluster = "agentic"', 'cluster = "nowhere"')
        .replace('state_dir = "state"', "state_dir = 3\ncolour = true")
    )
    problems = "\n".join(_problems(tmp_path, text))
    for expected in (
        'clusters[0].mode: expected "apply" or "report", got \'sync\'',
        "clusters[0].network: expected a CIDR",
        "apps[0].cluster: expected one of ['agentic', 'prod'], got 'nowhere'",
        "daemon.state_dir: expected a directory path, got 3",
        "daemon.colour: unknown key",
    ):
        assert expected in problems


def test_missing_required_keys_and_duplicates_are_named(tmp_path: Path) -> None:
    text = VALID.replace('servers = ["https://kubernetes.default.svc"]', "").replace(
        'name = "prod"', 'name = "agentic"'
    )
    problems = "\n".join(_problems(tmp_path, text))
    assert "clusters[1].servers: missing; expected a non-empty list of API server URLs" in problems


def test_one_server_url_cannot_name_two_clusters(tmp_path: Path) -> None:
    text = VALID.replace("https://kubernetes.default.svc", "https://10.20.0.40:6443/")
    (problem,) = _problems(tmp_path, text)
    assert "clusters[1].servers[0]" in problem and "also listed by cluster 'agentic'" in problem


def test_unreadable_toml_names_the_file(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, "[daemon\n")
    assert problem.startswith(f"{tmp_path / 'config.toml'}: not valid TOML")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_check_command_exits_0_when_valid_and_2_when_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(VALID.replace("/etc/reconciler/prod.kubeconfig", "prod.kubeconfig"))
    for name in ("agentic", "prod"):
        (tmp_path / f"{name}.kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    bad = tmp_path / "bad.toml"
    bad.write_text(VALID.replace('mode = "apply"', 'mode = "sync"'))
    assert main(["check", "--config", str(good)]) == 0
    assert main(["check", "--config", str(bad)]) == 2
    assert main(["render", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}: clusters[0].mode")
    assert err.count("clusters[0].mode") == 2


def test_the_homelab_config_is_valid() -> None:
    config = load_config(REPO_ROOT / "config.toml")
    modes = {c.name: c.mode for c in config.clusters}
    assert modes == {"prod": "report", "agentic": "apply", "monit": "apply"}
    assert {r.name for r in config.repos} == {"prod_homelab", "agentic_lab", "monit_homelab"}
