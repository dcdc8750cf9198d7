"""Pure parts of what helm is given: the API versions a cluster's discovery documents
become (`--api-versions`), and which [render] chart_credentials entry a chart URL uses."""

from __future__ import annotations

from pathlib import Path

from reconciler.cluster.discovery import api_versions
from reconciler.config import ChartCredential
from reconciler.render.charts import credential_for
from reconciler.render.tools import Tools


def _group(name: str, versions: dict[str, list[str]]) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "versions": [
            {
                "version": version,
                "resources": [
                    {"resource": kind.lower() + "s", "responseKind": {"kind": kind}}
                    for kind in kinds
                ]
                + [{"resource": "things/status", "responseKind": {}}],  # not a kind
            }
            for version, kinds in versions.items()
        ],
    }


def test_api_versions_list_every_served_group_version_and_its_kinds() -> None:
    core = {"kind": "APIGroupDiscoveryList", "items": [_group("", {"v1": ["ConfigMap"]})]}
    groups = {
        "kind": "APIGroupDiscoveryList",
        "items": [
            _group("apps", {"v1": ["Deployment"]}),
            _group("example.com", {"v2": ["Widget"], "v1": ["Widget"]}),  # both served
        ],
    }
    assert api_versions([core, groups]) == (
        "apps/v1",
        "apps/v1/Deployment",
        "example.com/v1",
        "example.com/v1/Widget",
        "example.com/v2",
        "example.com/v2/Widget",
        "v1",
        "v1/ConfigMap",
    )


def test_the_longest_matching_credential_url_wins_on_whole_path_segments() -> None:
    def entry(url: str) -> ChartCredential:
        return ChartCredential(url, "u", Path(f"/{len(url)}"))

    host = entry("oci://registry.lan")
    team = entry("oci://registry.lan/team/")
    http = entry("https://charts.lan/private")
    tools = Tools(None, None, 1, 1, Path("/x"), chart_credentials=(host, team, http))
    assert credential_for("oci://registry.lan/team/charts", tools) == team
    assert credential_for("registry.lan/team", tools) == team  # Argo CD's scheme-less form
    assert credential_for("oci://registry.lan/teams", tools) == host  # not a segment of /team
    assert credential_for("https://charts.lan/private/", tools) == http
    assert credential_for("https://charts.lan/privateer", tools) is None
    assert credential_for("http://charts.lan/private", tools) is None  # another scheme
