"""A cluster's effective mode is worked out once, from config and policies: a policy
can make a cluster report-only, never turn a report-only one to apply."""

from __future__ import annotations

from pathlib import Path

from reconciler.config import ClusterConfig, Config, RenderConfig, with_policy_modes
from reconciler.policy import load_policies
from tests.unit.policy_helpers import CLUSTERS, write_policies

FROZEN_MONIT = """apiVersion: reconciler.kernow.io/v1alpha1
kind: ClusterMode
metadata: {name: monit-frozen}
spec:
  reportOnly: cluster.name == 'monit'
"""


def _config() -> Config:
    return Config(
        file=Path("/etc/reconciler/config.toml"),
        state_dir=Path("/var/lib/reconciler"),
        render=RenderConfig(),
        repos=(),
        clusters=CLUSTERS,
        apps=(),
    )


def _modes(config: Config) -> dict[str, str]:
    return {c.name: c.mode for c in config.clusters}


def test_a_mode_policy_makes_a_cluster_report_only_in_the_config(tmp_path: Path) -> None:
    policies = load_policies(write_policies(tmp_path, {"frozen.yaml": FROZEN_MONIT}), CLUSTERS)
    settled = with_policy_modes(_config(), policies.forced_report_mode)
    assert _modes(settled) == {"prod": "report", "agentic": "apply", "monit": "report"}


def test_a_report_only_cluster_stays_so_whatever_the_policies_say() -> None:
    def never(_: ClusterConfig) -> bool:
        return False

    assert _modes(with_policy_modes(_config(), never)) == {
        "prod": "report",
        "agentic": "apply",
        "monit": "apply",
    }
