"""Benchmark: render every app of the three homelab fixture repositories, Helm aside.

The fixture trees are committed into real git repositories in a temporary
directory, then the whole desired-state pipeline runs (resolve refs, read
the catalogue, render directories and kustomizations, assemble clusters).
"Cold" starts from an empty state_dir, as after a new commit: every
kustomization is built. "Warm" reuses state_dir (materialised checkouts and
kustomize builds of the same commit), as the daemon's reconciles of an
unchanged commit do. Target: warm under 5 s.

With --incremental, Helm charts come from a loopback chart repository (as in
tests/desired) and the figures are those of the daemon's memos: a full render,
then --commits one-line commits, each to another app, each split into what it
costs (median): resolving the refs, the catalogue (Application files parsed
again), the checkout of the new commit, and the render itself; then the same
commit without the memos (every file parsed, every app rendered).

Run: .venv/bin/python bench/bench_render.py [--runs N] [--incremental [--commits N]]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The repository builders are shared with the tests; make the repo root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pygit2

from reconciler.catalogue import CatalogueMemo, build_catalogue
from reconciler.config import Config, load_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from reconciler.render.memo import RenderMemo
from testenv.charts import HELM, serve_charts
from testenv.config import Repo, Target, write_config
from testenv.gitrepos import (
    FIXTURE_URLS,
    commit_files,
    fixture_files,
    make_upstream_and_clone,
)

# The destination URLs the homelab's Applications use (see config.toml); rendering
# never contacts a cluster, so the kubeconfigs need not exist.
SERVERS = {
    "prod": "https://kubernetes.default.svc",
    "agentic": "https://10.20.0.40:6443",
    "monit": "https://10.10.0.30:6443",
}


def _config(base: Path, tables: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    repos = []
    for name, url in FIXTURE_URLS.items():
        _, clone = make_upstream_and_clone(base, name, fixture_files(name))
        repos.append(Repo(name, clone, url, "kubernetes/argocd-apps"))
    targets = [
        Target(name, name == "prod", base / f"{name}.kubeconfig", server)
        for name, server in SERVERS.items()
    ]
    tables = {"daemon": {"state_dir": "state"}, **(tables or {})}
    return load_config(write_config(base / "config.toml", repos, targets, tables))


def _cpu_seconds() -> float:
    """CPU used by this process and its finished children (kustomize runs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclasses.dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # independent of how busy the machine is, unlike wall time
    desired: Desired


def _run(config: Config) -> Run:
    start, cpu = time.perf_counter(), _cpu_seconds()
    # Without a helm binary, chart apps fail at once: rendering them is left out.
    tools = dataclasses.replace(tools_for(config), helm=None)
    desired = build_desired(config, open_sources(config), tools)
    return Run(time.perf_counter() - start, _cpu_seconds() - cpu, desired)


def _timed(config: Config, memo: RenderMemo, catalogue_memo: CatalogueMemo) -> Run:
    start, cpu = time.perf_counter(), _cpu_seconds()
    tools = tools_for(config)
    desired = build_desired(config, open_sources(config), tools, None, memo, catalogue_memo)
    return Run(time.perf_counter() - start, _cpu_seconds() - cpu, desired)


@dataclasses.dataclass(frozen=True)
class CommitCost:
    """One commit's render, stage by stage (wall seconds), as the daemon runs it."""

    refs: float
    catalogue: float
    parsed: int  # Application files parsed again
    checkout: float
    render: float  # build_desired once the catalogue and checkout are done
    cpu: float
    desired: Desired

    @property
    def wall(self) -> float:
        return self.refs + self.catalogue + self.checkout + self.render


def _commit_cost(config: Config, memo: RenderMemo, catalogue_memo: CatalogueMemo) -> CommitCost:
    cpu = _cpu_seconds()
    start = time.perf_counter()
    sources = open_sources(config)
    refs = time.perf_counter()
    parses = catalogue_memo.parses
    build_catalogue(config, sources.trees, sources.urls, catalogue_memo)
    catalogue = time.perf_counter()
    for tree in sources.trees.values():
        tree.materialise()  # the moved repo's is written; the others' are there already
    checkout = time.perf_counter()
    # Its own catalogue now finds every file in the memo (a few milliseconds).
    desired = build_desired(config, sources, tools_for(config), None, memo, catalogue_memo)
    end = time.perf_counter()
    return CommitCost(
        refs - start,
        catalogue - refs,
        catalogue_memo.parses - parses,
        checkout - catalogue,
        end - checkout,
        _cpu_seconds() - cpu,
        desired,
    )


def _editable_apps(config: Config, desired: Desired) -> list[tuple[str, str]]:
    """(app, file) of each agentic_lab app rendered from a path of the repository: a
    manifest of it to append a comment line to."""
    repo = next(r for r in config.repos if r.name == "agentic_lab")
    found = []
    for app in sorted(desired.catalogue.apps, key=lambda a: a.name):
        source = app.sources[0]
        if app.origin.repo != "agentic_lab" or not source.path or source.chart is not None:
            continue
        manifests = sorted(
            f.relative_to(repo.path).as_posix()
            for f in (repo.path / source.path).rglob("*.yaml")
            if "kustomization" not in f.name
        )
        if manifests:
            found.append((app.name, manifests[0]))
    return found


def _one_line_commit(config: Config, path: str, n: int) -> None:
    """Append a comment line to `path` of agentic_lab and commit it."""
    repo = next(r for r in config.repos if r.name == "agentic_lab")
    clone = pygit2.Repository(str(repo.path))
    data = (repo.path / path).read_bytes() + f"# bench edit {n}\n".encode()
    commit_files(clone, "refs/remotes/origin/main", {path: data}, f"bench: edit {path}")


def incremental(commits: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp,
        serve_charts(Path(tmp) / "charts") as charts,
    ):
        mirrors = {u: charts.url for u, _, _ in charts.charts}
        tables = {"render": {"helm": str(HELM)}, "render.chart_mirrors": mirrors}
        config = _config(Path(tmp), tables)
        memo, catalogue_memo = RenderMemo(), CatalogueMemo()
        full = _timed(config, memo, catalogue_memo)
        same = _timed(config, memo, catalogue_memo)
        targets = _editable_apps(config, full.desired)
        costs = []
        for n in range(commits):
            _one_line_commit(config, targets[n % len(targets)][1], n)
            costs.append(_commit_cost(config, memo, catalogue_memo))
        _one_line_commit(config, targets[0][1], commits)
        without = _commit_cost(config, RenderMemo(), CatalogueMemo())

    def median(stage: str) -> float:
        return float(statistics.median(getattr(c, stage) for c in costs))

    edited = ", ".join(sorted({t[0] for t in targets[:commits]}))
    rows = [
        ("apps in catalogue", f"{len(full.desired.catalogue.apps)}"),
        ("apps failed", f"{len(full.desired.errors)}"),
        ("full render, wall (s)", f"{full.wall:.2f}"),
        ("same commit again, wall (s)", f"{same.wall:.3f}"),
        (f"{commits} one-line commits, median wall (s)", f"{median('wall'):.3f}"),
        ("  resolve refs (s)", f"{median('refs'):.3f}"),
        ("  catalogue (s)", f"{median('catalogue'):.3f}"),
        ("  Application files parsed", f"{median('parsed'):.0f}"),
        ("  checkout of the new commit (s)", f"{median('checkout'):.3f}"),
        ("  render and assemble (s)", f"{median('render'):.3f}"),
        ("  apps rendered / reused", f"{costs[-1].desired.rendered} / {costs[-1].desired.reused}"),
        ("  CPU (s)", f"{median('cpu'):.3f}"),
        ("  worst wall (s)", f"{max(c.wall for c in costs):.3f}"),
        ("the same without the memos, wall (s)", f"{without.wall:.2f}"),
        ("  catalogue (s) / files parsed", f"{without.catalogue:.3f} / {without.parsed}"),
        ("  apps rendered / reused", f"{without.desired.rendered} / {without.desired.reused}"),
        ("  CPU (s)", f"{without.cpu:.2f}"),
        ("CPUs / load average (1 min)", f"{os.cpu_count()} / {os.getloadavg()[0]:.1f}"),
    ]
    print(f"apps edited: {edited}")
    _print(rows)


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm runs (default: 5)")
    parser.add_argument(
        "--incremental", action="store_true", help="a commit's re-render, with charts"
    )
    parser.add_argument(
        "--commits", type=int, default=5, help="one-line commits with --incremental (default: 5)"
    )
    args = parser.parse_args()
    if args.incremental:
        incremental(max(1, args.commits))
        return
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        config = _config(Path(tmp))
        cold = _run(config)
        warm = [_run(config) for _ in range(args.runs)]

    desired = cold.desired
    apps = desired.catalogue.apps
    helm = sum(1 for a in apps if any(s.chart for s in a.sources))
    other_errors = [e for e in desired.errors if "helm not found" not in e.message]
    objects = sum(len(c.manifests) for c in desired.clusters.values())
    rows = [
        ("apps in catalogue", f"{len(apps)}"),
        ("helm apps (left out)", f"{helm}"),
        ("apps rendered", f"{sum(len(c.apps) for c in desired.clusters.values())}"),
        ("apps failed (not helm)", f"{len(other_errors)}"),
        ("objects", f"{objects}"),
        ("cold run, wall (s)", f"{cold.wall:.2f}"),
        (
            f"warm runs, median wall of {len(warm)} (s)",
            f"{statistics.median(r.wall for r in warm):.2f}",
        ),
        ("warm runs, best wall (s)", f"{min(r.wall for r in warm):.2f}"),
        ("warm runs, median CPU (s)", f"{statistics.median(r.cpu for r in warm):.2f}"),
        ("CPUs / load average (1 min)", f"{os.cpu_count()} / {os.getloadavg()[0]:.1f}"),
    ]
    _print(rows)


if __name__ == "__main__":
    main()
