"""Loading policies: every problem reported at once, each naming file, policy and
key, never a traceback; CEL with the Kubernetes network functions; expressions
that fail on an object are reported, not raised."""

from __future__ import annotations

from pathlib import Path

import cel
import pytest

from reconciler.errors import ConfigError
from reconciler.policy import PolicyError, load_policies
from reconciler.policy.expressions import ExpressionError, compile_expression, new_context, run
from tests.unit.policy_helpers import CLUSTERS, deployment, manifest, write_policies

HEADER = "apiVersion: reconciler.kernow.io/v1alpha1\n"


def problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policies(write_policies(tmp_path, files), CLUSTERS)
    return caught.value.problems


def test_bad_policy_names_file_policy_and_key_and_reports_every_problem(tmp_path: Path) -> None:
    bad = (
        HEADER
        + """kind: ValidatingPolicy
metadata: {name: no-latest-tags}
spec:
  matchConstraints:
    clusters: [staging]
    resourceRules: [{groups: [apps], kinds: [Deployment]}]
  validations:
    - expression: "object.spec.template.spec.containers.all(c, !c.image.endsWith(':latest')"
    - message: a message without an expression
      severity: high
"""
    )
    found = problems(tmp_path, {"tags.yaml": bad})
    where = f"{tmp_path / 'tags.yaml'}: policy no-latest-tags: "
    assert all(p.startswith(where) for p in found), found
    keys = [p.removeprefix(where).split(":")[0] for p in found]
    assert keys == [
        "spec.matchConstraints.clusters",
        "spec.validations[0].expression",
        "spec.validations[1].severity",
        "spec.validations[1].expression",
    ]
    assert "'staging'" in found[0] and "not valid CEL" in found[1]
    assert not any("Traceback" in p for p in found)


def test_policy_error_is_a_config_error_listing_every_file(tmp_path: Path) -> None:
    files = {
        "a.yaml": HEADER + "kind: Policy\nmetadata: {name: a}\nspec: {}\n",
        "b.yaml": "kind: ClusterMode\nmetadata: {name: b}\nspec: {reportOnly: 'true'}\n",
        "c.yml": "apiVersion: [unclosed\n",
    }
    with pytest.raises(ConfigError) as caught:
        load_policies(write_policies(tmp_path, files), CLUSTERS)
    found = caught.value.problems
    assert found[0].startswith(f"{tmp_path / 'a.yaml'}: policy a: kind: expected one of [")
    assert found[1].startswith(f"{tmp_path / 'b.yaml'}: policy b: apiVersion: expected ")
    assert found[2].startswith(f"{tmp_path / 'c.yml'}: malformed YAML at line 2")
    assert len(found) == 3


def test_document_without_a_name_is_named_by_its_position(tmp_path: Path) -> None:
    text = HEADER + "kind: ClusterMode\nmetadata: {name: ok}\nspec: {reportOnly: 'false'}\n"
    text += "---\n" + HEADER + "kind: ClusterMode\nspec: {reportOnly: 'false'}\n"
    [problem] = problems(tmp_path, {"m.yaml": text})
    assert problem.startswith(f"{tmp_path / 'm.yaml'}: document 2: metadata: expected a mapping")


def test_policy_names_are_unique_across_files(tmp_path: Path) -> None:
    policy = HEADER + "kind: ClusterMode\nmetadata: {name: same}\nspec: {reportOnly: 'false'}\n"
    [problem] = problems(tmp_path, {"a.yaml": policy, "b.yaml": policy})
    assert problem.startswith(f"{tmp_path / 'b.yaml'}: policy same: metadata.name: ")
    assert str(tmp_path / "a.yaml") in problem


def test_bad_ignore_entry_is_named_by_the_shared_parser(tmp_path: Path) -> None:
    policy = (
        HEADER
        + """kind: IgnoreDifferences
metadata: {name: ign}
spec:
  ignoreDifferences:
    - {kind: Deployment, jsonPointers: [/spec/replicas]}
    - {group: apps, jsonPointers: [spec]}
"""
    )
    [problem] = problems(tmp_path, {"i.yaml": policy})
    assert problem.startswith(f"{tmp_path / 'i.yaml'}: policy ign: spec: ignoreDifferences entry 2")


def test_prune_allowance_must_name_clusters_and_kinds(tmp_path: Path) -> None:
    policy = (
        HEADER
        + """kind: PruneAllowance
metadata: {name: allow-all}
spec:
  matchConstraints:
    resourceRules: [{groups: ["*"], kinds: ["*"]}]
"""
    )
    found = problems(tmp_path, {"a.yaml": policy})
    assert [p.split(": ")[2] for p in found] == [
        "spec.matchConstraints.clusters",
        "spec.matchConstraints.resourceRules[0].kinds",
    ]


def test_cluster_mode_expression_is_tried_on_every_cluster_at_load(tmp_path: Path) -> None:
    policy = HEADER + "kind: ClusterMode\nmetadata: {name: m}\nspec: {reportOnly: cluster.nme}\n"
    found = problems(tmp_path, {"m.yaml": policy})
    assert len(found) == len(CLUSTERS)
    assert found[0].startswith(f"{tmp_path / 'm.yaml'}: policy m: spec.reportOnly: fails on ")


def test_missing_or_empty_directory_is_reported(tmp_path: Path) -> None:
    assert problems(tmp_path, {}) == [f"{tmp_path}: no policy files (*.yaml)"]
    with pytest.raises(PolicyError, match="not a directory of policies"):
        load_policies(tmp_path / "absent", CLUSTERS)


# --- evaluation ---

FAILING = (
    HEADER
    + """kind: ValidatingPolicy
metadata: {name: replicas}
spec:
  matchConstraints:
    resourceRules: [{groups: [apps], kinds: [Deployment]}]
  validations:
    - expression: object.spec.replicas <= 3
      message: too many replicas
    - expression: "false"
      messageExpression: "'bad ' + object.metadata.nope"
      message: fallback message
    - expression: "'not a bool'"
"""
)


def test_expressions_failing_on_an_object_are_reported_not_raised(tmp_path: Path) -> None:
    policies = load_policies(write_policies(tmp_path, {"r.yaml": FAILING}), CLUSTERS)
    found = policies.evaluate("monit", desired=[manifest(deployment("web"))])
    assert [v.message for v in found] == [
        "could not be evaluated: validations[0]: no such key: replicas",
        "fallback message",
        "could not be evaluated: validations[2]: expected a bool, got str",
    ]
    assert {v.policy for v in found} == {"replicas"}


# --- Kubernetes CEL network library ---


def evaluate(text: str) -> object:
    return run(compile_expression(text), new_context({}, {}))


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("cidr('10.20.0.0/24').containsIP('10.20.0.90')", True),
        ("cidr('10.20.0.0/24').containsIP(ip('10.10.0.90'))", False),
        ("cidr('10.20.0.5/24').containsIP('10.20.0.200')", True),
        ("cidr('fd00::/8').containsIP('10.20.0.1')", False),
        ("isIP('10.0.0.1') && !isIP('traefik') && !isIP('10.0.0.0/8')", True),
        ("isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.1')", True),
        ("ip('2001:DB8::1')", "2001:db8::1"),
    ],
)
def test_kubernetes_ip_and_cidr_functions(text: str, result: object) -> None:
    assert evaluate(text) == result


@pytest.mark.parametrize("text", ["cidr('10.0.0.1')", "ip('::ffff:10.0.0.1')", "ip('x')"])
def test_invalid_ip_or_cidr_is_an_evaluation_error(text: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(text)


def test_cel_syntax_error_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="not valid CEL"):
        compile_expression("object.(")
    assert isinstance(compile_expression("1 + 1").program, cel.Program)
