"""The prune guard: which objects that left git are deleted now, and what waits for a person.

A reconciler that reads commits from people, bots and agents needs a brake on a
sudden mass deletion, but one that never stalls an ordinary edit (invariant 4):
- a change that deletes at most `floor` objects always prunes;
- past the floor, one reconcile may delete at most `max_share` of an app's
  inventory, and at most `max_share` of the whole cluster's inventory;
- what is held waits for a person (`reconciler sync --app A --prune`) and says so
  in a PRUNE_BLOCKED finding listing the objects.
It also decides what an app's disappearance from git means, as Argo CD does with its
resources finalizer (delete the objects, or orphan them), and reads the objects'
own `Prune=` / `Delete=` sync options. Pure: data in, data out; plan.py applies it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.model import App, AppError, ObjectRef, SyncRequest, parse_options
from reconciler.report import Finding, FindingKind

SYNC_OPTIONS = "argocd.argoproj.io/sync-options"
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
_FINALIZERS = frozenset(
    {RESOURCES_FINALIZER, f"{RESOURCES_FINALIZER}/foreground", f"{RESOURCES_FINALIZER}/background"}
)
DEFAULT_PRUNE_FLOOR = 5
# A finding lists this many objects, then how many more there are.
LISTED = 10


def deletes_resources(finalizers: Any) -> bool:
    """Whether an Application's `metadata.finalizers` make Argo CD delete its objects
    with it (the resources finalizer, plain or in its foreground/background form)."""
    return isinstance(finalizers, list) and any(f in _FINALIZERS for f in finalizers)


def object_options(obj: Mapping[str, Any]) -> dict[str, str]:
    """An object's own `argocd.argoproj.io/sync-options` (comma separated `Name=value`)."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    raw = annotations.get(SYNC_OPTIONS) if isinstance(annotations, Mapping) else None
    return parse_options(str(raw or "").split(","))


def confirm_command(app: str) -> str:
    return f"reconciler sync --app {app} --prune"


# -- an app gone from the cluster's catalogue -------------------------------------------


@dataclass(frozen=True)
class AppTrace:
    """What the store keeps of an app, to judge it once its Application is gone."""

    app: str
    repo: str
    path: str
    prune_on_delete: bool


class Fate(enum.Enum):
    """What becomes of the objects of an app that left the cluster's catalogue."""

    DELETE = "delete"  # removed from git with the resources finalizer: pruned, guarded
    ORPHAN = "orphan"  # removed without it, or moved to another cluster: kept and listed
    KEEP = "keep"  # not known to be removed (repo unread, catalogue error): kept, noted


@dataclass(frozen=True)
class Departure:
    fate: Fate
    why: str


def departure(
    app: str,
    trace: AppTrace | None,
    *,
    catalogued: Iterable[App],
    errors: Iterable[AppError],
    commits: Collection[str],
) -> Departure:
    """What `app`, which has objects on this cluster but is not in its catalogue, has
    become. It counts as removed from git only when its repo was read at a commit
    and no catalogue error may hide it: one naming the app or its file, or a file of
    its repo that could not be read as Applications (a YAML error never prunes)."""
    elsewhere = next((a.cluster for a in catalogued if a.name == app), None)
    if elsewhere is not None:
        return Departure(Fate.ORPHAN, f"left by Application {app}, now destined for {elsewhere}")
    gone = "app is no longer in the catalogue"
    if trace is None:
        return Departure(Fate.KEEP, f"{gone} (where it was declared is not on record)")
    if trace.repo not in commits:
        return Departure(Fate.KEEP, f"{gone} (repo {trace.repo} could not be read)")
    label = f"{trace.repo}:{trace.path}"
    for error in errors:
        if error.app in (app, label) or error.app.startswith(f"{trace.repo}:"):
            return Departure(Fate.KEEP, f"{gone} (catalogue error: {error.app})")
        if label in error.message:
            return Departure(Fate.KEEP, f"{gone} (catalogue error in {label})")
    if trace.prune_on_delete:
        return Departure(
            Fate.DELETE, f"Application {app} was removed from git with the resources finalizer"
        )
    return Departure(
        Fate.ORPHAN, f"left by Application {app} removed from git without the resources finalizer"
    )


# -- one app's prune --------------------------------------------------------------------


@dataclass(frozen=True)
class AppPrune:
    """How the objects one app no longer renders are treated in this reconcile.

    `held`: none is pruned, and no confirmation changes that now (a failed render).
    `waits`: each waits for a person's confirmation. `orphaned`: they are kept and
    listed, with why. `deleting`: the whole app is being deleted, with why (its
    objects' `Delete=` options apply, not `Prune=`). `confirmed`: a person asked."""

    held: str | None = None
    waits: str | None = None
    orphaned: str | None = None
    deleting: str | None = None
    confirmed: bool = False


def app_prune(
    spec: App | None,
    *,
    failed: bool,
    rendered: bool,
    departed: Departure | None,
    request: SyncRequest | None,
) -> AppPrune:
    """The app-wide verdict. A confirmation (`request.prune`) lifts what only needs a
    person's word (automated prune off, an empty render, the share guards), never
    what protects against a broken input (a failed render, an unknown removal)."""
    confirmed = request is not None and request.prune
    if spec is None:
        if departed is None or departed.fate is Fate.KEEP:
            return AppPrune(held=departed.why if departed else "app is no longer in the catalogue")
        if departed.fate is Fate.ORPHAN:
            return AppPrune(orphaned=departed.why)
        return AppPrune(deleting=departed.why, confirmed=confirmed)
    if failed:
        return AppPrune(held="render failed")
    automated = spec.sync_policy.get("automated")
    if not isinstance(automated, Mapping) or automated.get("enabled") is False:
        automated = {}
    if confirmed:
        return AppPrune(confirmed=True)
    if not rendered and automated.get("allowEmpty") is not True:
        return AppPrune(waits="render produced no objects (syncPolicy.automated.allowEmpty is off)")
    if automated.get("prune") is not True:
        return AppPrune(waits="automated prune is off (syncPolicy.automated.prune)")
    return AppPrune()


def option_hold(live: Mapping[str, Any], verdict: AppPrune) -> tuple[str, bool] | None:
    """Why the object's own sync options keep it, and whether a person may confirm
    its deletion; None: they do not. A prune reads `Prune=`, an app deletion `Delete=`."""
    name = "Prune" if verdict.deleting is None else "Delete"
    value = object_options(live).get(name)
    if value == "false":
        return f"{name}=false", False
    if value == "confirm" and not verdict.confirmed:
        return f"{name}=confirm", True
    return None


# -- the share guards -------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """`floor`: a prune of at most this many objects is never held. `max_share`: past
    it, the share of an app's (or the cluster's) inventory one reconcile may prune."""

    floor: int = DEFAULT_PRUNE_FLOOR
    max_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_share <= 1.0:
            raise ValueError(f"max_prune_share must lie in [0, 1], not {self.max_share}")
        if self.floor < 0:
            raise ValueError(f"prune_floor must be 0 or more, not {self.floor}")

    def exceeded(self, losing: int, of: int) -> bool:
        return losing > self.floor and losing > self.max_share * of

    def why(self, losing: int, of: int, whose: str) -> str:
        return (
            f"mass-deletion guard: {losing} of {whose} {of} objects would be pruned at once "
            f"(more than {self.floor} and more than {self.max_share:.0%})"
        )


def guard(
    losing: Mapping[str, int], inventory: Mapping[str, int], limits: Limits
) -> dict[str, str]:
    """Which apps' prunes are held, with why: `losing` is what each unconfirmed app
    would delete now, `inventory` what each app of the cluster holds. Each app is
    judged alone, and all of them together against the whole cluster's inventory, so
    a commit deleting most of a cluster waits even if every app alone is small."""
    held = {
        app: limits.why(n, inventory.get(app, 0), "the app's")
        for app, n in losing.items()
        if limits.exceeded(n, inventory.get(app, 0))
    }
    total, of = sum(losing.values()), sum(inventory.values())
    if limits.exceeded(total, of):
        rest = [app for app, n in losing.items() if app not in held and n]
        held.update((app, limits.why(total, of, "the cluster's")) for app in rest)
    return held


def blocked(app: str, why: str, refs: Sequence[ObjectRef]) -> Finding:
    """The finding of objects held for a person's confirmation, listed (bounded)."""
    return Finding(
        app,
        FindingKind.PRUNE_BLOCKED,
        None,
        f"{_count(len(refs))} not pruned: {why}: {listing(refs)}; "
        f"confirm with `{confirm_command(app)}`",
    )


def orphaned(app: str, ref: ObjectRef, why: str) -> Finding:
    return Finding(app, FindingKind.ORPHANED, ref, why)


def listing(refs: Sequence[ObjectRef]) -> str:
    shown = ", ".join(str(ref) for ref in sorted(refs)[:LISTED])
    more = len(refs) - LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _count(n: int) -> str:
    return f"{n} object" if n == 1 else f"{n} objects"
