"""Turning parsed documents into rendered objects, with the same checks for
every renderer: each object needs apiVersion, kind and metadata.name, its
metadata must have the shape Kubernetes gives it (later stages rely on it),
and one app makes at most `max_objects` objects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reconciler.documents import looks_like_manifest, parse_documents
from reconciler.errors import RenderError
from reconciler.model import Origin

_HELM_SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)
_DOC_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Rendered:
    """An object as a renderer produced it: namespace not yet defaulted."""

    obj: dict[str, Any]
    origin: Origin


def objects_from(docs: list[Any], label: str, origin: Origin) -> list[Rendered]:
    """Validated objects of one file or tool output; `kind: List` is unpacked."""
    out: list[Rendered] = []
    for number, doc in enumerate(docs, 1):
        if not looks_like_manifest(doc):
            continue
        items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else None
        if isinstance(items, list):
            out.extend(objects_from(items, f"{label} (document {number})", origin))
            continue
        _check(doc, label, number)
        out.append(Rendered(doc, origin))
    return out


def _check(doc: dict[str, Any], label: str, number: int) -> None:
    kind = doc.get("kind")
    where = f"{label}: document {number}"
    if not isinstance(doc.get("apiVersion"), str) or not doc["apiVersion"]:
        raise RenderError(f"{where} ({kind or 'no kind'}) has no apiVersion")
    if not isinstance(kind, str) or not kind:
        raise RenderError(f"{where} has no kind")
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or not isinstance(name, str) or not name:
        raise RenderError(f"{where} ({kind}) has no metadata.name")
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise RenderError(f"{where} ({kind} {name}) has a non-string metadata.namespace")
    for key in ("labels", "annotations"):
        value = metadata.get(key)
        if value is not None and not _string_map(value):
            raise RenderError(
                f"{where} ({kind} {name}): metadata.{key} must map strings to strings"
            )


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
    )


def check_count(count: int, max_objects: int, label: str) -> None:
    if count > max_objects:
        raise RenderError(f"{label}: more than {max_objects} objects (see [render] max_objects)")


def objects_from_stream(text: str, label: str, origin: Origin, max_objects: int) -> list[Rendered]:
    """Objects of a tool's multi-document output. Helm marks each document with
    `# Source: <template>`; that template becomes the object's origin path."""
    out: list[Rendered] = []
    for chunk in _DOC_SEPARATOR.split(text):
        check_count(len(out), max_objects, label)
        source = _HELM_SOURCE.search(chunk)
        chunk_origin = origin
        if source:
            chunk_origin = Origin(origin.repo, origin.commit, origin.app, source.group(1).strip())
        out.extend(
            objects_from(parse_documents(chunk.encode(), label), chunk_origin.path, chunk_origin)
        )
    check_count(len(out), max_objects, label)
    return out
