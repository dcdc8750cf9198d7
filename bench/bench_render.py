"""Benchmark: render every app of the three homelab fixture repositories, Helm aside.

The fixture trees are committed into real git repositories in a temporary
directory, then the whole desired-state pipeline runs (resolve refs, read
the catalogue, render directories and kustomizations, assemble clusters).
"Cold" starts from an empty state_dir, as after a new commit: every
kustomization is built. "Warm" reuses state_dir (materialised checkouts and
kustomize builds of the same commit), as the daemon's reconciles of an
unchanged commit do. Target: warm under 5 s.

Run: .venv/bin/python bench/bench_render.py [--runs N]
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
from pathlib import Path

# The repository builders are shared with the tests; make the repo root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.config import Config, load_config
from reconciler.desired import Desired, build_desired, open_sources, tools_for
from testenv.config import Repo, Target, write_config
from testenv.gitrepos import (
    FIXTURE_URLS,
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


def _config(base: Path) -> Config:
    repos = []
    for name, url in FIXTURE_URLS.items():
        _, clone = make_upstream_and_clone(base, name, fixture_files(name))
        repos.append(Repo(name, clone, url, "kubernetes/argocd-apps"))
    targets = [
        Target(name, name == "prod", base / f"{name}.kubeconfig", server)
        for name, server in SERVERS.items()
    ]
    file = write_config(base / "config.toml", repos, targets, {"daemon": {"state_dir": "state"}})
    return load_config(file)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm runs (default: 5)")
    args = parser.parse_args()
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
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value:>8}")


if __name__ == "__main__":
    main()
