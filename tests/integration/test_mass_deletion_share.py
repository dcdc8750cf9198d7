"""`[daemon] max_prune_share` is the mass-deletion guard's share, end to end: with the
default (0.5) a commit that removes most of an app's objects prunes nothing and says
why; with 1.0 the same commit prunes them."""

from __future__ import annotations

from tests.faults.lab import config_maps
from tests.helpers_lab import Lab

GONE = [f"cm-{i:04d}" for i in range(4)]


def _config_maps(lab: Lab) -> set[str]:
    ns = lab.namespaces["agentic"]
    items = lab.clusters["agentic"].request("GET", f"/api/v1/namespaces/{ns}/configmaps")["items"]
    return {i["metadata"]["name"] for i in items}


def test_the_configured_prune_share_decides_what_one_sync_may_prune(lab: Lab) -> None:
    lab.commit(config_maps("deploy/agentic", len(GONE)), "four more objects")
    first = lab.run("sync", "--cluster", "agentic")
    assert first.returncode == 0, first.stderr
    assert set(GONE) <= _config_maps(lab)
    # 4 of the app's 7 objects leave git at once: past half of its inventory.
    lab.commit({f"deploy/agentic/{name}.yaml": None for name in GONE}, "most of it removed")
    guarded = lab.run("sync", "--cluster", "agentic")
    assert guarded.returncode == 0, guarded.stderr
    assert "mass-deletion guard: 4 of 7 objects" in guarded.stdout + guarded.stderr
    assert set(GONE) <= _config_maps(lab), "the default share pruned nothing"

    text = lab.config.read_text()
    lab.config.write_text(text.replace("[daemon]\n", "[daemon]\nmax_prune_share = 1.0\n", 1))
    allowed = lab.run("sync", "--cluster", "agentic")
    assert allowed.returncode == 0, allowed.stderr
    assert not set(GONE) & _config_maps(lab), "a share of 1 lets the same commit prune"
    assert "settings" in _config_maps(lab)
