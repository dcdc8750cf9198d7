"""Paths stay inside the checkout: symlinks are followed as the kernel follows
them (a chain of relative links that only *reads* as inside is caught), and
`path`, `valueFiles`, `$ref/...` and kustomize entries cannot leave the repo.

The host files an attack reaches for are /etc/passwd and a marker file with a
unique content under the test's tmp_path; neither may appear in any output or
in the state directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from testenv.gitrepos import FileContent, Symlink
from tests.security.conftest import AttackLab, MakeLab, application
from tests.security.untrusted import assert_only_app_failed, chart

SECRET = "marker-7d3f0c-host-file-content"
PASSWD = "root:x:0:0"
DEPTH = 40  # more `..` than any tmp path is deep, so the chain reaches /


def escaping_chain(directory: str, host_file: Path) -> dict[str, FileContent]:
    """`<directory>/leak` -> `a1/.../a40/up/` + 41 x `../` + host path, where `up` -> 40 x `..`.

    Read as text, `up/..` cancels out and the target stays inside `directory`, which
    is what the old textual check saw. On disk `up` is `directory` itself, so the 41
    `..` climb out of the checkout to / and the link lands on `host_file`."""
    ladder = "/".join(f"a{i}" for i in range(1, DEPTH + 1))
    climb = "../" * (DEPTH + 1)
    return {
        f"{directory}/{ladder}/up": Symlink("/".join([".."] * DEPTH)),
        f"{directory}/leak": Symlink(f"{ladder}/up/{climb}{str(host_file).lstrip('/')}"),
    }


def host_file(tmp_path: Path) -> Path:
    marker = tmp_path / "host" / "kubeconfig"
    marker.parent.mkdir()
    marker.write_text(SECRET)
    return marker


def _assert_nothing_leaked(lab: AttackLab, output: str) -> None:
    assert SECRET not in output and PASSWD not in output
    for directory, _, files in os.walk(lab.state_dir):
        for name in files:
            path = Path(directory) / name
            if path.is_symlink():
                continue
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            assert PASSWD.encode() not in data, path


def test_theescaping_chain_reads_as_inside_but_the_kernel_follows_it_out(tmp_path: Path) -> None:
    """The attack is real: materialised naively, the chain does reach the host file."""
    host = host_file(tmp_path)
    checkout = tmp_path / "naive" / "checkout" / "charts" / "evil"
    for path, link in escaping_chain("", host).items():
        assert isinstance(link, Symlink)
        target = checkout / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link.target, target)
        assert not os.path.normpath(os.path.join(os.path.dirname(path), link.target)).startswith(
            ".."
        )
    assert (checkout / "leak").read_text() == SECRET


@pytest.mark.parametrize("host_target", ["marker", "/etc/passwd"])
def test_a_chart_reading_a_symlink_chain_out_of_the_repo_fails_its_app(
    attack_lab: MakeLab, tmp_path: Path, host_target: str
) -> None:
    host = host_file(tmp_path) if host_target == "marker" else Path(host_target)
    files: dict[str, FileContent] = {
        "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "charts/evil"}),
        **chart('  stolen: {{ .Files.Get "leak" | quote }}\n'),
        **escaping_chain("charts/evil", host),
    }
    lab = attack_lab(files)

    result = lab.render()

    assert_only_app_failed(result, "evil", "charts/evil/", "points outside the repository")
    _assert_nothing_leaked(lab, result.stdout + result.stderr)


def test_a_kustomization_over_a_directory_with_anescaping_chain_fails_its_app(
    attack_lab: MakeLab, tmp_path: Path
) -> None:
    host = host_file(tmp_path)
    files: dict[str, FileContent] = {
        "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "kz/evil"}),
        "kz/evil/kustomization.yaml": b"resources:\n- ../base\n",
        "kz/base/kustomization.yaml": (
            b"configMapGenerator:\n- name: stolen\n  files:\n  - leak\n"
        ),
        **escaping_chain("kz/base", host),
    }
    lab = attack_lab(files)

    result = lab.render()

    assert_only_app_failed(result, "evil", "kz/base/", "points outside the repository")
    _assert_nothing_leaked(lab, result.stdout + result.stderr)


def test_links_that_stay_inside_still_render(attack_lab: MakeLab) -> None:
    """Links to a directory, through another link, with `..`: all inside, all fine."""
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "linked"}}
    files: dict[str, FileContent] = {
        "kubernetes/argocd-apps/linked.yaml": application("linked", {"path": "apps/linked"}),
        "shared/real/cm.yaml": yaml.safe_dump(config_map).encode(),
        "shared/alias": Symlink("real"),
        "apps/linked/dir": Symlink("../../shared/alias"),
        "apps/linked/cm.yaml": Symlink("dir/../alias/cm.yaml"),
    }
    result = attack_lab(files).render()
    assert result.returncode == 0, result.stderr
    assert '"name": "linked"' in result.stdout


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {
                "kz/evil/kustomization.yaml": b"resources:\n- ../../../../../../../../etc\n",
            },
            "leaves the repository",
        ),
        ({"kz/evil/kustomization.yaml": b"resources:\n- /etc\n"}, "is an absolute path"),
        (
            {
                "kz/evil/kustomization.yaml": (
                    b"configMapGenerator:\n- name: x\n  files:\n  - ../../../../../../etc/passwd\n"
                ),
            },
            "leaves the repository",
        ),
        (
            {"kz/evil/kustomization.yaml": b"patches:\n- path: /etc/passwd\n"},
            "is an absolute path",
        ),
    ],
)
def test_kustomize_entries_outside_the_repository_fail_their_app(
    attack_lab: MakeLab, files: dict[str, bytes], message: str
) -> None:
    app = application("evil", {"path": "kz/evil"})
    lab = attack_lab({"kubernetes/argocd-apps/evil.yaml": app, **files})
    result = lab.render()
    assert_only_app_failed(result, "evil", "kz/evil/kustomization.yaml", message)
    _assert_nothing_leaked(lab, result.stdout + result.stderr)


def test_kustomize_keeps_its_root_only_load_restrictor(attack_lab: MakeLab) -> None:
    """A file of a sibling directory (inside the repo, outside the kustomization) is
    refused by kustomize itself, as `kubectl kustomize` does by default."""
    files = {
        "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "kz/evil"}),
        "kz/evil/kustomization.yaml": b"configMapGenerator:\n- name: x\n  files:\n  - ../other/f\n",
        "kz/other/f": b"not for you",
    }
    result = attack_lab(files).render()
    assert_only_app_failed(result, "evil", "is not in or below")


@pytest.mark.parametrize(
    ("value_file", "message"),
    [
        ("../../../../../../../../../../etc/passwd", "leaves the chart"),
        ("/etc/passwd", "leaves the chart"),
        ("$values/../../../etc/passwd", "leaves the repository"),
    ],
)
def test_value_files_outside_the_repository_fail_their_app(
    attack_lab: MakeLab, value_file: str, message: str
) -> None:
    app = yaml.safe_load(application("evil", {}))
    app["spec"].pop("source")
    repo_url = "https://git.example.invalid/attacker/lab.git"
    app["spec"]["sources"] = [
        {"repoURL": repo_url, "path": "charts/evil", "helm": {"valueFiles": [value_file]}},
        {"repoURL": repo_url, "ref": "values"},
    ]
    files = {
        "kubernetes/argocd-apps/evil.yaml": yaml.safe_dump(app).encode(),
        **chart("  v: {{ .Values | toJson | quote }}\n"),
    }
    lab = attack_lab(files)
    result = lab.render()
    assert_only_app_failed(result, "evil", message)
    _assert_nothing_leaked(lab, result.stdout + result.stderr)


@pytest.mark.parametrize("path", ["../../../../etc", "apps/../../etc", "escape"])
def test_an_application_path_outside_the_repository_fails_its_app(
    attack_lab: MakeLab, path: str
) -> None:
    files: dict[str, FileContent] = {
        "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": path}),
        "escape": Symlink("apps/../.."),
    }
    lab = attack_lab(files)
    result = lab.render()
    assert_only_app_failed(
        result, "evil", "outside the repository" if path == "escape" else "leaves the repository"
    )
    _assert_nothing_leaked(lab, result.stdout + result.stderr)
