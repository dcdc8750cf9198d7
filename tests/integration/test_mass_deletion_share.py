"""`[daemon] max_prune_share` and `prune_floor` decide, end to end, what one sync may prune
by itself: a commit removing most of an app's objects, past the floor, is held (skipped,
with the guard's reason); a share of 1 lets the same commit prune; a prune of no more
objects than the floor always goes, whatever its share."""

from __future__ import annotations

from tests.faults.lab import config_maps
from tests.helpers_lab import Lab


def _config_maps(lab: Lab) -> set[str]:
    ns = lab.namespaces["agentic"]
    items = lab.clusters["agentic"].request("GET", f"/api/v1/namespaces/{ns}/configmaps")["items"]
    return {i["metadata"]["name"] for i in items}


def _set(lab: Lab, key: str, value: str) -> None:
    text = lab.config.read_text()
    lab.config.write_text(text.replace("[daemon]\n", f"[daemon]\n{key} = {value}\n", 1))


def _sync(lab: Lab) -> str:
    done = lab.run("sync", "--cluster", "agentic")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _grow_then_remove(lab: Lab, n: int) -> set[str]:
    """`n` ConfigMaps added to agentic's app and synced, then removed from git. The
    Deployment goes first: it never becomes healthy here (no kubelet), and the share
    is what is tested, not the waits for health."""
    files = {**config_maps("deploy/agentic", n), "deploy/agentic/deployment.yaml": None}
    lab.commit(files, f"{n} more objects")
    _sync(lab)
    gone = {f"cm-{i:04d}" for i in range(n)}
    assert gone <= _config_maps(lab)
    lab.commit({f"deploy/agentic/{name}.yaml": None for name in gone}, "most of it removed")
    return gone


def test_the_configured_prune_share_decides_what_one_sync_may_prune(lab: Lab) -> None:
    # 8 of the app's 10 objects leave git at once: past the floor (5) and half of them.
    gone = _grow_then_remove(lab, 8)
    guarded = _sync(lab)
    assert "skipped (prune blocked: mass-deletion guard: 8 of the app's 10 objects" in guarded
    assert gone <= _config_maps(lab), "the default share pruned nothing"

    _set(lab, "max_prune_share", "1.0")
    allowed = _sync(lab)
    assert allowed.count(": pruned") == 8, allowed
    assert not gone & _config_maps(lab), "a share of 1 lets the same commit prune"
    assert "settings" in _config_maps(lab)


def test_the_configured_prune_floor_lets_a_small_prune_through(lab: Lab) -> None:
    # 4 of 6 objects: more than half, but no more than the default floor (5).
    _set(lab, "prune_floor", "3")
    gone = _grow_then_remove(lab, 4)
    guarded = _sync(lab)
    assert "mass-deletion guard: 4 of the app's 6 objects" in guarded, guarded
    assert gone <= _config_maps(lab), "past a floor of 3, the share guard holds them"

    lab.config.write_text(lab.config.read_text().replace("prune_floor = 3\n", "", 1))
    allowed = _sync(lab)
    assert allowed.count(": pruned") == 4, allowed
    assert not gone & _config_maps(lab), "the default floor of 5 lets 4 go"
