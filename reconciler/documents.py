"""Parse YAML and JSON manifest files into documents, within bounds.

Manifests are untrusted input (a commit is not a login), so parsing is
bounded: a file holds at most MAX_DOCUMENTS documents, and each document at
most MAX_NODES nodes counted as if every YAML alias were expanded (a
400-byte "billion laughs" names millions) and MAX_DEPTH levels of nesting, and
integers fit in 64 bits (Kubernetes has no larger ones; Python would refuse
to convert much larger ones only later, in the middle of writing output).
A breach is an error naming the file, like malformed YAML.

Error messages give only the file, line and the parser's complaint: the text
of a document can hold secrets, so it is never quoted.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from reconciler.errors import RenderError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_DOCUMENTS = 10_000
MAX_NODES = 1_000_000
MAX_DEPTH = 100
_INT_BITS = 64
_INT_TEXT = 80  # longer integer literals are refused before Python converts them
# Nesting deeper than MAX_DEPTH needs many flow brackets or deep indentation (block
# collections nest at most two levels per column); documents with neither, and no
# anchors, are not walked at all, which keeps parsing as fast as the C parser allows.
_FLOW_BRACKETS = 30
_DEEP_INDENT = re.compile(r"(?:^|\n)[ -]{30}")

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """The C safe loader, with integers bounded as they are constructed."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    if len(str(node.value)) > _INT_TEXT:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of more than {_INT_BITS} bits", node.start_mark
        )
    value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    if value.bit_length() > _INT_BITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of more than {_INT_BITS} bits", node.start_mark
        )
    return value


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)

_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
# The implicit resolvers (booleans, numbers, nulls, ...) by a scalar's first character,
# wildcards included, as PyYAML's resolve looks them up.
_Resolvers = list[tuple[str, re.Pattern[str]]]
_WILDCARDS: _Resolvers = list(_Loader.yaml_implicit_resolvers.get(None, []))
_IMPLICIT: dict[str, _Resolvers] = {
    first: [*resolvers, *_WILDCARDS]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
    if first is not None
}


class _TreeLoader(_Loader):
    """The loader for text without anchors, whose documents are trees: most of the
    time of loading manifests goes to PyYAML's general node-by-node constructor and
    tag resolver (Python, even over the C parser), which a start with thousands of
    objects pays in full. Plain strings, mappings and lists are built directly here;
    every other node (numbers, booleans, nulls, merge keys, explicit tags) goes to the
    general constructor, so what is loaded, and what is refused, stays the same."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode:
            return _SEQ if kind is yaml.SequenceNode else _MAP
        if implicit[0]:
            for tag, pattern in _IMPLICIT.get(value[:1], _WILDCARDS):
                if pattern.match(value):
                    return tag
        return _STR

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass  # no path resolvers: nothing to track

    def ascend_resolver(self) -> None:
        pass

    def construct_document(self, node: yaml.Node) -> Any:
        data = self._tree(node)
        # What the general constructor kept of this document (deep: nothing is pending).
        self.constructed_objects.clear()
        self.recursive_objects.clear()
        return data

    def _tree(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _MAP and all(key.tag == _STR for key, _ in node.value):
            return {key.value: self._tree(value) for key, value in node.value}
        if tag == _SEQ:
            return [self._tree(item) for item in node.value]
        return self.construct_object(node, deep=True)


def parse_documents(data: bytes, path: str) -> list[Any]:
    """Every document of a .yaml/.yml (multi-document) or .json file; empty ones dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RenderError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        docs = _json(text, path) if path.endswith(".json") else _yaml(text, path)
    except RecursionError:
        raise RenderError(f"{path}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        # Dates or numbers out of range; the value itself is not quoted.
        raise RenderError(f"{path}: holds an unreadable value") from None
    if "&" in text or _maybe_deep(text):
        for number, doc in enumerate(docs, 1):
            problem = _out_of_bounds(doc)
            if problem:
                raise RenderError(f"{path}: document {number} {problem}")
    return docs


def _maybe_deep(text: str) -> bool:
    return (
        text.count("[") + text.count("{") > _FLOW_BRACKETS or _DEEP_INDENT.search(text) is not None
    )


def _json_int(literal: str) -> int:
    if len(literal) > _INT_TEXT or int(literal).bit_length() > _INT_BITS:
        raise _JsonIntTooLarge
    return int(literal)


class _JsonIntTooLarge(Exception):
    pass


def _json(text: str, path: str) -> list[Any]:
    try:
        loaded = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise RenderError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except _JsonIntTooLarge:
        raise RenderError(f"{path}: holds an integer of more than {_INT_BITS} bits") from None
    docs = list(loaded) if isinstance(loaded, list) else [loaded]
    if len(docs) > MAX_DOCUMENTS:
        raise RenderError(f"{path}: more than {MAX_DOCUMENTS} documents")
    return docs


def _yaml(text: str, path: str) -> list[Any]:
    docs: list[Any] = []
    try:
        loader = _Loader if "&" in text else _TreeLoader
        for number, doc in enumerate(yaml.load_all(text, Loader=loader), 1):
            if number > MAX_DOCUMENTS:
                raise RenderError(f"{path}: more than {MAX_DOCUMENTS} documents")
            if doc is not None:
                docs.append(doc)
    except yaml.YAMLError as exc:
        raise RenderError(f"{path}: malformed YAML{_position(exc)}") from None
    return docs


def _out_of_bounds(doc: Any) -> str | None:
    """Why `doc` is too big or too deep; None if it is not.

    Aliases make the parsed document a graph that shares nodes, so sizes and depths
    are computed once per distinct node (iteratively: the walk must not itself
    recurse) and a shared node counts every time it is referenced."""
    if not isinstance(doc, dict | list):
        return None
    measured: dict[int, tuple[int, int]] = {}  # id -> (expanded nodes, depth)
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        node, children_done = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if children_done:
            open_nodes.discard(id(node))
            size, depth = 1 + len(node), 0
            for child in children:
                if isinstance(child, dict | list):
                    child_size, child_depth = measured[id(child)]
                    size += child_size - 1
                    depth = max(depth, child_depth)
            if size > MAX_NODES:
                return f"expands to more than {MAX_NODES} nodes (YAML aliases)"
            if depth + 1 > MAX_DEPTH:
                return f"is nested deeper than {MAX_DEPTH} levels"
            measured[id(node)] = (size, depth + 1)
            continue
        if id(node) in measured:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if isinstance(child, dict | list):
                if id(child) in open_nodes:
                    return "refers to itself (a recursive YAML alias)"
                if id(child) not in measured:
                    stack.append((child, False))
    return None


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
