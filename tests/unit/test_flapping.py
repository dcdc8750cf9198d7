"""The flapping rule: an object another writer keeps changing back is left alone for a
while, longer each time, instead of being fought over forever."""

from __future__ import annotations

from reconciler.daemon import FLAP_BACKOFF_S, FLAP_REVERTS, FLAP_WINDOW_S, _Flapping
from reconciler.model import ObjectRef

REF = ObjectRef("apps", "Deployment", "web", "web")
OTHER = ObjectRef("", "ConfigMap", "web", "settings")


def _revert(flapping: _Flapping, ref: ObjectRef, times: int, start: float, every: float) -> bool:
    """Revert `ref` `times` times from `start`; whether the last revert made it flap."""
    flapped = False
    for n in range(times):
        flapped = flapping.record_revert(ref, start + n * every)
    return flapped


def test_fewer_reverts_than_the_threshold_within_the_window_hold_nothing() -> None:
    flapping = _Flapping()
    assert not _revert(flapping, REF, FLAP_REVERTS - 1, 0.0, 10.0)
    assert flapping.held(20.0) == {}


def test_the_threshold_revert_within_the_window_holds_that_object_for_the_first_backoff() -> None:
    flapping = _Flapping()
    assert _revert(flapping, REF, FLAP_REVERTS, 0.0, 10.0)
    last = (FLAP_REVERTS - 1) * 10.0
    held = flapping.held(last + 1.0)
    assert list(held) == [REF]  # only the object that flapped
    assert held[REF].startswith("flapping: something keeps changing it back")
    assert f"retrying in {FLAP_BACKOFF_S[0] - 1.0:.0f}s" in held[REF]
    assert REF in flapping.held(last + FLAP_BACKOFF_S[0] - 0.1)
    assert flapping.held(last + FLAP_BACKOFF_S[0]) == {}


def test_reverts_older_than_the_window_do_not_count() -> None:
    flapping = _Flapping()
    # Each revert comes just after the one before left the window.
    assert not _revert(flapping, REF, FLAP_REVERTS * 2, 0.0, FLAP_WINDOW_S)
    assert flapping.held(FLAP_REVERTS * 2 * FLAP_WINDOW_S) == {}


def test_reverts_of_different_objects_are_counted_apart() -> None:
    flapping = _Flapping()
    for n in range(FLAP_REVERTS - 1):
        assert not flapping.record_revert(REF, float(n))
        assert not flapping.record_revert(OTHER, float(n))
    assert flapping.held(float(FLAP_REVERTS)) == {}


def test_each_new_flap_backs_off_longer_up_to_the_last_step() -> None:
    flapping = _Flapping()
    at = 0.0
    waits = []
    for _ in range(len(FLAP_BACKOFF_S) + 1):
        assert _revert(flapping, REF, FLAP_REVERTS, at, 1.0)
        at += FLAP_REVERTS - 1
        waits.append(flapping.held_until[REF] - at)
        at = flapping.held_until[REF]  # the next flap comes once the hold is over
    assert waits == [*FLAP_BACKOFF_S, FLAP_BACKOFF_S[-1]]


def test_counting_starts_over_after_a_flap() -> None:
    flapping = _Flapping()
    assert _revert(flapping, REF, FLAP_REVERTS, 0.0, 1.0)
    # The reverts that made it flap are spent: it takes as many again to flap again.
    assert not _revert(flapping, REF, FLAP_REVERTS - 1, 100.0, 1.0)
    assert _revert(flapping, REF, 1, 200.0, 1.0)
