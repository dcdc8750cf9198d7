"""What every command that reaches the clusters needs, built once from the config.

The CLI's one-shot commands (diff, sync) and the daemon share it, so both see
the same policies, state store and per-cluster engines, and a cluster that
cannot even be set up (unreadable kubeconfig) is an error of that cluster only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from reconciler.config import Config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.engine import ClusterEngine
from reconciler.errors import ReconcilerError
from reconciler.model import App, ObjectRef
from reconciler.policy import SHIPPED_POLICIES, Policies, load_policies
from reconciler.store import Store

STATE_DB = "state.db"


def policies_for(config: Config) -> Policies:
    """The configured policies (or the shipped ones); raises PolicyError naming file and key."""
    return load_policies(config.daemon.policies or SHIPPED_POLICIES, config.clusters)


def open_store(config: Config, *, readonly: bool = False) -> Store:
    return Store(config.state_dir / STATE_DB, readonly=readonly)


@dataclass
class Session:
    config: Config
    store: Store
    policies: Policies
    engines: dict[str, ClusterEngine] = field(default_factory=dict)
    # Clusters that could not be set up, with why; the others carry on.
    broken: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.store.close()

    def render(self, clusters: Collection[str] | None = None, *, fetch: bool = False) -> Desired:
        """Render the committed desired state of `clusters` (all when None)."""
        sources = open_sources(self.config, fetch=fetch)
        for name, problem in sources.problems.items():
            self.store.record_repo(name, None, problem)
        for name, tree in sources.trees.items():
            self.store.record_repo(name, tree.commit, None)
        return build_desired(self.config, sources, tools_for(self.config), clusters)


def open_session(
    config: Config,
    clusters: Collection[str] | None = None,
    *,
    on_change: Callable[[str, ObjectRef, str], None] | None = None,
) -> Session:
    """Policies, store and an engine per selected cluster (all when None)."""
    session = Session(config, open_store(config), policies_for(config))
    for cluster in config.clusters:
        if clusters is not None and cluster.name not in clusters:
            continue
        notify = functools.partial(on_change, cluster.name) if on_change else None
        try:
            session.engines[cluster.name] = ClusterEngine(
                cluster, session.store, session.policies, on_change=notify
            )
        except ReconcilerError as exc:
            session.broken[cluster.name] = str(exc)
    return session


def apps_by_cluster(desired: Desired) -> Mapping[str, list[App]]:
    grouped: dict[str, list[App]] = {}
    for app in desired.catalogue.apps:
        grouped.setdefault(app.cluster, []).append(app)
    return grouped
