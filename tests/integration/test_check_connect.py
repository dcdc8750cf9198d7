"""`reconciler check --connect` against the real clusters, like `flux check --pre`.

It reads each repo's tracked commit, reaches each cluster (version, identity
against the pinned one), and lists what each identity may do through a
SelfSubjectRulesReview: prod's must not write (a RoleBinding that lets it is
reported loudly, exit 1), agentic's and monit's must be able to apply and
prune. It writes nothing: prod sees only reads and the review questions.
"""

from __future__ import annotations

import contextlib
import urllib.error
from collections.abc import Iterator

import pygit2
import pytest

from reconciler.session import STATE_DB
from reconciler.store import Store
from testenv.clusters import RECONCILER_USER, Cluster, free_port, read_audit_log, write_kubeconfig
from tests import builders
from tests.helpers_cluster import unique
from tests.helpers_lab import Lab


def _identity(cluster: Cluster) -> str:
    return str(cluster.request("GET", "/api/v1/namespaces/kube-system")["metadata"]["uid"])


def _prod_requests(lab: Lab) -> list[tuple[str, str | None]]:
    prod = lab.clusters["prod"]
    return [
        (e.verb, e.resource) for e in read_audit_log(prod.audit_log) if e.user == RECONCILER_USER
    ]


def test_check_connect_shows_commits_versions_identities_and_what_each_identity_may_do(
    lab: Lab,
) -> None:
    prod_before = len(_prod_requests(lab))
    done = lab.run("check", "--connect")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    commit = str(pygit2.Repository(str(lab.clone)).references["refs/remotes/origin/main"].target)
    assert f"repo lab: refs/remotes/origin/main at {commit[:12]}" in out
    for name, cluster in (("prod", "report"), ("agentic", "apply"), ("monit", "apply")):
        c = lab.clusters[name]
        assert (
            f"cluster {name} ({cluster}): {c.server}, kube-apiserver {c.version()}, "
            f"identity {_identity(c)} (not pinned yet" in out
        )
    lines = out.splitlines()
    prod_at = next(i for i, line in enumerate(lines) if line.startswith("cluster prod"))
    assert lines[prod_at + 1] == "  may: get, list, watch on every kind"
    agentic_at = next(i for i, line in enumerate(lines) if line.startswith("cluster agentic"))
    assert lines[agentic_at + 1] == "  may: * on every kind"
    assert lines[agentic_at + 2] == "  enough to apply and prune"
    # Only reads reached prod, and the questions, which the server does not store.
    sent = _prod_requests(lab)[prod_before:]
    assert sent, "prod was reached"
    assert {v for v, r in sent if r != "selfsubjectrulesreviews"} <= {"get", "list"}
    assert {v for v, r in sent if r == "selfsubjectrulesreviews"} == {"create"}
    assert not (lab.config.parent / "state" / STATE_DB).exists(), "no state was written"


def test_check_connect_fails_on_an_identity_that_is_not_the_pinned_one(lab: Lab) -> None:
    store = Store(lab.config.parent / "state" / STATE_DB)
    store.pin_identity("agentic", _identity(lab.clusters["agentic"]))
    store.pin_identity("monit", "00000000-0000-0000-0000-000000000000")
    store.close()
    done = lab.run("check", "--connect")
    assert done.returncode == 1
    assert f"identity {_identity(lab.clusters['agentic'])} (pinned)" in done.stdout
    assert "cluster monit (apply): the server is not the cluster pinned for it" in done.stderr
    assert "reconciler check --repin monit" in done.stderr


def test_check_connect_fails_on_a_cluster_it_cannot_reach_and_checks_the_others(
    lab: Lab,
) -> None:
    monit = lab.clusters["monit"]
    dead = lab.config.parent / "dead.kubeconfig"
    write_kubeconfig(
        dead, "monit", f"https://127.0.0.1:{free_port()}", monit.ca.cert_file, "no-token"
    )
    lab.config.write_text(
        lab.config.read_text().replace(str(monit.reconciler_kubeconfig), str(dead))
    )
    done = lab.run("check", "--connect")
    assert done.returncode == 1
    assert "cluster monit (apply): " in done.stderr and "cannot connect" in done.stderr
    assert "cluster agentic (apply): " in done.stdout
    assert "Traceback" not in done.stderr


@pytest.fixture
def prod_write_grant(lab: Lab) -> Iterator[str]:
    """A RoleBinding, made by an admin on prod, that lets the reconciler identity write
    ConfigMaps in one namespace (not `default`: every namespace is reviewed)."""
    prod = lab.clusters["prod"]
    namespace = unique("grant")
    prod.request("POST", "/api/v1/namespaces", builders.namespace(namespace))
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    prod.request(
        "POST",
        f"{rbac}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "oops"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}],
        },
    )
    prod.request(
        "POST",
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "oops"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "oops"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": RECONCILER_USER}
            ],
        },
    )
    try:
        yield namespace
    finally:
        with contextlib.suppress(urllib.error.HTTPError):
            prod.request("DELETE", f"{rbac}/rolebindings/oops")
        with contextlib.suppress(urllib.error.HTTPError):
            prod.request("DELETE", f"/api/v1/namespaces/{namespace}")


def test_a_prod_identity_that_may_write_is_a_loud_warning_until_the_grant_is_gone(
    lab: Lab, prod_write_grant: str
) -> None:
    done = lab.run("check", "--connect")
    assert done.returncode == 1, done.stdout
    warning = next(line for line in done.stderr.splitlines() if line.startswith("WARNING"))
    assert warning.startswith(
        "WARNING cluster prod (report): report-only, yet its identity MAY WRITE"
    )
    assert f"* on core/configmaps (namespace {prod_write_grant})" in warning
    assert "read-only credentials" in warning
    prod = lab.clusters["prod"]
    prod.request(
        "DELETE",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{prod_write_grant}/rolebindings/oops",
    )
    again = lab.run("check", "--connect")
    assert again.returncode == 0, again.stderr
    assert "WARNING" not in again.stderr
