"""Manifests load as PyYAML's reference safe loader loads them, and what it refuses is
refused: documents.py builds plain trees (text without anchors) by a faster path of its
own, which must never change a value, a type or a verdict."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from reconciler.documents import parse_documents
from reconciler.errors import RenderError
from tests.conftest import FIXTURES

CASES = [
    "<<: {a: 1}\nb: 2",  # a merge key without an anchor
    "80: http\n443: https",  # integer keys
    "? [a]\n: b",  # a key that cannot be a dict key
    "!!set {a, b}",
    "=: x",
    "---\n---\na: 1\n",
    "t: 2001-12-14\nu: 2001-12-14t21:59:43.10-05:00",
    "b: !!binary aGVsbG8=",
    "a: 1\na: 2",
    "x: !custom 1",
    "~: x\nnull: y",
    "yes: no\n'yes': 'no'\nOn: Off",
    "a: [1, -2, 2.5, .inf, -.Inf, null, ~, true, 0x1F, 0o17, -1e3, 1_000, 0b101, 190:20:30]",
    "a: |\n  text\n  more\nb: >-\n  folded\n  line\n",
    "k: !!str 123\nl: !!int '12'\nm: !!float '1'",
    "!!omap [a: 1, b: 2]",
    "a: {b: {c: [d, {e: f}]}}\n- - - x",
    "- - - x",
    "key: \"quoted\\ttab\"\n'': empty key\nempty:\n",
    "? |\n  block key\n: v",
    "[a, b",
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {port: '8080', on: 'yes'}",
]


def reference(text: str) -> list[Any] | type[Exception]:
    try:
        return [doc for doc in yaml.load_all(text, Loader=yaml.SafeLoader) if doc is not None]
    except yaml.YAMLError:
        return yaml.YAMLError


def ours(text: str) -> list[Any] | type[Exception]:
    try:
        return parse_documents(text.encode(), "case.yaml")
    except RenderError:
        return yaml.YAMLError


@pytest.mark.parametrize("text", CASES)
def test_a_document_loads_as_the_reference_loader_loads_it(text: str) -> None:
    expected, got = reference(text), ours(text)
    assert repr(got) == repr(expected), "same values, same types, same refusals"


def test_every_fixture_manifest_loads_as_the_reference_loader_loads_it() -> None:
    files = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        pytest.skip(f"no fixture repositories at {FIXTURES}")
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert repr(ours(text)) == repr(reference(text)), path


def test_text_with_anchors_still_shares_aliased_nodes() -> None:
    docs = parse_documents(b"a: &x {k: v}\nb: *x\n", "anchors.yaml")
    assert docs == [{"a": {"k": "v"}, "b": {"k": "v"}}]
    assert docs[0]["a"] is docs[0]["b"], "aliases stay shared, as the bounds check expects"
