"""An Application file whose blob did not change is not parsed again
(reconciler.catalogue CatalogueMemo): a commit re-reads only the files it
touched, every app still carries the new commit, and a bad file is reported on
every catalogue exactly as on the first. Real git repositories; the parser is
only counted, never replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler import catalogue as catalogue_module
from reconciler.catalogue import Catalogue, CatalogueMemo, build_catalogue
from reconciler.config import Config
from reconciler.desired import open_sources
from reconciler.documents import parse_documents
from reconciler.render.memo import unstamped
from testenv.gitrepos import FileContent, commit_files, make_upstream_and_clone
from tests.builders import agentic_config, argo_application

LAB_URL = "https://example.invalid/lab.git"
SERVER = "https://10.20.0.40:6443"


def _application(name: str, namespace: str | None = None, server: str = SERVER) -> bytes:
    source = {"repoURL": LAB_URL, "path": name}
    return argo_application(name, server, namespace or name, source)


FILES: dict[str, FileContent] = {
    "apps/one.yaml": _application("one"),
    "apps/two.yaml": _application("two"),
    "apps/nested/three.yaml": _application("three"),
    "apps/broken.yaml": b"kind: [unclosed\n",
    "apps/elsewhere.yaml": _application("elsewhere", server="https://10.99.0.1:6443"),
    "one/cm.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n",
}
ALL_FILES = sorted(p for p in FILES if p.startswith("apps/"))


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        _, self.clone = make_upstream_and_clone(tmp, "lab", FILES)

    def config(self, server: str = SERVER) -> Config:
        repo = {"name": "lab", "path": str(self.clone), "url": LAB_URL, "apps": ["apps"]}
        return agentic_config(self.tmp, [{**repo, "ref": "refs/heads/main"}], server)

    def commit(self, files: dict[str, FileContent]) -> str:
        return commit_files(pygit2.Repository(str(self.clone)), "refs/heads/main", files, "edit")


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the files the catalogue really parsed, in order."""
    seen: list[str] = []

    def counting(data: bytes, path: str) -> list[Any]:
        seen.append(path)
        return parse_documents(data, path)

    monkeypatch.setattr(catalogue_module, "parse_documents", counting)
    return seen


def _catalogue(config: Config, memo: CatalogueMemo | None) -> Catalogue:
    sources = open_sources(config)
    return build_catalogue(config, sources.trees, sources.urls, memo)


def test_only_the_application_files_a_commit_changed_are_parsed_again(
    lab: Lab, parsed: list[str]
) -> None:
    config, memo = lab.config(), CatalogueMemo()
    first = _catalogue(config, memo)
    assert sorted(parsed) == ALL_FILES
    parsed.clear()

    commit = lab.commit({"apps/two.yaml": _application("two", "deux"), "one/cm.yaml": b"x: 1\n"})
    second = _catalogue(config, memo)
    # A file that cannot be parsed is never kept: it is read again, and reported again.
    assert sorted(parsed) == ["apps/broken.yaml", "apps/two.yaml"]
    assert memo.parses == len(ALL_FILES) + 2
    assert {a.origin.commit for a in second.apps} == {commit}, "every app at the new commit"
    apps = {a.name: a for a in second.apps}
    assert apps["two"].namespace == "deux"
    assert [unstamped(a) for a in first.apps if a.name != "two"] == [
        unstamped(a) for a in second.apps if a.name != "two"
    ]
    assert second == _catalogue(config, None), "the same catalogue as one read without memo"


def test_a_bad_file_is_reported_on_every_catalogue_as_on_the_first(lab: Lab) -> None:
    config, memo = lab.config(), CatalogueMemo()
    first = _catalogue(config, memo)
    again = _catalogue(config, memo)
    lab.commit({"apps/one.yaml": _application("one", "uno")})
    after_commit = _catalogue(config, memo)
    messages = {e.app: e.message for e in first.errors}
    assert "malformed YAML" in messages["lab:apps/broken.yaml"]
    assert "https://10.99.0.1:6443 is not listed" in messages["elsewhere"]
    assert messages["elsewhere"].startswith("lab:apps/elsewhere.yaml: ")
    assert first.errors == again.errors == after_commit.errors
    assert after_commit.errors == _catalogue(config, None).errors


def test_a_config_that_reads_the_files_differently_parses_them_all_again(
    lab: Lab, parsed: list[str]
) -> None:
    memo = CatalogueMemo()
    _catalogue(lab.config(), memo)
    parsed.clear()
    moved = lab.config(server="https://10.20.0.41:6443")  # the cluster's API moved
    found = _catalogue(moved, memo)
    assert sorted(parsed) == ALL_FILES
    assert not found.apps
    assert {e.app for e in found.errors} >= {"one", "two", "three"}


def test_a_file_dropped_from_the_repository_is_dropped_from_the_memo(
    lab: Lab, parsed: list[str]
) -> None:
    config, memo = lab.config(), CatalogueMemo()
    _catalogue(config, memo)
    lab.commit({"apps/nested/three.yaml": None})
    assert "three" not in {a.name for a in _catalogue(config, memo).apps}
    parsed.clear()
    lab.commit({"apps/nested/three.yaml": _application("three")})  # the same blob, back
    assert "three" in {a.name for a in _catalogue(config, memo).apps}
    assert sorted(parsed) == ["apps/broken.yaml", "apps/nested/three.yaml"]
