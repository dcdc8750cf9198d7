"""Each kind's health, read from real objects as the API server returned them.

Every file under tests/unit/data/health is one live object preceded by comment
lines stating the health Argo CD would give it (`# health:`), a part of the
message (`# message:`) and where the object came from (`# source:`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.health import CHECKS, assess
from reconciler.model import GroupKind, api_group

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "health"


def read(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The `# key: value` header of a fixture, and the object below it."""
    text = path.read_text(encoding="utf-8")
    header = {}
    for line in text.splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        header[key] = value
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict), f"{path.name}: not one object"
    return header, obj


def kind_of(obj: dict[str, Any]) -> GroupKind:
    return GroupKind(api_group(obj["apiVersion"]), obj["kind"])


ALL = sorted(FIXTURES.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_the_fixture_has_the_health_its_header_states(path: Path) -> None:
    header, obj = read(path)
    health = assess(obj)
    if header["health"] == "none":
        assert health is None
        return
    assert health is not None
    assert health.status == header["health"], health.message
    assert header.get("message", "") in health.message


def test_every_registered_kind_has_a_healthy_and_an_unhealthy_fixture() -> None:
    seen: dict[GroupKind, set[str]] = defaultdict(set)
    for path in ALL:
        header, obj = read(path)
        seen[kind_of(obj)].add(header["health"])
    lacking = {
        str(kind): sorted(seen[kind])
        for kind in CHECKS
        if "Healthy" not in seen[kind] or not seen[kind] - {"Healthy"}
    }
    assert lacking == {}


def test_fixtures_are_whole_objects_that_say_where_they_came_from() -> None:
    for path in ALL:
        header, obj = read(path)
        assert header.get("source"), path.name
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], path.name
