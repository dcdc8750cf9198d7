"""Prune protection and its explicit exceptions, ignore rules for the diff, and
clusters forced into report mode: what the pipeline asks policy besides
violations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.diff import IgnoreRule, diff_object
from reconciler.model import object_ref
from reconciler.policy import SHIPPED_POLICIES, Policies, load_policies
from tests.unit.policy_helpers import CLUSTERS, obj, shipped, write_policies

HEADER = "apiVersion: reconciler.kernow.io/v1alpha1\n"


def with_shipped(tmp_path: Path, extra: str) -> Policies:
    """The shipped policies plus one more file."""
    files = {p.name: p.read_text() for p in SHIPPED_POLICIES.glob("*.yaml")}
    return load_policies(write_policies(tmp_path, {**files, "extra.yaml": extra}), CLUSTERS)


def annotated(value: str, key: str = "argocd.argoproj.io/sync-options") -> dict[str, Any]:
    return obj("v1", "ConfigMap", "settings", "apps", annotations={key: value})


# --- prune protection ---


@pytest.mark.parametrize(
    ("o", "why"),
    [
        (obj("v1", "Namespace", "apps"), "a Namespace"),
        (obj("v1", "PersistentVolumeClaim", "data", "apps"), "a PersistentVolumeClaim"),
        (
            obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "x.example.io"),
            "a CustomResourceDefinition",
        ),
        (annotated("Prune=false"), "Prune=false"),
        (annotated("ServerSideApply=true, Prune=false"), "Prune=false"),
        (annotated("Delete=false"), "Delete=false"),
        (annotated("keep", key="helm.sh/resource-policy"), "helm.sh/resource-policy: keep"),
    ],
)
def test_protected_objects_are_never_pruned_and_say_why(o: dict[str, Any], why: str) -> None:
    for cluster in ("agentic", "monit", "prod"):
        reason = shipped().prune_protected(cluster, o)
        assert reason is not None and why in reason and "(policy protect-" in reason


@pytest.mark.parametrize(
    "o",
    [
        obj("v1", "ConfigMap", "settings", "apps"),
        annotated("Prune=true"),
        annotated("ServerSideApply=true"),
        annotated("PruneLast=true"),
        obj("v1", "PersistentVolume", "pv-1"),  # a kind that merely looks alike
    ],
)
def test_other_objects_may_be_pruned(o: dict[str, Any]) -> None:
    assert shipped().prune_protected("monit", o) is None


ALLOW_OLD_NAMESPACE = (
    HEADER
    + """kind: PruneAllowance
metadata: {name: retire-old-namespace}
spec:
  matchConstraints:
    clusters: [monit]
    resourceRules:
      - groups: [""]
        kinds: [Namespace]
        names: [old]
"""
)


def test_explicit_allowance_unprotects_exactly_what_it_names(tmp_path: Path) -> None:
    policies = with_shipped(tmp_path, ALLOW_OLD_NAMESPACE)
    assert policies.prune_protected("monit", obj("v1", "Namespace", "old")) is None
    assert policies.prune_protected("agentic", obj("v1", "Namespace", "old")) is not None
    assert policies.prune_protected("monit", obj("v1", "Namespace", "apps")) is not None
    assert policies.prune_protected("monit", obj("v1", "PersistentVolumeClaim", "old", "old"))


def test_allowance_lifts_the_prune_false_annotation_too(tmp_path: Path) -> None:
    allow = (
        HEADER
        + """kind: PruneAllowance
metadata: {name: drop-settings}
spec:
  matchConstraints:
    clusters: [agentic]
    resourceRules: [{groups: [""], kinds: [ConfigMap], namespaces: [apps], names: [settings]}]
"""
    )
    policies = with_shipped(tmp_path, allow)
    assert policies.prune_protected("agentic", annotated("Prune=false")) is None
    assert policies.prune_protected("monit", annotated("Prune=false")) is not None


def test_protection_whose_condition_fails_keeps_the_object(tmp_path: Path) -> None:
    broken = (
        HEADER
        + """kind: PruneProtection
metadata: {name: keep-labelled}
spec:
  matchConditions:
    - name: labelled
      expression: object.metadata.labels['keep'] == 'yes'
  reason: labelled keep=yes
"""
    )
    policies = load_policies(write_policies(tmp_path, {"p.yaml": broken}), CLUSTERS)
    reason = policies.prune_protected("monit", obj("v1", "ConfigMap", "x", "apps"))
    assert reason is not None and "keep-labelled could not be evaluated" in reason
    assert "matchConditions labelled" in reason


# --- ignore rules ---


def test_ignore_rules_come_from_the_shared_parser_and_hide_injected_ca_bundles() -> None:
    rules = shipped().ignore_rules("agentic")
    assert rules and all(isinstance(r, IgnoreRule) for r in rules)

    def crd(ca_bundle: str) -> dict[str, Any]:
        webhook = {"clientConfig": {"caBundle": ca_bundle}}
        spec = {"group": "x.io", "conversion": {"strategy": "Webhook", "webhook": webhook}}
        return obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "x.io", spec=spec)

    # The chart ships a placeholder; cert-manager's cainjector writes the real CA live.
    desired, live = crd("Cg=="), crd("LS0tLS1CRUdJTi0tLS0t")
    ref = object_ref(desired)
    assert diff_object(ref, desired, live, ignore=rules) is None
    assert diff_object(ref, desired, live) is not None


def test_ignore_policy_applies_only_to_its_clusters(tmp_path: Path) -> None:
    policy = (
        HEADER
        + """kind: IgnoreDifferences
metadata: {name: monit-replicas}
spec:
  matchConstraints: {clusters: [monit]}
  ignoreDifferences:
    - {group: apps, kind: Deployment, jsonPointers: [/spec/replicas]}
"""
    )
    policies = load_policies(write_policies(tmp_path, {"i.yaml": policy}), CLUSTERS)
    assert [r.json_pointers for r in policies.ignore_rules("monit")] == [(("spec", "replicas"),)]
    assert policies.ignore_rules("agentic") == []


# --- cluster modes ---


def test_argocd_cluster_is_report_only_and_the_others_are_not() -> None:
    policies = shipped()
    assert [policies.forced_report_mode(c) for c in CLUSTERS] == [True, False, False]


def test_argocd_cluster_stays_report_only_without_any_mode_policy(tmp_path: Path) -> None:
    only_protection = (SHIPPED_POLICIES / "prune-protection.yaml").read_text()
    policies = load_policies(write_policies(tmp_path, {"p.yaml": only_protection}), CLUSTERS)
    assert policies.cluster_modes == []
    assert policies.forced_report_mode(CLUSTERS[0]) is True


def test_mode_policy_can_make_another_cluster_report_only(tmp_path: Path) -> None:
    policy = (
        HEADER
        + """kind: ClusterMode
metadata: {name: monit-frozen}
spec:
  reportOnly: cluster.name == 'monit'
"""
    )
    policies = with_shipped(tmp_path, policy)
    assert [policies.forced_report_mode(c) for c in CLUSTERS] == [True, False, True]
