"""The app-of-apps walk (reconciler.appofapps) with plain data: a render result is
here just the list of child names the parent renders."""

from __future__ import annotations

from dataclasses import replace

from reconciler.appofapps import Adopted, expand
from reconciler.model import App, AppOrigin

ROOT_ORIGIN = AppOrigin("lab", "c0ffee", "apps/root.yaml")


def _app(name: str, parent: App | None = None) -> App:
    origin = ROOT_ORIGIN if parent is None else replace(ROOT_ORIGIN, parent=parent.name)
    origin = replace(origin, rendered=f"{name}.yaml") if parent is not None else origin
    return App(name, "agentic", name, (), origin)


def _walk(
    tree: dict[str, list[str]], roots: list[str], max_depth: int = 3
) -> tuple[list[str], list[str], list[list[str]]]:
    """Expand `roots` where `tree` says which children each app renders; returns the
    apps rendered, the errors and the generations rendered (one render call each)."""
    calls: list[list[str]] = []

    def render(apps: list[App]) -> list[list[str]]:
        calls.append([a.name for a in apps])
        return [tree.get(a.name, []) for a in apps]

    def adopt(parent: App, result: list[str]) -> Adopted[list[str]]:
        return Adopted([], tuple(_app(name, parent) for name in result))

    root_apps = [_app(name) for name in roots]
    declared = {a.name: a.origin for a in root_apps}
    out = expand(root_apps, declared, render, adopt, max_depth)
    assert len(out.apps) == len(out.results)
    return [a.name for a in out.apps], [str(e) for e in out.errors], calls


def test_children_render_generation_by_generation() -> None:
    apps, errors, calls = _walk({"root": ["a", "b"], "a": ["a1"]}, ["root", "other"])
    assert apps == ["root", "other", "a", "b", "a1"]
    assert errors == []
    assert calls == [["root", "other"], ["a", "b"], ["a1"]]


def test_a_cycle_is_an_error_of_the_parent_naming_it_and_the_rest_renders() -> None:
    apps, errors, _ = _walk({"A": ["B"], "B": ["A", "C"]}, ["A"])
    assert apps == ["A", "B", "C"]
    assert len(errors) == 1
    assert errors[0].startswith("app B (cluster agentic): renders Application A")
    assert "cycle A -> B -> A" in errors[0]


def test_a_chain_deeper_than_the_bound_is_an_error_of_the_last_parent() -> None:
    apps, errors, _ = _walk({"r": ["c1"], "c1": ["c2"], "c2": ["c3", "ok"]}, ["r"], max_depth=2)
    assert apps == ["r", "c1", "c2"]
    assert len(errors) == 2
    assert errors[0].startswith("app c2 (cluster agentic): renders Application c3 deeper")
    assert "max_app_depth = 2: r -> c1 -> c2 -> c3" in errors[0]


def test_a_child_named_like_a_declared_app_is_refused_and_its_siblings_render() -> None:
    apps, errors, _ = _walk({"root": ["other", "fresh"]}, ["root", "other"])
    assert apps == ["root", "other", "fresh"]
    assert errors == [
        "app other (cluster agentic): app root rendered other.yaml: the name is also "
        "declared at lab:apps/root.yaml; this Application is refused"
    ]


def test_two_parents_rendering_one_name_keep_the_first() -> None:
    apps, errors, _ = _walk({"p": ["x"], "q": ["x"]}, ["p", "q"])
    assert apps == ["p", "q", "x"]
    assert len(errors) == 1 and "also declared at app p rendered x.yaml" in errors[0]
