"""Parse YAML and JSON manifest files into documents.

Error messages give only the file, line and the parser's complaint: the text
of a document can hold secrets, so it is never quoted.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from reconciler.errors import RenderError

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def parse_documents(data: bytes, path: str) -> list[Any]:
    """Every document of a .yaml/.yml (multi-document) or .json file; empty ones dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RenderError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if path.endswith(".json"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RenderError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
        return list(loaded) if isinstance(loaded, list) else [loaded]
    try:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as exc:
        raise RenderError(f"{path}: malformed YAML{_position(exc)}") from None


def _position(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{where}: {exc.problem or exc.context or 'syntax error'}"
    return ""


def looks_like_manifest(doc: Any) -> bool:
    """Whether a document is meant as a Kubernetes object. Argo CD skips YAML that is
    not (values files, configs); one that is but lacks fields is an error instead."""
    return isinstance(doc, dict) and ("apiVersion" in doc or "kind" in doc)


def dump_yaml(docs: list[Any]) -> str:
    """Multi-document YAML that `kubectl apply -f -` accepts."""
    dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump_all(docs, Dumper=dumper, sort_keys=False, explicit_start=True)
