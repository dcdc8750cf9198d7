"""Kubernetes objects as the test suites and the bench write them: one builder per kind.

The labs commit these to git, the cluster tests send them to the API server and
the bench renders thousands of them; building each kind in one place keeps "a
ConfigMap" the same object wherever a test needs one. Optional fields are left
out rather than set empty, so an object says only what its test chose.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from reconciler.config import Config, parse_config
from reconciler.model import App, AppOrigin

Obj = dict[str, Any]


def obj(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    **fields: Any,
) -> Obj:
    """Any object: its type, its metadata, and top-level `fields` (spec, data, ...)."""
    metadata: Obj = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **fields}


def namespace(name: str) -> Obj:
    return obj("v1", "Namespace", name)


def config_map(
    name: str,
    data: Mapping[str, str],
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Obj:
    return obj("v1", "ConfigMap", name, namespace, labels, data=dict(data))


def secret(name: str, data: Mapping[str, str], namespace: str | None = None) -> Obj:
    """A Secret holding `data`, base64-encoded as the API stores it."""
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return obj("v1", "Secret", name, namespace, data=encoded)


def deployment(
    name: str,
    image: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    replicas: int = 1,
) -> Obj:
    """One container named after the Deployment, its pods selected by `app: <name>`."""
    pods = {"app": name}
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": pods},
        "template": {
            "metadata": {"labels": dict(pods)},
            "spec": {"containers": [{"name": name, "image": image}]},
        },
    }
    return obj("apps/v1", "Deployment", name, namespace, labels, spec=spec)


def yaml_file(*objects: Obj) -> bytes:
    """A manifest file as committed to git: the objects as YAML documents."""
    return yaml.safe_dump_all(objects).encode()


def app(
    name: str,
    *,
    cluster: str = "agentic",
    namespace: str = "media",
    repo: str = "lab",
    **fields: Any,
) -> App:
    """An App as the catalogue makes one from `apps/<name>.yaml` of `repo` (the unit
    tests of the pure stages take apps, not Application manifests)."""
    fields.setdefault("sources", ())
    origin = AppOrigin(repo, "c0ffee", f"apps/{name}.yaml")
    return App(name=name, cluster=cluster, namespace=namespace, origin=origin, **fields)


def agentic_config(
    tmp: Path, repos: Sequence[Mapping[str, Any]], server: str, **sections: Any
) -> Config:
    """A config of `repos` and one apply-mode cluster, agentic, that Applications name
    by `server`, with its state in `tmp` (the tests that render but reach no cluster)."""
    cluster = {
        "name": "agentic",
        "mode": "apply",
        "kubeconfig": str(tmp / "kubeconfig"),
        "servers": [server],
    }
    raw = {"daemon": {"state_dir": str(tmp / "state")}, **sections}
    return parse_config({**raw, "repos": list(repos), "clusters": [cluster]}, tmp / "config.toml")


def argo_application(
    name: str, server: str, namespace: str, *sources: Mapping[str, Any], **spec: Any
) -> bytes:
    """An Argo CD Application file deploying `sources` (one is `spec.source`, more are
    `spec.sources`, as people write them) to `namespace` of the cluster at `server`."""
    body: dict[str, Any] = {"destination": {"server": server, "namespace": namespace}, **spec}
    if len(sources) == 1:
        body["source"] = dict(sources[0])
    else:
        body["sources"] = [dict(s) for s in sources]
    return yaml_file(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": body,
        }
    )
