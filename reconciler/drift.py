"""The diff stage of a reconcile: each desired object against its live one, the
extras left in the inventory, policy violations, and Argo CD's own view.

It diffs the manifests as they are applied (with the tracking label on apply-mode
clusters), made once per render. A resync of an unchanged object costs a digest,
not a diff: the last diff of each object is kept with the verdict digest it was
made under, and an object found in sync (by a dry-run, by the local no-op test, or
by its diff on a report-mode cluster) is remembered in the store, so the next
reconcile, after a restart too, neither diffs it nor sends it a dry-run while
neither side changed. The dry-runs a diff does send go out side by side
(reconciler.dryruns), and the report keeps the order of the pairs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, TypeVar

from reconciler.cluster import ClusterClient, LiveCache, NotSynced, Unreachable
from reconciler.diff import DIFF_VERSION, diff_object, parse_ignore_rules
from reconciler.diff.fieldsets import FieldSet, owned_part
from reconciler.diff.fingerprint import canonical, digest, project
from reconciler.diff.ignore import IgnoreRule
from reconciler.diff.noop import applies_unchanged, reported_unchanged
from reconciler.diff.removed import argocd_applied
from reconciler.dryruns import AdaptiveLimit, send
from reconciler.errors import ReconcilerError
from reconciler.model import (
    FIELD_MANAGER,
    TRACKING_LABEL,
    App,
    Drift,
    GroupKind,
    Manifest,
    Mode,
    ObjectRef,
    Violation,
    object_ref,
)
from reconciler.pairs import Pair, Pairs
from reconciler.policy import Policies
from reconciler.record import Recorder
from reconciler.report import ArgoStatus, Finding, FindingKind, ObjectError, Report

# The label is part of every apply but never drift by itself: an object that matches
# git in everything else is adopted as it is, without a write (invariant 3).
TRACKING_RULE = parse_ignore_rules(
    [{"group": "*", "kind": "*", "jsonPointers": ["/metadata/labels/reconciler.kernow.io~1app"]}],
    "the tracking label",
)
ARGOCD_APPLICATION = GroupKind("argoproj.io", "Application")
# The policy a desired object breaks when the policies could not be evaluated on it.
UNCHECKED = "policies-unchecked"
T = TypeVar("T")


@dataclass(frozen=True)
class AppRules:
    """An app's ignore rules, with the text a verdict is keyed by (made once per app)."""

    rules: tuple[IgnoreRule, ...] = ()
    key: str = "()"


Rules = dict[str, AppRules]


@dataclass(frozen=True)
class _DryRun:
    """A desired object whose diff needs the server's dry-run, and the verdict digest
    its outcome is remembered under."""

    pair: Pair
    rules: AppRules
    verdict: str


@dataclass(frozen=True)
class _InSync:
    """A desired object found in sync without a dry-run (its diff, or a local no-op),
    and the verdict digest to remember that under, so a restart need not look again."""

    verdict: str


@dataclass(frozen=True)
class Prepared:
    """A cluster's manifests as they are applied, with their canonical text; objects
    that could not be prepared (ref -> why) are kept, so never pruned, but fail alone."""

    manifests: tuple[Manifest, ...]
    texts: Mapping[ObjectRef, str]
    broken: Mapping[ObjectRef, str] = field(default_factory=dict)

    def only(self, wanted: Callable[[str], bool]) -> Prepared:
        """The manifests of the apps `wanted` says yes to."""
        manifests = tuple(m for m in self.manifests if wanted(m.origin.app))
        return Prepared(manifests, self.texts, self.broken)

    def text(self, m: Manifest) -> str:
        text = self.texts.get(m.ref)
        return text if text is not None else canonical(m.obj)


def prepare(
    manifests: Sequence[Manifest],
    *,
    tracked: bool,
    contain: Callable[[ObjectRef, BaseException], str],
) -> Prepared:
    """The manifests as they are applied: with the tracking label when `tracked`."""
    prepared: list[Manifest] = []
    texts: dict[ObjectRef, str] = {}
    broken: dict[ObjectRef, str] = {}
    for m in manifests:
        try:
            ready = _tracked(m) if tracked else m
            texts[m.ref] = canonical(ready.obj)
        except Exception as exc:  # e.g. labels that are not a mapping
            ready = m
            broken[m.ref] = f"cannot be prepared: {contain(m.ref, exc)}"
        prepared.append(ready)
    return Prepared(tuple(prepared), texts, broken)


class Differ:
    """The diff stage of one cluster, with what it remembers between reconciles."""

    def __init__(
        self,
        cluster: str,
        *,
        report_only: bool,
        client: ClusterClient,
        cache: LiveCache,
        policies: Policies,
        recorder: Recorder,
        contain: Callable[[ObjectRef, BaseException], str],
        dry_run_concurrency: int = 1,
    ) -> None:
        self.name = cluster
        self.report_only = report_only
        self.mode: Mode = "report" if report_only else "apply"
        self.client = client
        self.cache = cache
        self.policies = policies
        self.recorder = recorder
        self.contain = contain
        self.memo: dict[ObjectRef, tuple[str, Drift | None]] = {}
        self.policy_memo: dict[tuple[str, ObjectRef, str], list[Violation]] = {}
        # Argo CD's applied fields of each report-mode object, per live version and app.
        self.applied_memo: dict[ObjectRef, tuple[str, str, FieldSet | None, str]] = {}
        # Kept between reconciles: a server that throttled one is not hammered by the next.
        self.dry_runs = AdaptiveLimit(dry_run_concurrency)

    def compare(
        self,
        apps: Sequence[App],
        pairs: Pairs,
        prepared: Prepared,
        errors: Sequence[ObjectError],
        progress: Callable[[float], None],
    ) -> tuple[Report, Rules]:
        """The drift report of `pairs` (with `errors` found before), and the ignore
        rules per app it was computed with."""
        started = time.monotonic()
        errors = list(errors)
        rules = self._ignore_rules(apps, errors)
        verdicts = self.recorder.verdicts()
        # What each pair came to, in the order of the pairs: the report keeps it.
        found: list[tuple[str, Drift | ObjectError | None]] = []
        waiting: dict[int, _DryRun] = {}
        # The in-sync verdicts to remember, by position: stored in the order of the pairs.
        in_sync: dict[int, tuple[ObjectRef, str]] = {}
        for pair in pairs.values():
            if pair.desired is None:
                if pair.prune_candidate and pair.live is not None:
                    found.append((pair.app, diff_object(pair.ref, None, pair.live)))
                continue
            progress(0.0)
            if pair.ref in prepared.broken:
                found.append((pair.app, ObjectError(pair.app, pair.ref, prepared.broken[pair.ref])))
                continue
            if not pair.listed:
                continue  # its kind cannot be listed: the plan says that the object waits
            app_rules = rules.get(pair.app, AppRules())
            diff = functools.partial(self._diff, pair, app_rules, prepared, verdicts)
            outcome = self._contained(pair, diff)
            if isinstance(outcome, _DryRun):
                waiting[len(found)] = outcome
                outcome = None
            elif isinstance(outcome, _InSync):
                in_sync[len(found)] = (pair.ref, outcome.verdict)
                outcome = None
            found.append((pair.app, outcome))

        def answered(at: int, dry_run: Future[dict[str, Any]]) -> None:
            step = waiting[at]
            outcome = self._contained(step.pair, lambda: self._diffed(step, dry_run.result()))
            found[at] = (step.pair.app, outcome)
            if outcome is None:
                in_sync[at] = (step.pair.ref, step.verdict)

        self._dry_runs(waiting, progress, answered)
        self.recorder.in_sync([in_sync[at] for at in sorted(in_sync)])
        drifts = [(app, d) for app, d in found if isinstance(d, Drift)]
        errors += [e for _, e in found if isinstance(e, ObjectError)]
        violations = self._violations(prepared, self._live_objects(prepared.manifests), errors)
        report = Report(
            cluster=self.name,
            mode=self.mode,
            drifts=tuple(drifts),
            violations=tuple(violations),
            errors=tuple(errors),
            argocd=self._argocd_status() if self.report_only else {},
            duration_s=time.monotonic() - started,
            findings=violation_findings(violations),
        )
        return report, rules

    def _ignore_rules(self, apps: Sequence[App], errors: list[ObjectError]) -> Rules:
        shared = (*self.policies.ignore_rules(self.name), *TRACKING_RULE)
        rules: Rules = {}
        for app in apps:
            try:
                own = parse_ignore_rules(app.ignore_differences, f"app {app.name}")
            except ReconcilerError as exc:
                errors.append(ObjectError(app.name, None, str(exc)))
                own = ()
            rules[app.name] = AppRules(own + shared, repr(own + shared))
        return rules

    def _contained(self, pair: Pair, work: Callable[[], T]) -> T | ObjectError:
        """What `work` on `pair` returns, or the error it raised as that object's error."""
        try:
            return work()
        except Unreachable:
            raise  # the whole reconcile waits for the cluster, not each object in turn
        except ReconcilerError as exc:
            return ObjectError(pair.app, pair.ref, str(exc))
        except Exception as exc:  # a bug met by one object stays with that object
            return ObjectError(pair.app, pair.ref, self.contain(pair.ref, exc))

    def _dry_runs(
        self,
        waiting: Mapping[int, _DryRun],
        progress: Callable[[float], None],
        answered: Callable[[int, Future[dict[str, Any]]], None],
    ) -> None:
        """Send each waiting dry-run, side by side under the cluster's adaptive limit, and
        hand each to `answered` (on this thread) as it is answered; the supervisor is told
        of each. If `answered` raises (the cluster is unreachable), the dry-runs not yet
        sent never are."""
        if not waiting:
            return
        workers = min(self.dry_runs.ceiling, len(waiting))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"dry-run-{self.name}") as pool:
            sent = {
                pool.submit(send, self.dry_runs, functools.partial(self._dry_run, step)): at
                for at, step in waiting.items()
            }
            try:
                for dry_run in as_completed(sent):
                    progress(0.0)
                    answered(sent[dry_run], dry_run)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise

    def _dry_run(self, step: _DryRun) -> dict[str, Any]:
        assert step.pair.desired is not None, "only a desired object is dry-run"
        # force: the diff shows what the reconciler's apply would make, takeovers included.
        return self.client.apply(step.pair.desired.obj, force=True, dry_run=True)

    def _diffed(self, step: _DryRun, dry_run: Mapping[str, Any]) -> Drift | None:
        """The diff of a desired object against its live one and the server's dry-run."""
        pair = step.pair
        assert pair.desired is not None and pair.live is not None, "a dry-run diffs live"
        m = pair.desired
        found = diff_object(m.ref, m.obj, pair.live, dry_run=dry_run, ignore=step.rules.rules)
        self.memo[m.ref] = (step.verdict, found)
        return found

    def _diff(
        self,
        pair: Pair,
        app_rules: AppRules,
        prepared: Prepared,
        verdicts: Mapping[ObjectRef, str],
    ) -> Drift | _DryRun | _InSync | None:
        """The diff of a desired object, or what it needs from the server to be made."""
        assert pair.desired is not None, "only a desired object is diffed against live"
        m, live, rules = pair.desired, pair.live, app_rules.rules
        if live is None:
            return diff_object(m.ref, m.obj, None, ignore=rules)
        verdict = self.verdict(m, live, app_rules, prepared)
        applied = None
        if self.report_only:
            # A field git removed is read from the whole live object, not the projection
            # the verdict is made of: Argo CD removing it must end its drift.
            applied, values = self._applied(pair.app, m.ref, live)
            verdict += values
        remembered = self.memo.get(m.ref)
        if remembered is not None and remembered[0] == verdict:
            return remembered[1]
        stored = verdicts.get(m.ref) == verdict
        if stored:
            found = None
        elif self.report_only:
            # A report-mode cluster gets no dry-run: it is a PATCH, audited as a write.
            # What git removed shows through the fields Argo CD applied.
            found = (
                None
                if reported_unchanged(m.obj, live, pair.app)
                else diff_object(m.ref, m.obj, live, ignore=rules, applied=applied)
            )
        elif applies_unchanged(m.obj, live, FIELD_MANAGER):
            found = None
        else:
            return _DryRun(pair, app_rules, verdict)
        self.memo[m.ref] = (verdict, found)
        return _InSync(verdict) if found is None and not stored else found

    def _applied(
        self, app: str, ref: ObjectRef, live: Mapping[str, Any]
    ) -> tuple[FieldSet | None, str]:
        """The fields Argo CD applied to `live` and a digest of their live values, made
        once per live version (reading them costs more than the rest of a verdict)."""
        version = str((live.get("metadata") or {}).get("resourceVersion"))
        hit = self.applied_memo.get(ref)
        if hit is not None and hit[:2] == (version, app):
            return hit[2], hit[3]
        applied = argocd_applied(live, app)
        values = "" if applied is None else digest(owned_part(live, applied))
        self.applied_memo[ref] = (version, app, applied, values)
        return applied, values

    def verdict(
        self, m: Manifest, live: Mapping[str, Any], rules: AppRules, prepared: Prepared
    ) -> str:
        """The digest an in-sync verdict for `m` against `live` is remembered under: the
        cluster's mode and the diff's version are part of it, as each changes what in
        sync means (a diff against Argo CD's records, or a dry-run)."""
        live_text = canonical(project(live, m.obj))
        return self.recorder.verdict(
            prepared.text(m), live_text, rules.key, self.mode, DIFF_VERSION
        )

    def _violations(
        self,
        prepared: Prepared,
        live: Sequence[Mapping[str, Any]],
        errors: list[ObjectError],
    ) -> list[Violation]:
        """Policy violations of desired and live objects; an object evaluated before in
        the same state (desired digest, live resourceVersion) is not evaluated again.
        An object whose evaluation fails is an error of that object (in `errors`); a
        desired one is also a violation, so it is not applied unchecked (fail closed)."""
        memo: dict[tuple[str, ObjectRef, str], list[Violation]] = {}
        found: list[Violation] = []
        checks: list[tuple[tuple[str, ObjectRef, str], str, Callable[[], list[Violation]]]] = []
        for m in prepared.manifests:
            if m.ref not in prepared.broken:
                desired = functools.partial(self.policies.evaluate, self.name, [m])
                checks.append((("desired", m.ref, prepared.text(m)), m.origin.app, desired))
        for obj in live:
            meta = obj.get("metadata") or {}
            key = ("live", object_ref(obj), f"{meta.get('uid')}/{meta.get('resourceVersion')}")
            checks.append(
                (key, "", functools.partial(self.policies.evaluate, self.name, live=[obj]))
            )
        for key, app, evaluate in checks:
            hit = self.policy_memo.get(key)
            try:
                memo[key] = hit if hit is not None else evaluate()
            except Exception as exc:
                message = self.contain(key[1], exc)
                errors.append(ObjectError(app, key[1], message))
                if key[0] == "desired":
                    why = f"could not be evaluated ({message})"
                    found.append(Violation(UNCHECKED, self.name, key[1], app, why, "desired"))
                continue
            found += memo[key]
        self.policy_memo = memo
        return found

    def _live_objects(self, manifests: Sequence[Manifest]) -> list[Mapping[str, Any]]:
        kinds = sorted({(m.ref.group, m.ref.kind) for m in manifests})
        objects: list[Mapping[str, Any]] = []
        for group, kind in kinds:
            try:
                objects.extend(self.cache.objects(group, kind))
            except NotSynced:
                continue
        return objects

    def _argocd_status(self) -> dict[str, ArgoStatus]:
        try:
            applications = self.cache.objects(ARGOCD_APPLICATION.group, ARGOCD_APPLICATION.kind)
        except NotSynced:
            return {}
        status: dict[str, ArgoStatus] = {}
        for obj in applications:
            st = obj.get("status") or {}
            status[str(obj["metadata"]["name"])] = ArgoStatus(
                (st.get("sync") or {}).get("status"), (st.get("health") or {}).get("status")
            )
        return status


def violation_findings(violations: Sequence[Violation]) -> tuple[Finding, ...]:
    """A finding of its app for each desired object that breaks a policy. A live object's
    violation (no app known) stays in the report's violations: nothing acts on it."""
    return tuple(
        Finding(v.app, FindingKind.VIOLATION, v.ref, f"{v.policy}: {v.message}")
        for v in violations
        if v.source == "desired" and v.app is not None
    )


def _tracked(m: Manifest) -> Manifest:
    """The manifest with the reconciler's tracking label for its app."""
    metadata = dict(m.obj.get("metadata") or {})
    labels = dict(metadata.get("labels") or {})
    labels[TRACKING_LABEL] = m.origin.app
    metadata["labels"] = labels
    return Manifest(m.ref, {**m.obj, "metadata": metadata}, m.origin)
