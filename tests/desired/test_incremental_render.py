"""A commit re-renders only the apps whose inputs it touched (reconciler.render.memo):
what each render read is recorded through the tree, and the next render reuses its
output while every path read is the same at the new commit. Real git repositories,
the real kustomize and helm; the renderer is only counted, never replaced."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.config import Config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.model import App, Capabilities
from reconciler.render import Rendered, Tools, memo, render_app
from reconciler.render.memo import RenderMemo
from reconciler.tree import Tree
from testenv.gitrepos import FileContent, Symlink, commit_files, make_upstream_and_clone
from tests.builders import agentic_config, argo_application
from tests.desired.conftest import require_helm

LAB_URL = "https://example.invalid/lab.git"
VALS_URL = "https://example.invalid/vals.git"
SERVER = "https://10.20.0.40:6443"
CHART_TEMPLATE = (
    b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
    b"data:\n  colour: {{ .Values.colour | quote }}\n"
)


def _cm(name: str, value: str = "one") -> bytes:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"v": value},
    }
    return yaml.safe_dump(doc).encode()


def _application(name: str, *sources: dict[str, Any]) -> bytes:
    return argo_application(name, SERVER, name, *sources)


def _chart(path: str, colour: str) -> dict[str, bytes]:
    return {
        f"{path}/Chart.yaml": b"apiVersion: v2\nname: web\nversion: 0.1.0\n",
        f"{path}/templates/cm.yaml": CHART_TEMPLATE,
        f"{path}/values.yaml": f"colour: {colour}\n".encode(),
    }


KUSTOMIZE_BASE = b"resources:\n  - ../base\n"
LAB: dict[str, FileContent] = {
    "README.md": b"# lab\n",
    "apps/plain.yaml": _application("plain", {"repoURL": LAB_URL, "path": "plain"}),
    "apps/other.yaml": _application("other", {"repoURL": LAB_URL, "path": "other"}),
    "apps/k1.yaml": _application("k1", {"repoURL": LAB_URL, "path": "k1"}),
    "apps/k2.yaml": _application("k2", {"repoURL": LAB_URL, "path": "k2"}),
    "apps/chart.yaml": _application(
        "chart", {"repoURL": LAB_URL, "path": "chart", "helm": {"valueFiles": ["values.yaml"]}}
    ),
    "apps/multi.yaml": _application(
        "multi",
        {"repoURL": LAB_URL, "path": "chart2", "helm": {"valueFiles": ["$vals/web.yaml"]}},
        {"repoURL": VALS_URL, "ref": "vals"},
    ),
    "apps/linked.yaml": _application("linked", {"repoURL": LAB_URL, "path": "linked"}),
    "plain/cm.yaml": _cm("plain"),
    "other/cm.yaml": _cm("other"),
    "base/kustomization.yaml": b"resources:\n  - cm.yaml\n",
    "base/cm.yaml": _cm("base"),
    "k1/kustomization.yaml": KUSTOMIZE_BASE + b"namePrefix: k1-\n",
    "k2/kustomization.yaml": KUSTOMIZE_BASE + b"namePrefix: k2-\n",
    **_chart("chart", "red"),
    **_chart("chart2", "green"),
    # A link out of the chart: helm follows it on disk, out of the renderer's sight.
    "linked/Chart.yaml": b"apiVersion: v2\nname: linked\nversion: 0.1.0\n",
    "linked/templates/cm.yaml": Symlink("../../shared/cm.yaml"),
    "shared/cm.yaml": _cm("shared"),
}
ALL = ["chart", "k1", "k2", "linked", "multi", "other", "plain"]


MAIN = {"ref": "refs/heads/main"}  # the tests commit to the clone's own branch


class Repos:
    """The lab repo (Applications and most sources) and a repo lending value files."""

    def __init__(self, tmp: Path) -> None:
        _, self.lab = make_upstream_and_clone(tmp, "lab", LAB)
        _, self.vals = make_upstream_and_clone(tmp, "vals", {"web.yaml": b"colour: blue\n"})
        self.config = agentic_config(
            tmp,
            [
                {"name": "lab", "path": str(self.lab), "url": LAB_URL, "apps": ["apps"], **MAIN},
                {"name": "vals", "path": str(self.vals), "url": VALS_URL, **MAIN},
            ],
            SERVER,
            render={"helm": require_helm()},
        )

    def commit(self, files: dict[str, FileContent], repo: str = "lab") -> str:
        clone = self.lab if repo == "lab" else self.vals
        return commit_files(pygit2.Repository(str(clone)), "refs/heads/main", files, "change")


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    return Repos(tmp_path)


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the apps the renderer really ran for, in the order it did."""
    runs: list[str] = []
    real = render_app

    def counting(app: App, trees: Sequence[Tree | None], tools: Tools) -> list[Rendered]:
        runs.append(app.name)
        return real(app, trees, tools)

    monkeypatch.setattr(memo, "render_app", counting)
    return runs


def _render(config: Config, with_memo: RenderMemo | None, tools: Tools | None = None) -> Desired:
    return build_desired(config, open_sources(config), tools or tools_for(config), memo=with_memo)


def _objects(desired: Desired) -> dict[str, Any]:
    """`app:name` of each object -> its data, from the cluster's desired state."""
    return {
        f"{m.origin.app}:{m.ref.name}": m.obj.get("data")
        for m in desired.clusters["agentic"].manifests
    }


def _render_again(repos: Repos, kept: RenderMemo, runs: list[str]) -> Desired:
    runs.clear()
    return _render(repos.config, kept)


def test_a_commit_touching_no_rendered_file_renders_nothing_and_yields_the_same_objects(
    repos: Repos, rendered: list[str]
) -> None:
    kept = RenderMemo()
    first = _render(repos.config, kept)
    assert first.errors == ()
    assert sorted(rendered) == ALL and (first.rendered, first.reused) == (len(ALL), 0)

    moved = repos.commit({"README.md": b"# lab, edited\n", "notes/todo.txt": b"later\n"})
    again = _render_again(repos, kept, rendered)
    assert rendered == [] and (again.rendered, again.reused) == (0, len(ALL))
    fresh = _render(repos.config, None)
    manifests = again.clusters["agentic"].manifests
    assert [(m.ref, m.obj) for m in manifests] == [
        (m.ref, m.obj) for m in fresh.clusters["agentic"].manifests
    ]
    # Reused objects point at the commit they were read at now, as a fresh render's do.
    assert [m.origin for m in manifests] == [m.origin for m in fresh.clusters["agentic"].manifests]
    assert {m.origin.commit for m in manifests if m.origin.repo == "lab"} == {moved}


def test_editing_a_kustomize_base_shared_by_two_apps_renders_exactly_those_two(
    repos: Repos, rendered: list[str]
) -> None:
    kept = RenderMemo()
    _render(repos.config, kept)
    repos.commit({"base/cm.yaml": _cm("base", "two")})
    again = _render_again(repos, kept, rendered)
    assert sorted(rendered) == ["k1", "k2"]
    assert (again.rendered, again.reused) == (2, len(ALL) - 2)
    assert _objects(again)["k1:k1-base"] == {"v": "two"} == _objects(again)["k2:k2-base"]


@pytest.mark.parametrize(
    ("edit", "app", "name", "data"),
    [
        ({"chart/values.yaml": b"colour: amber\n"}, "chart", "chart", {"colour": "amber"}),
        (
            {"chart/templates/cm.yaml": CHART_TEMPLATE.replace(b"colour:", b"hue:")},
            "chart",
            "chart",
            {"hue": "red"},
        ),
        (
            {"apps/plain.yaml": _application("plain", {"repoURL": LAB_URL, "path": "other"})},
            "plain",
            "other",
            {"v": "one"},
        ),
        ({"plain/cm.yaml": _cm("plain", "two")}, "plain", "plain", {"v": "two"}),
    ],
    ids=["helm value file", "chart file", "Application manifest", "directory file"],
)
def test_editing_what_an_app_reads_renders_that_app_alone(
    repos: Repos,
    rendered: list[str],
    edit: dict[str, FileContent],
    app: str,
    name: str,
    data: dict[str, str],
) -> None:
    kept = RenderMemo()
    _render(repos.config, kept)
    repos.commit(edit)
    again = _render_again(repos, kept, rendered)
    assert rendered == [app]
    assert again.errors == ()
    assert _objects(again)[f"{app}:{name}"] == data


def test_editing_a_ref_value_file_in_another_repo_renders_the_app_that_reads_it(
    repos: Repos, rendered: list[str]
) -> None:
    kept = RenderMemo()
    assert _objects(_render(repos.config, kept))["multi:multi"] == {"colour": "blue"}
    repos.commit({"web.yaml": b"colour: violet\n"}, repo="vals")
    again = _render_again(repos, kept, rendered)
    assert rendered == ["multi"]
    assert _objects(again)["multi:multi"] == {"colour": "violet"}


def test_editing_the_target_of_a_symlink_in_an_app_renders_that_app(
    repos: Repos, rendered: list[str]
) -> None:
    kept = RenderMemo()
    assert _objects(_render(repos.config, kept))["linked:shared"] == {"v": "one"}
    # Outside linked/: only the link under it leads there, and helm follows it.
    repos.commit({"shared/cm.yaml": _cm("shared", "two")})
    again = _render_again(repos, kept, rendered)
    assert rendered == ["linked"]
    assert _objects(again)["linked:shared"] == {"v": "two"}
    repos.commit({"linked/templates/cm.yaml": Symlink("../../other/cm.yaml")})
    again = _render_again(repos, kept, rendered)
    assert rendered == ["linked"]
    assert _objects(again)["linked:other"] == {"v": "one"}


def test_a_failed_app_is_rendered_again_every_time_until_it_renders(
    repos: Repos, rendered: list[str]
) -> None:
    kept = RenderMemo()
    _render(repos.config, kept)
    repos.commit({"chart/templates/cm.yaml": b"{{ .Values.colour | nosuchfunction }}\n"})
    for _ in range(2):
        again = _render_again(repos, kept, rendered)
        assert rendered == ["chart"]
        assert [e.app for e in again.errors] == ["chart"]
    repos.commit({"chart/templates/cm.yaml": CHART_TEMPLATE.replace(b"colour:", b"hue:")})
    again = _render_again(repos, kept, rendered)
    assert rendered == ["chart"] and again.errors == ()
    assert _objects(again)["chart:chart"] == {"hue": "red"}
    # Back to what the first render read: its output is that of these inputs again.
    repos.commit({"chart/templates/cm.yaml": CHART_TEMPLATE})
    again = _render_again(repos, kept, rendered)
    assert rendered == ["chart"] and _objects(again)["chart:chart"] == {"colour": "red"}


def test_new_capabilities_of_the_destination_render_its_chart_apps_again(
    repos: Repos, rendered: list[str]
) -> None:
    kept = RenderMemo()
    tools = tools_for(repos.config)
    _render(repos.config, kept, tools)
    upgraded = dataclasses.replace(tools, capabilities={"agentic": Capabilities("v1.36.0")})
    rendered.clear()
    _render(repos.config, kept, upgraded)
    # Only Helm reads `.Capabilities`: kustomize and plain apps are reused.
    assert sorted(rendered) == ["chart", "linked", "multi"]
    rendered.clear()
    _render(repos.config, kept, upgraded)
    assert rendered == []


def test_apps_that_leave_the_catalogue_leave_the_memo(repos: Repos) -> None:
    kept = RenderMemo()
    _render(repos.config, kept)
    assert len(kept) == len(ALL)
    repos.commit({"apps/other.yaml": None, "apps/plain.yaml": None})
    _render(repos.config, kept)
    assert len(kept) == len(ALL) - 2


def test_kustomize_builds_that_may_fetch_remote_bases_are_rendered_every_time(
    repos: Repos, rendered: list[str]
) -> None:
    kept = RenderMemo()
    remote = dataclasses.replace(tools_for(repos.config), allow_remote=("github.com",))
    _render(repos.config, kept, remote)
    repos.commit({"README.md": b"# lab, edited\n"})
    rendered.clear()
    _render(repos.config, kept, remote)
    # No tree vouches for what a remote base holds today.
    assert sorted(rendered) == ["k1", "k2"]
