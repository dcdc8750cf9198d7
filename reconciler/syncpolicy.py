"""What an Application's `syncPolicy` lets the reconciler write, and its sync options.

Argo CD semantics, kept in one pure module: the catalogue refuses what is not
supported here (so nothing an Application says is silently ignored), and the
engine runs a Plan through `gate` and `with_options` after planning it:

- no `automated`: drift is reported, nothing is written until a person asks
  (`reconciler sync --app A`);
- `automated` without `selfHeal`: the app is synced when its desired state
  changed since its last successful sync (a digest of its manifests and of the
  sync-relevant part of its spec); a live edit alone is reported, not reverted;
- the sync options change how single actions are carried out (prune
  propagation, the live values kept under RespectIgnoreDifferences, objects of
  kinds the cluster does not serve yet).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, replace
from typing import Any

from reconciler.diff import pointer
from reconciler.diff.ignore import parse_ignore_rules
from reconciler.diff.pointer import RuleError
from reconciler.model import (
    App,
    GroupKind,
    Manifest,
    ObjectRef,
    Result,
    SyncRequest,
    object_ref,
    parse_options,
)
from reconciler.plan import WAITING, Action, ActionKind, Plan
from reconciler.pruneguard import SYNC_OPTIONS
from reconciler.report import Finding, FindingKind, Outcome

_SERVER_SIDE = "the reconciler always applies server-side (kubectl apply --server-side)"
_NOT_REPLACE = "replace/create is not supported: every write is a server-side apply"
# Every documented Argo CD sync option, by value: None is implemented (see the README
# table), a text is why that value is refused. An option not listed is refused too.
APP_OPTIONS: Mapping[str, Mapping[str, str | None]] = {
    "CreateNamespace": {"true": None, "false": None},
    "ServerSideApply": {"true": None, "false": _SERVER_SIDE},
    "ApplyOutOfSyncOnly": {"true": None, "false": None},
    "PruneLast": {"true": None, "false": None},
    "Replace": {"false": None, "true": _NOT_REPLACE},
    "RespectIgnoreDifferences": {"true": None, "false": None},
    "SkipDryRunOnMissingResource": {"true": None, "false": None},
    "PrunePropagationPolicy": {"foreground": None, "background": None, "orphan": None},
    "FailOnSharedResource": {"true": None, "false": None},
    "Validate": {
        "true": None,
        "false": "the API server always validates: fix the manifest instead",
    },
    "ClientSideApplyMigration": {
        "true": None,
        "false": "fields last written by kubectl are always taken over by the reconciler",
    },
}
# Options Argo CD documents on objects (annotation) but that are refused app-wide here.
_RESOURCE_ONLY = {
    "Prune": "set it on the objects, as the annotation " + SYNC_OPTIONS,
    "Delete": "set it on the objects, as the annotation " + SYNC_OPTIONS,
    "Force": "delete-and-recreate is not supported",
}
_POLICY_KEYS = {"automated", "syncOptions", "retry", "managedNamespaceMetadata"}
_AUTOMATED_KEYS = {"prune", "selfHeal", "allowEmpty", "enabled"}
_PROPAGATION = {"foreground": "Foreground", "background": "Background", "orphan": "Orphan"}

NOT_AUTOMATED = "syncPolicy.automated is not set: run `reconciler sync --app {app}`"
NO_SELF_HEAL = (
    "selfHeal is off: live edits are reported, not reverted "
    "(`reconciler sync --app {app}` reverts them)"
)


def problems(sync_policy: Mapping[str, Any]) -> list[str]:
    """Why `spec.syncPolicy` cannot be honoured here, one message per key (empty: it can)."""
    found = [
        f"spec.syncPolicy.{key} is not supported"
        for key in sorted(set(map(str, sync_policy)) - _POLICY_KEYS)
    ]
    automated = sync_policy.get("automated")
    if automated is not None and not isinstance(automated, Mapping):
        found.append("spec.syncPolicy.automated must be a mapping")
    elif automated is not None:
        for key, value in automated.items():
            if key not in _AUTOMATED_KEYS:
                found.append(f"spec.syncPolicy.automated.{key} is not supported")
            elif not isinstance(value, bool):
                found.append(f"spec.syncPolicy.automated.{key} must be true or false")
    if sync_policy.get("managedNamespaceMetadata"):
        found.append(
            "spec.syncPolicy.managedNamespaceMetadata is not supported: "
            "declare the Namespace in git to set its labels and annotations"
        )
    retry = sync_policy.get("retry")
    if retry is not None and not isinstance(retry, Mapping):
        found.append("spec.syncPolicy.retry must be a mapping")
    options = sync_policy.get("syncOptions") or []
    for i, option in enumerate(options if isinstance(options, list) else []):
        problem = _option_problem(str(option))
        if problem:
            found.append(f"spec.syncPolicy.syncOptions[{i}] {option!r}: {problem}")
    return found


def _option_problem(option: str) -> str | None:
    name, equals, value = (part.strip() for part in option.partition("="))
    if name in _RESOURCE_ONLY:
        return f"not supported app-wide: {_RESOURCE_ONLY[name]}"
    values = APP_OPTIONS.get(name)
    if values is None:
        return "not an Argo CD sync option the reconciler knows"
    if not equals or value not in values:
        return f"{name} takes {' or '.join(values)}"
    return values[value]


def automated(app: App) -> bool:
    value = app.sync_policy.get("automated")
    return isinstance(value, Mapping) and value.get("enabled") is not False


def self_heal(app: App) -> bool:
    value = app.sync_policy.get("automated")
    return automated(app) and isinstance(value, Mapping) and value.get("selfHeal") is True


def desired_digest(app: App, manifests: Iterable[str]) -> str:
    """What an app's sync would write: its prepared manifests (canonical texts) and the
    parts of its spec that change what or how it is applied (never its commit, so a
    commit that leaves the app's output alone is no change)."""
    spec = {
        "namespace": app.namespace,
        "sources": [asdict(source) for source in app.sources],
        "sync_options": sorted(app.sync_options),
        "ignore_differences": list(app.ignore_differences),
    }
    text = json.dumps(spec, sort_keys=True, default=str) + "\n" + "\n".join(sorted(manifests))
    return hashlib.sha256(text.encode()).hexdigest()


def gate(
    the_plan: Plan,
    apps: Iterable[App],
    *,
    changed: Collection[str],
    requested: Mapping[str, SyncRequest],
) -> tuple[Plan, frozenset[str]]:
    """The plan with the writes of the apps whose syncPolicy does not let the reconciler
    sync them now turned into skips, and why, as a finding per such app; with the
    names of those apps. `changed` apps' desired state moved since their last
    successful sync; `requested` apps were asked for by a person and always sync."""
    held: dict[str, str] = {}
    for app in apps:
        if app.name in requested:
            continue
        if not automated(app):
            held[app.name] = NOT_AUTOMATED.format(app=app.name)
        elif not self_heal(app) and app.name not in changed:
            held[app.name] = NO_SELF_HEAL.format(app=app.name)
    actions = []
    blocked: set[str] = set()
    for action in the_plan.actions:
        why = held.get(action.app)
        if why is not None and action.writes:
            blocked.add(action.app)
            action = replace(action, kind=ActionKind.NONE, result=Result.SKIPPED, reason=why)
        actions.append(action)
    findings = tuple(
        Finding(app, FindingKind.OUT_OF_SYNC, None, held[app]) for app in sorted(blocked)
    )
    gated = replace(the_plan, actions=tuple(actions), findings=the_plan.findings + findings)
    return gated, frozenset(held)


def with_options(
    the_plan: Plan,
    apps: Iterable[App],
    *,
    live: Mapping[ObjectRef, Mapping[str, Any] | None],
    unserved: Collection[GroupKind],
) -> Plan:
    """The plan with each app's sync options carried into its actions:
    PrunePropagationPolicy on its prunes, RespectIgnoreDifferences on its updates
    (the live value is kept where its ignoreDifferences point), and
    SkipDryRunOnMissingResource on objects of kinds the cluster does not serve: they
    wait for their CRD (skipped) instead of failing the app."""
    by_name = {app.name: app for app in apps}
    actions = []
    for action in the_plan.actions:
        app = by_name.get(action.app)
        if app is not None:
            action = _with_app_options(action, app, live.get(action.ref), unserved)
        actions.append(action)
    return replace(the_plan, actions=tuple(actions))


def _with_app_options(
    action: Action,
    app: App,
    live: Mapping[str, Any] | None,
    unserved: Collection[GroupKind],
) -> Action:
    options = parse_options(app.sync_options)
    if action.kind is ActionKind.PRUNE and "PrunePropagationPolicy" in options:
        propagation = _PROPAGATION.get(options["PrunePropagationPolicy"])
        return replace(action, propagation=propagation) if propagation else action
    if (
        action.kind is ActionKind.UPDATE
        and options.get("RespectIgnoreDifferences") == "true"
        and action.manifest is not None
        and live is not None
    ):
        obj = keep_ignored(action.manifest.obj, live, app)
        return replace(action, manifest=Manifest(action.ref, obj, action.manifest.origin))
    missing_kind = GroupKind(action.ref.group, action.ref.kind) in unserved
    if (
        missing_kind
        and action.kind is ActionKind.NONE
        and action.result is Result.FAILED
        and options.get("SkipDryRunOnMissingResource") == "true"
    ):
        reason = (
            f"{WAITING}the cluster does not serve {action.ref.kind} yet, "
            "its CRD may come (SkipDryRunOnMissingResource=true)"
        )
        return replace(action, result=Result.SKIPPED, reason=reason)
    return action


def keep_ignored(
    desired: Mapping[str, Any], live: Mapping[str, Any], app: App
) -> Mapping[str, Any]:
    """`desired` with the live value at every path the app's ignoreDifferences name
    (jsonPointers, jqPathExpressions), and without the paths live does not have:
    Argo CD's RespectIgnoreDifferences, so an apply never reverts an ignored field."""
    try:
        rules = parse_ignore_rules(app.ignore_differences, f"app {app.name}")
    except RuleError:
        return desired  # the diff stage already reports the app's bad rule
    ref = object_ref(desired)
    patched = copy.deepcopy(dict(desired))
    for rule in rules:
        if not rule.matches(ref):
            continue
        paths = [p for segments in rule.json_pointers for p in pointer.expand(patched, segments)]
        paths += [p for segments in rule.json_pointers for p in pointer.expand(live, segments)]
        for expression in rule.jq_paths:
            paths += expression.paths(patched) + expression.paths(live)
        for path in dict.fromkeys(paths):
            _copy_live(patched, live, path)
    return patched


def _copy_live(desired: dict[str, Any], live: Mapping[str, Any], path: pointer.Path) -> None:
    """Set desired[path] to live[path], or delete it from desired where live has none."""
    found, value = _get(live, path)
    if not found:
        pointer.delete(desired, [path])
        return
    target: Any = desired
    for segment, following in itertools.pairwise(path):
        if isinstance(target, dict):
            if not isinstance(target.get(segment), dict | list):
                target[segment] = [] if isinstance(following, int) else {}
            target = target[segment]
        elif isinstance(target, list) and isinstance(segment, int) and segment < len(target):
            target = target[segment]
        else:
            return  # desired's shape differs from live's here: nothing sensible to keep
    last = path[-1]
    in_list = isinstance(target, list) and isinstance(last, int) and last < len(target)
    if isinstance(target, dict) or in_list:
        target[last] = copy.deepcopy(value)


def _get(obj: Any, path: pointer.Path) -> tuple[bool, Any]:
    value = obj
    for segment in path:
        try:
            value = value[segment]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, value


def synced_apps(
    steps: Iterable[tuple[Action, Outcome]],
    apps: Iterable[App],
    *,
    held: Collection[str],
    failed: Collection[str],
) -> set[str]:
    """The apps whose sync this reconcile completed, from each action's outcome:
    not held by their policy, not failed (render, errors), every write of
    theirs done (none failed or skipped) and nothing left waiting; their desired
    digest may be recorded as synced."""
    done = {app.name for app in apps} - set(held) - set(failed)
    for action, outcome in steps:
        waiting = outcome.message.startswith(WAITING)
        skipped = outcome.result is Result.SKIPPED and (action.writes or waiting)
        if outcome.result is Result.FAILED or skipped:
            done.discard(action.app)
    return done
