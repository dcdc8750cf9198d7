"""What every command that reaches the clusters needs, built once from the config.

The CLI's one-shot commands (diff, sync) and the daemon share it, so both see
the same policies, state store and per-cluster engines, and a cluster that
cannot even be set up (unreadable kubeconfig) is an error of that cluster only.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.catalogue import Catalogue, CatalogueMemo
from reconciler.config import Config, with_policy_modes
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.engine import ClusterEngine
from reconciler.errors import ReconcilerError
from reconciler.model import App, Capabilities, ObjectRef
from reconciler.policy import SHIPPED_POLICIES, Policies, load_policies
from reconciler.render.memo import RenderMemo
from reconciler.store import Store, StoreError
from reconciler.waves import Bounds

STATE_DB = "state.db"


def policies_for(config: Config) -> Policies:
    """The configured policies (or the shipped ones); raises PolicyError naming file and key."""
    return load_policies(config.daemon.policies or SHIPPED_POLICIES, config.clusters)


def settled(config: Config) -> tuple[Config, Policies]:
    """The config with each cluster's effective mode, and the policies that decided it:
    the one place a cluster's mode is worked out."""
    policies = policies_for(config)
    return with_policy_modes(config, policies.forced_report_mode), policies


def open_store(config: Config, *, readonly: bool = False) -> Store:
    return Store(config.state_dir / STATE_DB, readonly=readonly)


def _reading_store(config: Config) -> tuple[Store, Path | None]:
    """The state read-only, or, before the daemon ever ran, an empty state in a
    temporary directory (returned to be removed): a reader never creates state_dir."""
    try:
        return open_store(config, readonly=True), None
    except StoreError:
        if (config.state_dir / STATE_DB).exists():
            raise
    scratch = Path(tempfile.mkdtemp(prefix="reconciler-diff-"))
    return Store(scratch / STATE_DB), scratch


@dataclass
class Session:
    config: Config
    store: Store
    policies: Policies
    engines: dict[str, ClusterEngine] = field(default_factory=dict)
    # Clusters that could not be set up, with why; the others carry on.
    broken: dict[str, str] = field(default_factory=dict)
    scratch: Path | None = None  # the empty state of a reader that found none
    # Each app's last render, reused by the next render while its inputs stay the same.
    memo: RenderMemo = field(default_factory=RenderMemo)
    # Each Application file's reading, reused while the file is unchanged.
    catalogue_memo: CatalogueMemo = field(default_factory=CatalogueMemo)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.store.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def render(self, clusters: Collection[str] | None = None, *, fetch: bool = False) -> Desired:
        """Render the committed desired state of `clusters` (all when None); it carries
        the commit read of each repo, which `record_repos` puts on record."""
        sources = open_sources(self.config, fetch=fetch)
        tools = replace(tools_for(self.config), capabilities=self.capabilities())
        return build_desired(self.config, sources, tools, clusters, self.memo, self.catalogue_memo)

    def capabilities(self) -> dict[str, Capabilities]:
        """Each reachable cluster's capabilities, for charts that read `.Capabilities`."""
        found = {name: engine.client.capabilities() for name, engine in self.engines.items()}
        return {name: c for name, c in found.items() if c is not None}

    def departed(self, catalogue: Catalogue) -> dict[str, str]:
        """Apps removed from git whose objects an apply-mode cluster of the session still
        holds in its inventory (app -> cluster): `sync --app A --prune` may confirm
        their held prunes."""
        present = {app.name for app in catalogue.apps}
        return {
            item.app: name
            for name, engine in self.engines.items()
            if not engine.report_only
            for item in self.store.inventory(name)
            if item.app not in present
        }

    def record_repos(self, desired: Desired) -> None:
        """Record each repo's commit, or why it could not be read (beside its last good
        commit), for `status`; a read-only session records nothing."""
        if self.store.readonly:
            return
        for name, problem in desired.unreadable.items():
            self.store.record_repo(name, None, problem)
        for name, commit in desired.commits.items():
            self.store.record_repo(name, commit, None)


def open_session(
    config: Config,
    clusters: Collection[str] | None = None,
    *,
    on_change: Callable[[str, ObjectRef, str, str], None] | None = None,
    readonly: bool = False,
) -> Session:
    """Policies, store and an engine per selected cluster (all when None). A `readonly`
    session (diff) writes nothing to the state, so it may run beside the daemon; the
    others are writers and must hold the state lock (reconciler.statedir)."""
    store, scratch = _reading_store(config) if readonly else (open_store(config), None)
    config, policies = settled(config)
    session = Session(config, store, policies, scratch=scratch)
    for cluster in config.clusters:
        if clusters is not None and cluster.name not in clusters:
            continue
        notify = functools.partial(on_change, cluster.name) if on_change else None
        try:
            session.engines[cluster.name] = ClusterEngine(
                cluster,
                session.store,
                session.policies,
                on_change=notify,
                max_prune_share=config.daemon.max_prune_share,
                prune_floor=config.daemon.prune_floor,
                bounds=Bounds(config.daemon.wave_timeout_s, config.daemon.hook_timeout_s),
                dry_run_concurrency=config.daemon.dry_run_concurrency,
            )
        except ReconcilerError as exc:
            session.broken[cluster.name] = str(exc)
    return session


def apps_by_cluster(desired: Desired) -> Mapping[str, list[App]]:
    grouped: dict[str, list[App]] = {}
    for app in desired.catalogue.apps:
        grouped.setdefault(app.cluster, []).append(app)
    return grouped
