"""`reconciler check --connect`: can this host do its job, before the daemon tries?

Like `flux check --pre`: each repository's tracked ref resolves to a commit,
each cluster answers, with its version and the identity pinned for it, and
each cluster's credentials allow what its mode needs and no more. A
report-mode cluster whose identity may write is the loudest finding: the
client refuses every write anyway (invariant 2), but read-only credentials
are the second line and must not be missing. Nothing is written, to the
clusters or to the state (the pinned identities are only read).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.cluster import ClusterClient, ClusterError
from reconciler.config import ClusterConfig, Config
from reconciler.desired import open_sources
from reconciler.model import Mode
from reconciler.notify.matrix import MatrixError
from reconciler.notify.token import TokenError
from reconciler.notify.token import client as token_client
from reconciler.session import open_store
from reconciler.store import StoreError

# What apply and prune send, on every kind: reads and watches for the live cache,
# server-side apply (PATCH, which creates), delete for prune.
APPLY_VERBS = ("get", "list", "watch", "create", "patch", "delete")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection", "*"})
# A homeserver that has not answered by then is not going to: say so and go on.
CONNECT_TIMEOUT_S = 10.0
# Review kinds every authenticated user may create: questions answered, never stored.
_QUESTIONS = {
    "authorization.k8s.io": {
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
    },
    "authentication.k8s.io": {"selfsubjectreviews"},
}


@dataclass
class Findings:
    """Lines for stdout (what is fine) and stderr (what is not)."""

    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_connect(config: Config) -> int:
    """Print the findings; 0 when every repo and cluster is as it must be, else 1.
    Each cluster's mode in `config` is the effective one (reconciler.session.settled)."""
    found = Findings()
    _repos(config, found)
    pinned = _pinned(config)
    for cluster in config.clusters:
        report_only = cluster.mode == "report"
        _cluster(cluster, report_only, pinned.get(cluster.name), found)
    _matrix(config, found)
    for line in found.ok:
        print(line)
    for line in found.problems:
        print(line, file=sys.stderr)
    return 1 if found.problems else 0


def _repos(config: Config, found: Findings) -> None:
    sources = open_sources(config)
    for repo in config.repos:
        tree = sources.trees.get(repo.name)
        if tree is None:
            found.problems.append(f"repo {repo.name}: {sources.problems.get(repo.name)}")
        else:
            found.ok.append(f"repo {repo.name}: {repo.ref} at {tree.commit[:12]}")


def _pinned(config: Config) -> dict[str, str]:
    """The identities pinned in the state, if there is one yet."""
    try:
        store = open_store(config, readonly=True)
    except StoreError:
        return {}
    try:
        pins = {c.name: store.pinned_identity(c.name) for c in config.clusters}
        return {name: uid for name, uid in pins.items() if uid is not None}
    finally:
        store.close()


def _cluster(
    cluster: ClusterConfig, report_only: bool, pinned: str | None, found: Findings
) -> None:
    mode: Mode = "report" if report_only else "apply"
    name = f"cluster {cluster.name} ({mode})"
    try:
        client = ClusterClient(cluster.name, cluster.kubeconfig, context=cluster.context, mode=mode)
    except ClusterError as exc:
        found.problems.append(f"{name}: {exc}")
        return
    try:
        version = client.version()
        identity = client.identity()
        namespaces = _namespaces(client) if report_only else ["default"]
        reviews = {ns: client.rules_review(ns) for ns in namespaces}
    except ClusterError as exc:
        found.problems.append(f"{name}: {exc}")
        return
    finally:
        client.close()
    if pinned is None:
        seen = f"identity {identity} (not pinned yet: pinned at the first reconcile)"
    elif pinned == identity:
        seen = f"identity {identity} (pinned)"
    else:
        seen = f"identity {identity} is NOT the pinned {pinned}"
        found.problems.append(
            f"{name}: the server is not the cluster pinned for it (kube-system UID {identity}, "
            f"pinned {pinned}): a wrong kubeconfig, or a rebuilt cluster to accept with "
            f"`reconciler check --repin {cluster.name}`"
        )
    found.ok.append(f"{name}: {client.server}, kube-apiserver {version}, {seen}")
    everywhere = verbs_on_every_kind(reviews["default" if "default" in reviews else namespaces[0]])
    found.ok.append(f"  may: {', '.join(sorted(everywhere)) or 'nothing'} on every kind")
    if any(r.get("incomplete") for r in reviews.values()):
        found.ok.append("  (the server says the answer is incomplete: an authorizer cannot list)")
    if report_only:
        writes = write_grants(reviews)
        if writes:
            found.problems.append(
                f"WARNING {name}: report-only, yet its identity MAY WRITE: "
                + "; ".join(writes)
                + ". The reconciler refuses every write there, but give it read-only "
                "credentials (get, list, watch)."
            )
        return
    missing = [v for v in APPLY_VERBS if v not in everywhere and "*" not in everywhere]
    if missing:
        found.problems.append(
            f"{name}: apply and prune need {', '.join(APPLY_VERBS)} on every kind; "
            f"the identity lacks {', '.join(missing)}"
        )
    else:
        found.ok.append("  enough to apply and prune")


def _matrix(config: Config, found: Findings) -> None:
    """[notify.matrix]: the token is good (whoami) and its user has joined the room."""
    matrix = config.notify.matrix
    if matrix is None:
        return
    name = f"matrix {matrix.homeserver}"
    try:
        client = token_client(matrix, CONNECT_TIMEOUT_S)
        user = client.whoami()
        joined = client.joined(matrix.room_id)
    except (TokenError, MatrixError) as exc:
        found.problems.append(f"{name}: {exc}")
        return
    found.ok.append(f"{name}: the token is {user}'s")
    if joined:
        found.ok.append(f"  {user} has joined {matrix.room_id}")
    else:
        found.problems.append(
            f"{name}: {user} has not joined room {matrix.room_id}: invite it and accept "
            "the invitation as that user, or nothing can be posted there"
        )


def _namespaces(client: ClusterClient) -> list[str]:
    """Every namespace: a RoleBinding that grants a write may sit in any of them."""
    names = [str(ns["metadata"]["name"]) for ns in client.list("", "Namespace").items]
    return sorted(names, key=lambda n: (n != "default", n))


def verbs_on_every_kind(review: Mapping[str, Any]) -> set[str]:
    """The verbs granted on every resource of every group, from a rules review's status."""
    verbs: set[str] = set()
    for rule in _rules(review):
        if "*" in rule["apiGroups"] and "*" in rule["resources"] and not rule["resourceNames"]:
            verbs.update(rule["verbs"])
    return verbs


def write_grants(reviews: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each distinct rule that grants a write verb (review questions aside), with where."""
    grants: dict[str, list[str]] = {}
    for namespace, review in reviews.items():
        for rule in _rules(review):
            verbs = sorted(set(rule["verbs"]) & WRITE_VERBS)
            if not verbs or _question(rule["apiGroups"], rule["resources"]):
                continue
            what = f"{', '.join(verbs)} on {_kinds(rule['apiGroups'], rule['resources'])}"
            grants.setdefault(what, []).append(namespace)
    return [
        f"{what} (namespace {', '.join(spaces[:3])}{', ...' if len(spaces) > 3 else ''})"
        for what, spaces in grants.items()
    ]


def _rules(review: Mapping[str, Any]) -> Iterable[dict[str, list[str]]]:
    for rule in review.get("resourceRules") or ():
        yield {
            key: list(rule.get(key) or ())
            for key in ("verbs", "apiGroups", "resources", "resourceNames")
        }


def _question(groups: Sequence[str], resources: Sequence[str]) -> bool:
    return bool(groups) and all(set(resources) <= _QUESTIONS.get(group, set()) for group in groups)


def _kinds(groups: Sequence[str], resources: Sequence[str]) -> str:
    named = ",".join(g or "core" for g in groups)
    return f"{named}/{','.join(resources)}"
