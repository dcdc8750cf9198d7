"""Stand-in Helm charts for the homelab fixture repos, served on loopback.

The fixture Applications pull charts from the internet, which tests, bench and
demo cannot reach. For every chart+version they name, this packages a tiny
chart with the real helm: one ConfigMap that echoes the release and its values,
plus (in `crds/`, as the real charts ship them) a minimal CRD for every custom
kind the fixture repos' other apps use that the real chart would install, so
that those apps can apply. The charts are served by a Helm repository over HTTP
on loopback and, when a registry is given, pushed to the real OCI registry too;
`[render] chart_mirrors` sends each fixture repoURL to one of them.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testenv.gitrepos import FIXTURE_URLS, FIXTURES, REPO_ROOT
from testenv.registry import Registry

HELM = REPO_ROOT / "testenv" / "bin" / "helm"
CHART_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
data:
  chart: "{{ .Chart.Name }}-{{ .Chart.Version }}"
  namespace: {{ .Release.Namespace | quote }}
  values: {{ .Values | toJson | quote }}
"""
OCI_REPOSITORY = "charts"


@dataclass(frozen=True)
class CustomKind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True


# The custom kinds each real chart installs that the fixture repos' other apps use.
CHART_CRDS: Mapping[str, tuple[CustomKind, ...]] = {
    "cert-manager": (
        CustomKind("cert-manager.io", "v1", "Certificate", "certificates"),
        CustomKind("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers", namespaced=False),
    ),
    "cilium": (
        CustomKind(
            "cilium.io", "v2alpha1", "CiliumLoadBalancerIPPool", "ciliumloadbalancerippools", False
        ),
        CustomKind(
            "cilium.io",
            "v2alpha1",
            "CiliumL2AnnouncementPolicy",
            "ciliuml2announcementpolicies",
            namespaced=False,
        ),
    ),
    "coroot-operator": (CustomKind("coroot.com", "v1", "Coroot", "coroots"),),
    "kube-prometheus-stack": (
        CustomKind("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
    ),
    "mayastor": (CustomKind("openebs.io", "v1beta3", "DiskPool", "diskpools"),),
    "sealed-secrets": (CustomKind("bitnami.com", "v1alpha1", "SealedSecret", "sealedsecrets"),),
    "secrets-operator": (
        CustomKind("secrets.infisical.com", "v1alpha1", "InfisicalSecret", "infisicalsecrets"),
    ),
    "traefik": (CustomKind("traefik.io", "v1alpha1", "IngressRoute", "ingressroutes"),),
    "velero": (CustomKind("velero.io", "v1", "Schedule", "schedules"),),
}


@dataclass(frozen=True)
class ChartRepo:
    """Where the stand-in charts are served: `url` (an HTTP Helm repository) and, with
    a registry, `oci` (oci://host/charts); `charts` are (repoURL as the Applications
    name it, chart, version)."""

    url: str
    charts: frozenset[tuple[str, str, str]]
    oci: str | None = None

    def mirrors(self) -> dict[str, str]:
        """`[render] chart_mirrors` for every fixture chart repository: with a registry,
        every second repoURL (sorted) goes to it and the rest to the HTTP repository,
        so both kinds of source are in use; without one, all go to HTTP."""
        urls = sorted({u for u, _, _ in self.charts})
        return {u: self.oci if self.oci and i % 2 else self.url for i, u in enumerate(urls)}


def fixture_applications() -> list[dict[str, Any]]:
    """Every Application document in the fixture repos, read directly from the files."""
    apps = []
    for name in FIXTURE_URLS:
        for path in sorted((FIXTURES / name / "kubernetes" / "argocd-apps").rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Application":
                    apps.append(doc)
    return apps


def chart_sources(app: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = app["spec"]
    return [s for s in spec.get("sources") or [spec["source"]] if "chart" in s]


def wanted_charts() -> frozenset[tuple[str, str, str]]:
    """(repoURL, chart, version) of every chart source of the fixture Applications."""
    return frozenset(
        (s["repoURL"], s["chart"], str(s["targetRevision"]))
        for app in fixture_applications()
        for s in chart_sources(app)
    )


def crd(kind: CustomKind) -> dict[str, Any]:
    """A minimal valid CRD serving `kind`, accepting any content."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{kind.group}"},
        "spec": {
            "group": kind.group,
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "names": {
                "kind": kind.kind,
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "listKind": f"{kind.kind}List",
            },
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def package_chart(
    helm: str | Path,
    work: Path,
    chart: str,
    version: str,
    destination: Path,
    kinds: tuple[CustomKind, ...] = (),
) -> Path:
    """A tiny chart (one ConfigMap of CHART_TEMPLATE, a CRD per kind in `kinds`),
    packaged into `destination` by the real helm; its .tgz."""
    source = work / f"{chart}-{version}" / chart
    (source / "templates").mkdir(parents=True)
    (source / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": chart, "version": version})
    )
    (source / "values.yaml").write_text("fromChartDefaults: true\n")
    (source / "templates" / "configmap.yaml").write_text(CHART_TEMPLATE)
    if kinds:
        (source / "crds").mkdir()
        for kind in kinds:
            (source / "crds" / f"{kind.plural}.yaml").write_text(yaml.safe_dump(crd(kind)))
    subprocess.run(
        [str(helm), "package", str(source), "--destination", str(destination)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return destination / f"{chart}-{version}.tgz"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: stderr belongs to the command under test."""


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """`directory` served over HTTP on loopback from a thread; its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_charts(work: Path, registry: Registry | None = None) -> Iterator[ChartRepo]:
    """The stand-in chart of every chart+version the fixture Applications ask for,
    packaged under `work`, served from a loopback Helm repository and, with
    `registry` (started), pushed to it as oci://<registry>/charts/<chart>."""
    if not HELM.is_file():
        raise FileNotFoundError(f"{HELM} is missing: build the test environment (make testenv)")
    served = work / "served"
    served.mkdir(parents=True)
    wanted = wanted_charts()
    for chart, version in sorted({(c, v) for _, c, v in wanted}):
        package = package_chart(
            HELM, work / "src", chart, version, served, CHART_CRDS.get(chart, ())
        )
        if registry is not None:
            registry.push_chart(HELM, package, OCI_REPOSITORY)
    with serve_directory(served) as url:
        subprocess.run(
            [str(HELM), "repo", "index", str(served), "--url", url],
            check=True,
            capture_output=True,
            timeout=60,
        )
        oci = f"oci://{registry.host}/{OCI_REPOSITORY}" if registry is not None else None
        yield ChartRepo(url, wanted, oci)
