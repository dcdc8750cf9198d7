"""syncpolicy.problems: every Argo CD syncPolicy field and sync option is either
honoured or refused with the key that says it, never silently ignored."""

from __future__ import annotations

import pytest
import yaml

from reconciler.model import parse_options
from reconciler.syncpolicy import problems
from testenv.gitrepos import FIXTURES

ACCEPTED = [
    "CreateNamespace=true",
    "CreateNamespace=false",
    "ServerSideApply=true",
    "ApplyOutOfSyncOnly=true",
    "ApplyOutOfSyncOnly=false",
    "PruneLast=true",
    "Replace=false",
    "RespectIgnoreDifferences=true",
    "SkipDryRunOnMissingResource=true",
    "PrunePropagationPolicy=foreground",
    "PrunePropagationPolicy=background",
    "PrunePropagationPolicy=orphan",
    "FailOnSharedResource=true",
    "Validate=true",
    "ClientSideApplyMigration=true",
    " ServerSideApply = true ",
]
REFUSED = {
    "Replace=true": "replace/create is not supported",
    "ServerSideApply=false": "always applies server-side",
    "Validate=false": "always validates",
    "ClientSideApplyMigration=false": "always taken over",
    "PrunePropagationPolicy=sometimes": "takes foreground or background or orphan",
    "CreateNamespace": "CreateNamespace takes true or false",
    "Prune=false": "set it on the objects, as the annotation argocd.argoproj.io/sync-options",
    "Delete=confirm": "set it on the objects",
    "Force=true": "not supported",
    "SkipHooks=true": "not an Argo CD sync option",
}


@pytest.mark.parametrize("option", ACCEPTED)
def test_a_supported_sync_option_is_accepted(option: str) -> None:
    assert problems({"automated": {"prune": True}, "syncOptions": [option]}) == []


@pytest.mark.parametrize(("option", "why"), sorted(REFUSED.items()))
def test_an_unsupported_sync_option_is_refused_naming_its_key(option: str, why: str) -> None:
    (problem,) = problems({"syncOptions": ["CreateNamespace=true", option]})
    assert problem.startswith(f"spec.syncPolicy.syncOptions[1] {option!r}: ")
    assert why in problem


def test_sync_policy_fields_are_checked() -> None:
    assert problems({"automated": {"prune": True, "selfHeal": False, "allowEmpty": True}}) == []
    assert problems({"automated": {}, "retry": {"limit": 5}}) == []
    assert problems({"automated": {"prune": "yes", "selfish": True}, "unknown": 1}) == [
        "spec.syncPolicy.unknown is not supported",
        "spec.syncPolicy.automated.prune must be true or false",
        "spec.syncPolicy.automated.selfish is not supported",
    ]
    assert problems({"automated": "on"}) == ["spec.syncPolicy.automated must be a mapping"]
    (problem,) = problems({"managedNamespaceMetadata": {"labels": {"a": "b"}}})
    assert problem.startswith("spec.syncPolicy.managedNamespaceMetadata is not supported")


def test_options_parse_by_name() -> None:
    assert parse_options(["Prune=false", " Delete = confirm ", "Odd"]) == {
        "Prune": "false",
        "Delete": "confirm",
        "Odd": "",
    }


def test_the_owner_applications_on_apply_clusters_use_only_supported_options() -> None:
    """agentic and monit are synced by the reconciler: each of their Applications must
    be honoured as written (prod's are Argo CD's business, see the catalogue)."""
    checked = 0
    for repo in ("agentic_lab", "monit_homelab"):
        for path in sorted((FIXTURES / repo / "kubernetes" / "argocd-apps").rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Application":
                    policy = (doc.get("spec") or {}).get("syncPolicy") or {}
                    assert problems(policy) == [], f"{path}: {problems(policy)}"
                    checked += 1
    assert checked > 50
