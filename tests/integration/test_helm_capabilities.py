"""Charts that read `.Capabilities` render against their destination cluster, as
Argo CD renders them: `--kube-version` from the real apiserver's /version and
`--api-versions` from its discovery, CRDs created by the test included."""

from __future__ import annotations

import contextlib
import urllib.error
from collections.abc import Iterator

import pytest
import yaml

from testenv.charts import CustomKind, crd
from testenv.clusters import Cluster
from tests.builders import yaml_file
from tests.desired.conftest import require_helm
from tests.helpers_cluster import unique, wait_for
from tests.helpers_lab import Lab, application, live

CAPABILITIES_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: capabilities
data:
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
  groupVersion: {{ .Capabilities.APIVersions.Has "GROUP/v1" | quote }}
  groupVersionKind: {{ .Capabilities.APIVersions.Has "GROUP/v1/Widget" | quote }}
  absent: {{ .Capabilities.APIVersions.Has "absent.example.com/v1" | quote }}
"""


@pytest.fixture
def widget_group(lab: Lab) -> Iterator[str]:
    """A CRD group served by agentic only, created for this test."""
    agentic = lab.clusters["agentic"]
    group = f"{unique('caps')}.example.com"
    kind = CustomKind(group, "v1", "Widget", "widgets")
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    agentic.request("POST", crds, crd(kind))
    wait_for(lambda: _serves(agentic, f"/apis/{group}/v1"), 30, f"{group}/v1 served")
    yield group
    with contextlib.suppress(urllib.error.HTTPError):
        agentic.request("DELETE", f"{crds}/widgets.{group}")


def _serves(cluster: Cluster, path: str) -> bool:
    try:
        cluster.request("GET", path)
    except urllib.error.HTTPError:
        return False
    return True


def test_a_chart_reads_the_destination_clusters_version_and_api_versions(
    lab: Lab, widget_group: str
) -> None:
    helm = require_helm()
    with lab.config.open("a") as config:
        config.write(f'\n[render]\nhelm = "{helm}"\n')
    namespace = lab.namespaces["agentic"]
    chart = {
        "Chart.yaml": yaml_file({"apiVersion": "v2", "name": "caps", "version": "0.1.0"}),
        "templates/configmap.yaml": CAPABILITIES_TEMPLATE.replace("GROUP", widget_group).encode(),
    }
    files: dict[str, bytes | None] = {f"charts/caps/{k}": v for k, v in chart.items()}
    files["apps/agentic-caps.yaml"] = yaml_file(
        application("caps-agentic", "agentic", "charts/caps", namespace)
    )
    lab.commit(files, "a chart that reads .Capabilities")

    done = lab.run("sync", "--cluster", "agentic")
    assert done.returncode == 0, done.stderr

    agentic = lab.clusters["agentic"]
    made = live(agentic, f"/api/v1/namespaces/{namespace}/configmaps/capabilities")["data"]
    server_version = agentic.request("GET", "/version")["gitVersion"]
    assert made["kubeVersion"] == server_version
    assert yaml.safe_load(made["groupVersion"]) is True  # the CRD created above
    assert yaml.safe_load(made["groupVersionKind"]) is True  # group/version/Kind too
    assert yaml.safe_load(made["absent"]) is False
