"""Everything a reconcile keeps in the state store, written from one place.

The engine reads its inputs through here too (inventory, in-sync verdicts), so
the store is met at one door. What is written is worked out by pure functions
(app records, the next inventory) that take the reconcile's pairs and outcomes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from reconciler.model import App, InventoryItem, ObjectRef, Result
from reconciler.pairs import Pairs, inventory_by_app
from reconciler.plan import WAITING, Action, next_inventory
from reconciler.pruneguard import AppTrace
from reconciler.report import Outcome, Report
from reconciler.store import AppRecord, RunRecord, Store


class Recorder:
    """One cluster's door to the state store."""

    def __init__(self, store: Store, cluster: str) -> None:
        self.store = store
        self.cluster = cluster

    def pinned_identity(self) -> str | None:
        return self.store.pinned_identity(self.cluster)

    def pin_identity(self, uid: str) -> None:
        self.store.pin_identity(self.cluster, uid)

    def inventory(self) -> list[InventoryItem]:
        return self.store.inventory(self.cluster)

    def verdicts(self) -> dict[ObjectRef, str]:
        """The verdict digest under which each object was last in sync."""
        return self.store.in_sync(self.cluster)

    def verdict(self, *parts: str) -> str:
        return self.store.verdict(*parts)

    def in_sync(self, verdicts: Iterable[tuple[ObjectRef, str]]) -> None:
        self.store.remember_in_sync(self.cluster, verdicts)

    def keep_in_sync(self, desired: Collection[ObjectRef]) -> None:
        """Only the objects of a whole cluster's desired state keep their verdicts."""
        self.store.keep_in_sync(self.cluster, desired)

    def synced_digests(self) -> dict[str, str]:
        """The desired digest (reconciler.syncpolicy) each app was last synced at."""
        return self.store.synced_digests(self.cluster)

    def synced(self, digests: Mapping[str, str], apps: Collection[str] | None = None) -> None:
        """`apps`, when every app of the cluster was reconciled: the others are forgotten."""
        self.store.record_synced(self.cluster, digests, apps)

    def applied(self, action: Action, verdict: str, api_version: str) -> None:
        """An object just applied is in sync under `verdict`; a tracked one joins its
        app's inventory at once, so a reconcile killed halfway still leaves it prunable."""
        self.in_sync([(action.ref, verdict)])
        if action.tracked:
            self.store.add_inventory(
                self.cluster, [InventoryItem(action.app, action.ref, api_version)]
            )

    def reconciled(
        self,
        report: Report,
        apps: Sequence[App],
        healths: Mapping[str, str | None],
        started_at: str,
        scope: Collection[str] | None,
    ) -> None:
        """The reconcile's verdict per app, its drift, its events and its run."""
        self.store.replace_apps(self.cluster, app_records(report, apps, healths), scope)
        self.store.replace_drift(self.cluster, report.drifts, scope)
        self.store.replace_findings(
            self.cluster,
            ((f.app, f.kind.value, str(f.ref or ""), f.message) for f in report.findings),
            scope,
        )
        self.store.record_events(
            self.cluster,
            [
                (o.app, str(o.ref), o.result.value, o.message)
                for o in report.outcomes
                if o.result is not Result.UNCHANGED
            ],
        )
        self.store.record_run(
            RunRecord(
                self.cluster,
                started_at,
                report.duration_s,
                report.result,
                {r.value: n for r, n in report.counts.items()},
            )
        )

    def app_traces(self) -> dict[str, AppTrace]:
        return self.store.app_traces(self.cluster)

    def remember_apps(self, apps: Iterable[App], scope: Collection[str] | None) -> None:
        """Where each app is declared and whether it has the resources finalizer, kept
        while its objects are in the inventory: what decides their fate once the
        Application is removed from git (reconciler.pruneguard.departure)."""
        traces = [
            AppTrace(app.name, app.origin.repo, app.origin.path, app.prune_on_delete)
            for app in apps
        ]
        self.store.remember_apps(self.cluster, traces, scope)

    def replace_inventory(
        self,
        pairs: Pairs,
        steps: Iterable[tuple[Action, Outcome]],
        scope: Collection[str] | None,
    ) -> None:
        self.store.replace_inventory(self.cluster, inventory_after(pairs, steps), scope)


def inventory_after(pairs: Pairs, steps: Iterable[tuple[Action, Outcome]]) -> list[InventoryItem]:
    """The inventory once the steps are carried out, each object with the apiVersion
    git gives it (else the one it was recorded under)."""
    versions = {p.ref: p.inventory.api_version for p in pairs.values() if p.inventory}
    versions.update({p.ref: api_version(p.desired.obj) for p in pairs.values() if p.desired})
    after = next_inventory(inventory_by_app(pairs), ((a, o.result) for a, o in steps))
    return [
        InventoryItem(app, ref, versions.get(ref, ""))
        for app, refs in sorted(after.items())
        for ref in sorted(refs)
    ]


def app_records(
    report: Report, apps: Iterable[App], healths: Mapping[str, str | None]
) -> list[AppRecord]:
    """Each app's sync status, health, drift count and first error."""
    drift_by_app = Counter(app for app, _ in report.drifts)
    errors_by_app: dict[str, str] = {}
    for error in report.errors:
        errors_by_app.setdefault(error.app, str(error))
    for o in report.outcomes:
        # Work that waits for the live view is not done: the app says why.
        if o.result is Result.FAILED or o.message.startswith(WAITING):
            errors_by_app.setdefault(o.app, f"{o.ref}: {o.message}")
    records = []
    for app in apps:
        argo = report.argocd.get(app.name)
        # Argo CD's own verdict wins where it has one (report-mode clusters).
        health = argo.health if argo and argo.health else healths.get(app.name)
        synced = not drift_by_app[app.name] and app.name not in errors_by_app
        records.append(
            AppRecord(
                report.cluster,
                app.name,
                "Synced" if synced else "OutOfSync",
                health,
                drift_by_app[app.name],
                errors_by_app.get(app.name),
            )
        )
    return records


def api_version(obj: Mapping[str, Any]) -> str:
    return str(obj.get("apiVersion", ""))
