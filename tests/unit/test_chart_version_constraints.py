"""Chart `targetRevision` constraints resolve to the version Helm would pick."""

from __future__ import annotations

import pytest

from reconciler.render.semver import ConstraintError, highest, is_constraint

INDEX = [
    "0.0.3",
    "0.0.4",
    "0.2.3",
    "0.2.9",
    "0.3.0",
    "1.1.9",
    "1.2.0",
    "1.2.7",
    "v1.3.0",
    "1.4.5",
    "1.5.0-rc.1",
    "1.5.0",
    "2.0.0-beta.2",
    "2.0.0",
    "not-semver",
]


@pytest.mark.parametrize(
    ("constraint", "chosen"),
    [
        ("*", "2.0.0"),
        ("x", "2.0.0"),
        ("1.2.x", "1.2.7"),
        ("1.2.*", "1.2.7"),
        ("1.2", "1.2.7"),
        ("1", "1.5.0"),
        ("~1.2.3", "1.2.7"),
        ("~1.2", "1.2.7"),
        ("~1", "1.5.0"),
        ("~> 1.2", "1.2.7"),
        ("^1.2.3", "1.5.0"),
        ("^0.2.3", "0.2.9"),
        ("^0.0.3", "0.0.3"),
        ("^0", "0.3.0"),
        (">=1.2.0 <1.4.0", "v1.3.0"),
        (">= 1.2, < 1.4", "v1.3.0"),
        (">1.2", "2.0.0"),
        ("<=1.2", "1.2.7"),
        ("<1.2", "1.1.9"),
        ("1.2 - 1.4", "1.4.5"),
        ("1.2.0 - 1.3.0", "v1.3.0"),
        ("^0.2 || ~1.1", "1.1.9"),
        ("!=2.0.0", "1.5.0"),
        ("=1.2.0", "1.2.0"),
        (">=1.5.0-0 <2.0.0-0", "1.5.0"),
        (">=2.0.0-0", "2.0.0"),
        ("^3", None),
    ],
)
def test_a_constraint_picks_the_highest_release_that_meets_it(
    constraint: str, chosen: str | None
) -> None:
    assert highest(constraint, INDEX) == chosen


def test_pre_releases_are_chosen_only_when_the_constraint_names_one() -> None:
    assert highest("^2.0.0-0", ["2.0.0-beta.2", "1.9.0"]) == "2.0.0-beta.2"
    assert highest("^1.9", ["2.0.0-beta.2", "1.9.0", "1.9.1-rc.1"]) == "1.9.0"
    assert highest(">=1.9.1-rc.1", ["1.9.1-rc.1", "1.9.1-rc.2"]) == "1.9.1-rc.2"


def test_exact_versions_are_not_constraints() -> None:
    assert [is_constraint(v) for v in ("1.2.3", "v39.0.5", "0.11.29", "1.0.0-rc.1")] == [False] * 4
    assert [is_constraint(v) for v in ("1.2.*", "1.x", "^1.2", "~1", ">=1", "1 || 2")] == [True] * 6


@pytest.mark.parametrize("constraint", [">=banana", "1.2 ||", "~>", "1.2.3.4"])
def test_an_unreadable_constraint_says_which_part(constraint: str) -> None:
    with pytest.raises(ConstraintError) as caught:
        highest(constraint, INDEX)
    assert "version" in str(caught.value)
