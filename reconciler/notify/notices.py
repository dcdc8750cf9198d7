"""What is worth telling the room, from a reconcile's report and the daemon's health.

Level-triggered, like the reconciler itself: each report says what is *open* now
in its cluster (an app drifting on a report-mode cluster, a failed sync, a prune
held by the guard, drift left for a person, a policy violation), each as a
`Condition` with a fingerprint of what makes it the same one. `transitions`
compares that with what was open before (kept in the store), so a condition is
told once when it opens, again only when it changes, and once when it closes:
a resync that finds the same drift posts nothing. Pure functions: the thread
that reads the store and talks to the homeserver is reconciler.notify.notifier.

Everything here comes from a Report, whose drift values and messages are already
redacted (Secret values are keyed markers); the text is redacted once more by
reconciler.notify.format before it leaves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

from reconciler.diff.redact import TEXT_MARKER
from reconciler.model import Change, Drift, DriftType, Mode, ObjectRef, Result
from reconciler.plan import PRUNE_HELD
from reconciler.report import STOPPED_SYNC, Finding, FindingKind, Outcome, Report

Kind = Literal["drift", "failed", "prune-blocked", "out-of-sync", "violation", "daemon"]
State = Literal["opened", "changed", "closed"]
# What is dropped first when the pending queue is full: closings, then drift, then the
# rest (a failed sync, a decision to make, the daemon's own trouble).
LOW, NORMAL, HIGH = 0, 1, 2
DAEMON_SCOPE = "daemon"
# Bounds on one notice, so one app with a thousand drifting objects stays one short message.
MAX_OBJECTS = 5
MAX_FIELDS = 3
MAX_VALUE = 40
# The parts that carry the notices: their own trouble is in `status`, not in the room
# they cannot reach.
_OWN_PARTS = "notify."
_MARKER = re.compile(r"<redacted [0-9a-f]{12}>")


class Part(Protocol):
    """A supervised part of the daemon as recorded (reconciler.store.ComponentRecord)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def detail(self) -> str: ...


@dataclass(frozen=True)
class Condition:
    """Something open now: `key` names it (cluster/app/kind), `fingerprint` what makes
    it the same one across reconciles; `lines` tell it (redacted); an `approval`
    (action, detail) is offered with it."""

    key: str
    kind: Kind
    cluster: str
    app: str
    fingerprint: str
    title: str
    lines: tuple[str, ...] = ()
    priority: int = HIGH
    approval: tuple[str, str] | None = None
    # The title when it changed while open (a grown drift, another object failing).
    changed_title: str = ""
    # What a prune approval covers, exactly (reconciler.notify.approvals binds to it).
    approval_objects: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notice:
    """One thing to tell the room, as stored in the outbox and formatted into a message."""

    key: str
    kind: str
    state: State
    cluster: str
    app: str
    title: str
    lines: tuple[str, ...] = ()
    priority: int = HIGH
    approval_action: str | None = None
    approval_detail: str | None = None
    approval_objects: tuple[str, ...] = ()

    def encode(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "lines": list(self.lines),
            "approval_objects": list(self.approval_objects),
        }

    @staticmethod
    def decode(data: Mapping[str, Any]) -> Notice:
        fields = Notice.__dataclass_fields__
        known = {k: v for k, v in data.items() if k in fields}
        return Notice(
            **{
                **known,
                "lines": tuple(known.get("lines") or ()),
                "approval_objects": tuple(known.get("approval_objects") or ()),
            }
        )


@dataclass(frozen=True)
class Transitions:
    """What a scope's conditions did since last time: the open ones (key ->
    fingerprint) to record, the keys closed, and the notices telling it."""

    opened: dict[str, str]
    closed: tuple[str, ...]
    notices: tuple[Notice, ...]


def transitions(
    before: Mapping[str, str],
    now: Mapping[str, Condition],
    closable: Callable[[str], bool] = lambda _key: True,
    beside: Callable[[str], tuple[str, ...]] = lambda _key: (),
) -> Transitions:
    """Compare the conditions open `now` with the fingerprints open `before`. A key
    `closable` refuses (its app could not be judged this time) stays open, unsaid;
    `beside` gives the lines told with a closing (Argo CD's view of the app)."""
    opened: dict[str, str] = {}
    notices: list[Notice] = []
    for key, condition in sorted(now.items()):
        previous = before.get(key)
        if previous == condition.fingerprint:
            continue
        opened[key] = condition.fingerprint
        notices.append(_notice(condition, "opened" if previous is None else "changed"))
    closed = tuple(k for k in sorted(before) if k not in now and closable(k))
    for key in closed:
        cluster, app, kind = _split(key)
        notices.append(
            Notice(
                key,
                kind,
                "closed",
                cluster,
                app,
                _closed_title(kind, cluster, app),
                beside(key),
                LOW,
            )
        )
    return Transitions(opened, closed, tuple(notices))


# Said with a condition posted again because the approval it carried expired unused.
EXPIRED_LINE = "the approval offered before expired unused: this message carries a new one"


def offered_again(notice: Notice) -> Notice:
    """`notice` (as last sent) to post again with a fresh approval: the condition is
    unchanged, only the decision is offered anew."""
    lines = notice.lines if EXPIRED_LINE in notice.lines else (*notice.lines, EXPIRED_LINE)
    return replace(notice, state="changed", lines=lines)


def _notice(condition: Condition, state: State) -> Notice:
    action, detail = condition.approval or (None, None)
    title = condition.changed_title if state == "changed" else condition.title
    return Notice(
        condition.key,
        condition.kind,
        state,
        condition.cluster,
        condition.app,
        title,
        condition.lines,
        condition.priority,
        action,
        detail,
        condition.approval_objects,
    )


def key(cluster: str, app: str, kind: str) -> str:
    return f"{cluster}/{app}/{kind}"


def _split(text: str) -> tuple[str, str, str]:
    cluster, _, rest = text.partition("/")
    app, _, kind = rest.rpartition("/")
    return cluster, app, kind


def _closed_title(kind: str, cluster: str, app: str) -> str:
    where = f"{cluster}/{app}"
    return {
        "drift": f"{where}: drift closed, the cluster matches git again",
        "failed": f"{where}: sync succeeded again",
        "prune-blocked": f"{where}: no prune waits any more",
        "out-of-sync": f"{where}: synced, nothing waits for a person",
        "violation": f"{where}: no policy violation any more",
        "daemon": "daemon back: every part is making progress",
    }.get(kind, f"{where}: {kind} closed")


# -- from a reconcile's report ---------------------------------------------------------


def report_conditions(cluster: str, mode: Mode, report: Report) -> dict[str, Condition]:
    """The conditions open in `cluster` after `report`, one per app and kind."""
    found: list[Condition] = []
    drifts: dict[str, list[Drift]] = defaultdict(list)
    for app, drift in report.drifts:
        drifts[app].append(drift)
    if mode == "report":
        found += [_drift(cluster, app, items, report) for app, items in sorted(drifts.items())]
    else:
        found += _failures(cluster, report)
    findings: dict[tuple[str, FindingKind], list[Finding]] = defaultdict(list)
    for finding in report.findings:
        findings[finding.app, finding.kind].append(finding)
    for (app, kind), items in sorted(findings.items(), key=lambda i: (i[0][0], i[0][1].value)):
        if kind is FindingKind.PRUNE_BLOCKED and mode == "apply":
            held = [o.ref for o in report.outcomes if o.app == app and _prune_held(o)]
            found.append(_held(cluster, app, items, "prune-blocked", "prune", held))
        elif kind is FindingKind.OUT_OF_SYNC and mode == "apply":
            refs = [f.ref for f in items if f.ref]
            waiting = drifts.get(app, [])
            found.append(_held(cluster, app, items, "out-of-sync", "sync", refs, waiting))
        elif kind is FindingKind.VIOLATION:
            found.append(_violation(cluster, app, items))
    return {c.key: c for c in found}


def argo_lines(cluster: str, report: Report) -> Callable[[str], tuple[str, ...]]:
    """For a key of `report`'s cluster: Argo CD's own sync and health of its app, as the
    reconciler read it from the cluster's Application objects (report mode only)."""
    if report.mode != "report":
        return lambda _key: ()
    return lambda k: (_argo(cluster, _split(k)[1], report),)


def _argo(cluster: str, app: str, report: Report) -> str:
    argo = report.argocd.get(app)
    if argo is not None:
        return f"Argo CD says: {argo.sync or 'unknown'} / {argo.health or 'unknown'}"
    if report.argocd:
        return f"Argo CD: no Application {app} seen on {cluster}"
    return f"Argo CD's sync and health: not readable (no Applications listed on {cluster})"


def closable(report: Report, only: Collection[str] | None = None) -> Callable[[str], bool]:
    """Whether a key of `report`'s cluster may be closed by it: not when the cluster
    stopped answering or kinds could not be listed (its live state is partly unknown),
    nor for an app with errors this time (its drift and findings are incomplete), nor
    for an app the reconcile did not cover (`only`, when it covered some apps)."""
    if report.unreachable or report.unlisted:
        return lambda _key: False
    failing = {e.app for e in report.errors}
    covered = None if only is None else frozenset(only)

    def judged(k: str) -> bool:
        app = _split(k)[1]
        return app not in failing and (covered is None or app in covered)

    return judged


def _drift(cluster: str, app: str, drifts: Sequence[Drift], report: Report) -> Condition:
    count = len(drifts)
    noun = "object differs" if count == 1 else "objects differ"
    return Condition(
        key(cluster, app, "drift"),
        "drift",
        cluster,
        app,
        _fingerprint(
            sorted((str(d.ref), d.type.value, sorted(c.path for c in d.changes)) for d in drifts)
        ),
        f"{cluster}/{app}: drift opened, {count} {noun} from git",
        (_argo(cluster, app, report), *_drift_lines(drifts)),
        NORMAL,
        changed_title=f"{cluster}/{app}: drift changed, {count} {noun} from git",
    )


def _drift_lines(drifts: Sequence[Drift]) -> list[str]:
    lines = [_drift_line(d) for d in sorted(drifts, key=lambda d: d.ref)[:MAX_OBJECTS]]
    if len(drifts) > MAX_OBJECTS:
        lines.append(f"… and {len(drifts) - MAX_OBJECTS} more objects")
    return lines


def _drift_line(drift: Drift) -> str:
    if drift.type is DriftType.MISSING:
        return f"{drift.ref} — missing from the cluster"
    if drift.type is DriftType.EXTRA:
        return f"{drift.ref} — on the cluster, no longer in git"
    changes = [_change(c) for c in drift.changes[:MAX_FIELDS]]
    more = len(drift.changes) - MAX_FIELDS
    tail = f"; … and {more} more fields" if more > 0 else ""
    return f"{drift.ref} — " + ("; ".join(changes) or "changed") + tail


def _change(change: Change) -> str:
    return f"{change.path} git {_value(change.desired)}, live {_value(change.live)}"


def _value(value: Any) -> str:
    """A short, redacted rendering of one side of a change (absent: "(absent)")."""
    if value is None:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=str)
    # The keyed markers mean nothing to a reader (and differ between restarts).
    text = _plain_markers(text)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _plain_markers(text: str) -> str:
    return _MARKER.sub(TEXT_MARKER, text)


def _failures(cluster: str, report: Report) -> list[Condition]:
    """Apps whose sync failed: an object that failed to apply, an app error (its render),
    a hook or wave that stopped the sync."""
    failed: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for outcome in report.outcomes:
        if outcome.result is Result.FAILED:
            failed[outcome.app].append((str(outcome.ref), outcome.message))
    for error in report.errors:
        if error.app:
            failed[error.app].append((str(error.ref) if error.ref else "app", error.message))
    for finding in report.findings:
        if finding.kind in STOPPED_SYNC:
            what = str(finding.ref) if finding.ref else finding.kind.value
            failed[finding.app].append((what, f"{finding.kind.value}: {finding.message}"))
    conditions = []
    for app, items in sorted(failed.items()):
        items = sorted(set(items))
        problems = _count(len(items), "problem")
        lines = [f"{what} — {_first_line(message)}" for what, message in items[:MAX_OBJECTS]]
        if len(items) > MAX_OBJECTS:
            lines.append(f"… and {len(items) - MAX_OBJECTS} more")
        conditions.append(
            Condition(
                key(cluster, app, "failed"),
                "failed",
                cluster,
                app,
                # What failed, not how: a message may carry a resourceVersion or a time.
                _fingerprint(sorted({what for what, _ in items})),
                f"{cluster}/{app}: sync failed ({problems})",
                tuple(lines),
                changed_title=f"{cluster}/{app}: sync still failing ({problems})",
            )
        )
    return conditions


def _held(
    cluster: str,
    app: str,
    findings: Sequence[Finding],
    kind: Kind,
    action: str,
    refs: Sequence[ObjectRef],
    drifts: Sequence[Drift] = (),
) -> Condition:
    objects = sorted({str(ref) for ref in refs})
    first = _first_line(findings[0].message)
    if kind == "prune-blocked":
        title = f"{cluster}/{app}: prune held by the guard ({_count(len(objects), 'object')})"
        changed = (
            f"{cluster}/{app}: prune still held by the guard ({_count(len(objects), 'object')})"
        )
        lines = [first, *objects[:MAX_OBJECTS]]
        detail = f"prune {len(objects)} objects of {app} held by the prune guard"
    else:
        title = f"{cluster}/{app}: out of sync, its syncPolicy leaves the sync to a person"
        changed = f"{cluster}/{app}: still out of sync, its drift changed"
        lines = [first, *_drift_lines(drifts)]
        detail = f"sync {app}: drift its syncPolicy leaves to a person"
    if len(objects) > MAX_OBJECTS and kind == "prune-blocked":
        lines.append(f"… and {len(objects) - MAX_OBJECTS} more objects")
    return Condition(
        key(cluster, app, kind),
        kind,
        cluster,
        app,
        _fingerprint([objects, sorted(str(d.ref) for d in drifts)]),
        title,
        tuple(lines),
        HIGH,
        (action, detail),
        changed_title=changed,
        approval_objects=tuple(objects) if kind == "prune-blocked" else (),
    )


def _violation(cluster: str, app: str, findings: Sequence[Finding]) -> Condition:
    items = sorted({(str(f.ref) if f.ref else app, _first_line(f.message)) for f in findings})
    lines = [f"{what} — {message}" for what, message in items[:MAX_OBJECTS]]
    objects = _count(len(items), "object")
    if len(items) > MAX_OBJECTS:
        lines.append(f"… and {len(items) - MAX_OBJECTS} more")
    return Condition(
        key(cluster, app, "violation"),
        "violation",
        cluster,
        app,
        _fingerprint(items),
        f"{cluster}/{app}: policy violation, not applied ({objects})",
        tuple(lines),
        changed_title=f"{cluster}/{app}: policy violations changed ({objects})",
    )


# -- from the daemon's health ----------------------------------------------------------


def daemon_conditions(parts: Iterable[Part], degraded: Collection[str]) -> dict[str, Condition]:
    """One condition while any part of the daemon (the notifier's own aside) is in a
    `degraded` state (reconciler.supervise.DEGRADED); its fingerprint is which parts and
    how, not their changing details."""
    troubled = sorted(
        (p for p in parts if p.state in degraded and not p.name.startswith(_OWN_PARTS)),
        key=lambda p: p.name,
    )
    if not troubled:
        return {}
    lines = [f"{p.name} — {p.state}: {_first_line(p.detail)}" for p in troubled[:MAX_OBJECTS]]
    if len(troubled) > MAX_OBJECTS:
        lines.append(f"… and {len(troubled) - MAX_OBJECTS} more parts")
    word = "STUCK" if any(p.state == "stuck" for p in troubled) else "degraded"
    condition = Condition(
        key(DAEMON_SCOPE, "", "daemon"),
        "daemon",
        DAEMON_SCOPE,
        "",
        _fingerprint(sorted((p.name, p.state) for p in troubled)),
        f"daemon {word}: {_count(len(troubled), 'part')} not progressing",
        tuple(lines),
        changed_title=f"daemon still {word}: {_count(len(troubled), 'part')} not progressing",
    )
    return {condition.key: condition}


def degraded_parts(parts: Iterable[Part], degraded: Collection[str]) -> frozenset[tuple[str, str]]:
    """What makes the daemon's condition what it is, to hand it over only when it moves."""
    return frozenset(
        (p.name, p.state)
        for p in parts
        if p.state in degraded and not p.name.startswith(_OWN_PARTS)
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _first_line(text: str, width: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _fingerprint(value: object) -> str:
    encoded = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _prune_held(outcome: Outcome) -> bool:
    return outcome.result is Result.SKIPPED and outcome.message.startswith(PRUNE_HELD)
