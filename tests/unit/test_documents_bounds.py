"""Parsing is bounded (documents.py): each breach is a RenderError naming the file,
never a traceback, a hang or a memory blow-up."""

from __future__ import annotations

import time

import pytest

from reconciler.documents import MAX_DEPTH, parse_documents
from reconciler.errors import RenderError

LAUGHS = b'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + b"".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n".encode()
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_an_alias_bomb_is_refused_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(RenderError, match=r"^bomb\.yaml: document 1 expands to more than"):
        parse_documents(LAUGHS, "bomb.yaml")
    assert time.monotonic() - start < 2


def test_aliases_that_stay_small_are_fine() -> None:
    docs = parse_documents(b"a: &x {k: v}\nb: *x\nc: *x\n", "ok.yaml")
    assert docs == [{"a": {"k": "v"}, "b": {"k": "v"}, "c": {"k": "v"}}]


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (b"n: " + b"9" * 5000, "f.yaml", r"f\.yaml: malformed YAML at line 1.*64 bits"),
        (b"n: 0x" + b"f" * 17, "f.yaml", "64 bits"),
        (b"n: 0b1" + b"0" * 64, "f.yaml", "64 bits"),
        (b"n: 1" + b":10" * 12, "f.yaml", "64 bits"),
        (b'{"n": ' + b"9" * 5000 + b"}", "f.json", r"f\.json: holds an integer of more than 64"),
        (b"a: " + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "f.yaml", "nested deeper"),
        (b"a: " + b"[" * 2000 + b"]" * 2000, "f.yaml", "maximum nesting depth"),
        (b"[" * 5000 + b"]" * 5000, "f.json", r"f\.json: nested deeper than"),
        (b"---\n" * 10_001, "f.yaml", "more than 10000 documents"),
        (b"a: &a [*a]\n", "f.yaml", "refers to itself"),
        (b"d: 2020-13-45\n", "f.yaml", r"f\.yaml: holds an unreadable value"),
    ],
)
def test_each_bound_is_a_clear_error_naming_the_file(data: bytes, path: str, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        parse_documents(data, path)


def test_deep_block_nesting_is_caught_despite_the_fast_path() -> None:
    """Compact nested sequences nest one level per two columns."""
    data = b"a:\n" + b"- " * (MAX_DEPTH + 5) + b"x\n"
    with pytest.raises(RenderError, match="nested deeper"):
        parse_documents(data, "f.yaml")


def test_largest_64_bit_integers_still_parse() -> None:
    assert parse_documents(b"a: 18446744073709551615\nb: -9223372036854775808\n", "f.yaml") == [
        {"a": 2**64 - 1, "b": -(2**63)}
    ]
