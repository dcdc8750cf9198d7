"""The homelab's three clusters as config gives them, and small objects to judge."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from reconciler.config import ClusterConfig
from reconciler.model import Manifest, Mode, Origin, object_ref
from reconciler.policy import SHIPPED_POLICIES, Policies, load_policies


def cluster(
    name: str, mode: Mode, server: str, network: str | None, argocd: bool = False
) -> ClusterConfig:
    return ClusterConfig(
        name=name,
        mode=mode,
        argocd=argocd,
        kubeconfig=Path(f"/etc/reconciler/{name}.kubeconfig"),
        context=name,
        servers=(server,),
        network=ipaddress.ip_network(network) if network else None,
    )


CLUSTERS = (
    cluster("prod", "report", "https://kubernetes.default.svc", "10.10.0.0/24", argocd=True),
    cluster("agentic", "apply", "https://10.20.0.40:6443", "10.20.0.0/24"),
    cluster("monit", "apply", "https://10.10.0.30:6443", "10.30.0.0/24"),
)


def shipped() -> Policies:
    return load_policies(SHIPPED_POLICIES, CLUSTERS)


def write_policies(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def obj(
    api_version: str,
    kind: str,
    name: str,
    namespace: str = "",
    spec: dict[str, Any] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **metadata}
    if namespace:
        meta["namespace"] = namespace
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    if spec is not None:
        out["spec"] = spec
    return out


def deployment(name: str, image: str = "python:3.14-slim", **metadata: Any) -> dict[str, Any]:
    pod = {"containers": [{"name": "server", "image": image}]}
    spec = {"template": {"metadata": {"labels": {"app": name}}, "spec": pod}}
    return obj("apps/v1", "Deployment", name, "ai-platform", spec, **metadata)


def manifest(o: dict[str, Any], app: str = "demo") -> Manifest:
    return Manifest(object_ref(o), o, Origin("monit_homelab", "c0ffee", app, "kubernetes/x.yaml"))
