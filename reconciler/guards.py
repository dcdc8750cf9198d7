"""The runtime rules that hold a planned write back, as pure functions.

The plan says what should be written; these rules say, as the plan is carried
out, which writes must not be sent after all and what each object's outcome is
then. Kept apart from the I/O that carries out the plan so each rule is tested
with plain data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from reconciler.model import ObjectRef, Result
from reconciler.plan import VERBS, Action, ActionKind
from reconciler.report import Outcome


def without_write(
    action: Action,
    *,
    broken: Mapping[ObjectRef, str],
    unreachable: str | None,
    held: Mapping[ObjectRef, str],
    failed_apps: Collection[str],
    dry_run: bool = False,
) -> Outcome | None:
    """The outcome of `action` when no write is to be sent for it, else None.

    `broken` objects (ref -> why) could not be prepared for apply: they fail, but a
    prune of theirs still goes ahead. A `dry_run` sends no write: each says what it
    would do. Once the cluster is `unreachable` (why), the
    remaining writes wait for the next reconcile rather than spend the retries of
    every object on a dead server. An action that writes nothing keeps its planned
    outcome. Objects `held` (ref -> why, e.g. flapping) are not written this time.
    An app in `failed_apps` had an apply fail in this reconcile: nothing of it is
    pruned, since the prune may remove what the failed object still needs.
    """
    if action.ref in broken and action.kind is not ActionKind.PRUNE:
        return Outcome(action.app, action.ref, Result.FAILED, broken[action.ref])
    if action.writes and dry_run:
        reason = f"dry run: would {VERBS[action.kind]}"
        return Outcome(action.app, action.ref, Result.SKIPPED, reason)
    if action.writes and unreachable is not None:
        return Outcome(action.app, action.ref, Result.SKIPPED, f"not attempted: {unreachable}")
    if not action.writes:
        return Outcome(action.app, action.ref, action.result, action.reason)
    if action.ref in held:
        return Outcome(action.app, action.ref, Result.SKIPPED, held[action.ref])
    if action.kind is ActionKind.PRUNE and action.app in failed_apps:
        reason = "not pruned: an apply of this app failed in this reconcile"
        return Outcome(action.app, action.ref, Result.SKIPPED, reason)
    return None
