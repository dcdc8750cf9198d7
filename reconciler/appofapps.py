"""App-of-apps: Applications that another app renders join the catalogue.

Where Argo CD runs, an Application a parent app renders is an object Argo CD
syncs, so it stays a desired object. On a cluster without Argo CD nobody else
would act on it (and there is no Application CRD to apply it to), so the
reconciler reads it as Argo CD would: as one more app, rendered in turn. This
module is the breadth-first walk over those generations, pure: rendering and
reading Applications are passed in. The walk is bounded in depth, refuses
cycles and names already taken, and one bad child never stops its siblings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from reconciler.catalogue import (
    Catalogue,
    adopts,
    context,
    is_application,
    rendered_apps,
    unknown_children,
)
from reconciler.config import Config
from reconciler.model import App, AppError, AppOrigin
from reconciler.render.objects import Rendered

R = TypeVar("R")
# One app's render as reconciler.desired makes it: its objects and the revisions its
# sources were pinned to, or why it failed.
RenderResult = tuple[list[Rendered], Mapping[str, str]] | AppError

DEFAULT_MAX_DEPTH = 3


@dataclass(frozen=True)
class Adopted(Generic[R]):
    """What a parent's render yields: its result without the Applications it rendered,
    the apps read from them, and the ones that could not be read."""

    result: R
    children: tuple[App, ...] = ()
    errors: tuple[AppError, ...] = ()


@dataclass(frozen=True)
class Expansion(Generic[R]):
    """Every app rendered (the roots, then each generation of children) with its
    result, the children alone, and the problems found on the way."""

    apps: tuple[App, ...]
    results: tuple[R, ...]
    children: tuple[App, ...]
    errors: tuple[AppError, ...]


def expand(
    roots: Sequence[App],
    declared: Mapping[str, AppOrigin],
    render: Callable[[list[App]], list[R]],
    adopt: Callable[[App, R], Adopted[R]],
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Expansion[R]:
    """Render `roots`, then the children their renders hold, generation by generation
    (one `render` call each, so a generation renders side by side).

    `declared` names every app of the catalogue (a child may not take one of those
    names); `adopt` splits one render result (see Adopted). A child deeper than
    `max_depth` below its root is an error of its parent naming the chain, and so is
    one that is its own ancestor (a cycle); the other children still render."""
    taken = dict(declared)
    chains: dict[str, tuple[str, ...]] = {app.name: (app.name,) for app in roots}
    apps: list[App] = []
    results: list[R] = []
    children: list[App] = []
    errors: list[AppError] = []
    generation = list(roots)
    while generation:
        born: list[App] = []
        for parent, result in zip(generation, render(generation), strict=True):
            adopted = adopt(parent, result)
            apps.append(parent)
            results.append(adopted.result)
            errors.extend(adopted.errors)
            for child in adopted.children:
                chain = (*chains[parent.name], child.name)
                problem = _refusal(parent, child, chain, taken, max_depth)
                if problem is not None:
                    errors.append(problem)
                    continue
                taken[child.name] = child.origin
                chains[child.name] = chain
                born.append(child)
        children.extend(born)
        generation = born
    return Expansion(tuple(apps), tuple(results), tuple(children), tuple(errors))


def _refusal(
    parent: App,
    child: App,
    chain: tuple[str, ...],
    taken: Mapping[str, AppOrigin],
    max_depth: int,
) -> AppError | None:
    shown = " -> ".join(chain)
    if child.name in chain[:-1]:
        return AppError(
            parent.name,
            f"renders Application {child.name}, its own ancestor: cycle {shown} "
            f"({child.origin.where}); it is not rendered again",
            parent.cluster,
        )
    first = taken.get(child.name)
    if first is not None:
        return AppError(
            child.name,
            f"{child.origin.where}: the name is also declared at {first.where}; "
            "this Application is refused",
            child.cluster,
        )
    if len(chain) - 1 > max_depth:
        return AppError(
            parent.name,
            f"renders Application {child.name} deeper than [render] max_app_depth = "
            f"{max_depth}: {shown} ({child.origin.where}); it is not rendered",
            parent.cluster,
        )
    return None


@dataclass(frozen=True)
class Grown:
    """The catalogue with the apps rendered by apps; every app rendered and its result
    (Applications taken out); and the problems to report, children's included."""

    catalogue: Catalogue
    apps: tuple[App, ...]
    results: tuple[RenderResult, ...]
    errors: tuple[AppError, ...]


def grow(
    config: Config,
    repo_urls: Mapping[str, str],
    catalogue: Catalogue,
    wanted: Sequence[App],
    render: Callable[[list[App]], list[RenderResult]],
    clusters: Collection[str] | None = None,
) -> Grown:
    """Render `wanted` (some apps of `catalogue`) and the apps their renders declare;
    the apps, results and errors returned are those of `clusters` (all when None),
    the catalogue is whole.

    An app whose render failed, or that was not rendered (not `wanted`), has children
    nobody knows: the catalogue then carries `unknown_children` for it, so that
    their objects are neither pruned (pruneguard.departure keeps them) nor applied."""
    ctx = context(config, repo_urls)

    def adopt(parent: App, result: RenderResult) -> Adopted[RenderResult]:
        if isinstance(result, AppError) or not adopts(parent, ctx):
            return Adopted(result)
        objects, pinned = result
        found = [r for r in objects if is_application(r.obj)]
        if not found:
            return Adopted(result)
        read = rendered_apps(parent, [(r.obj, r.origin.path) for r in found], ctx)
        kept = [r for r in objects if not is_application(r.obj)]
        return Adopted((kept, pinned), read.apps, read.errors)

    declared = {app.name: app.origin for app in catalogue.apps}
    out = expand(wanted, declared, render, adopt, config.render.max_app_depth)
    rendered = {app.name for app in wanted}
    unknown = [
        unknown_children(app, "its render failed")
        for app, result in zip(out.apps, out.results, strict=True)
        if isinstance(result, AppError) and adopts(app, ctx)
    ]
    unknown += [
        unknown_children(app, "it was not rendered this time")
        for app in catalogue.apps
        if app.name not in rendered and adopts(app, ctx)
    ]
    grown = Catalogue(catalogue.apps + out.children, catalogue.errors + out.errors + tuple(unknown))
    pairs = [
        (app, result)
        for app, result in zip(out.apps, out.results, strict=True)
        if clusters is None or app.cluster in clusters
    ]
    errors = [e for e in out.errors if clusters is None or e.cluster in (None, *clusters)]
    return Grown(grown, tuple(a for a, _ in pairs), tuple(r for _, r in pairs), tuple(errors))
