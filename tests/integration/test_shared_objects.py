"""Two apps rendering one object on an apply-mode cluster, as Argo CD's
SharedResourceWarning: the shared object is neither created nor pruned, both
apps' other objects sync, and `sync`, `diff`, `render` and `status` name the
conflict; `FailOnSharedResource=true` fails that app's sync alone."""

from __future__ import annotations

import json
from typing import Any

from tests.builders import config_map, yaml_file
from tests.helpers_lab import Lab, application, live

SHARED = "shared-settings"


def _app(name: str, namespace: str, *options: str) -> bytes:
    doc = application(name, "agentic", f"deploy/{name}", namespace)
    doc["spec"]["syncPolicy"]["syncOptions"] += list(options)
    return yaml_file(doc)


def _files(
    name: str, namespace: str, *options: str, shared: bool = True
) -> dict[str, bytes | None]:
    return {
        f"apps/{name}.yaml": _app(name, namespace, *options),
        f"deploy/{name}/own.yaml": yaml_file(config_map(f"{name}-own", {"app": name})),
        f"deploy/{name}/shared.yaml": (
            yaml_file(config_map(SHARED, {"owner": name})) if shared else None
        ),
    }


def _configmaps(lab: Lab) -> dict[str, dict[str, str]]:
    ns = lab.namespaces["agentic"]
    items = live(lab.clusters["agentic"], f"/api/v1/namespaces/{ns}/configmaps")["items"]
    return {i["metadata"]["name"]: i.get("data", {}) for i in items}


def _findings(lab: Lab) -> dict[str, list[dict[str, Any]]]:
    done = lab.run("status", "-o", "json")
    document = json.loads(done.stdout)
    (agentic,) = [c for c in document["clusters"] if c["name"] == "agentic"]
    # Each finding without `since`: when it was first seen is not what these tests check.
    return {
        a["name"]: [{k: v for k, v in f.items() if k != "since"} for f in a["findings"]]
        for a in agentic["apps"]
    }


def test_a_shared_object_is_applied_by_neither_app_and_the_rest_of_both_sync(lab: Lab) -> None:
    ns = lab.namespaces["agentic"]
    lab.commit({**_files("alpha", ns), **_files("beta", ns)}, "two apps render one ConfigMap")

    synced = lab.run("sync", "--cluster", "agentic")
    assert synced.returncode == 0, synced.stderr
    live_maps = _configmaps(lab)
    assert {"alpha-own", "beta-own", "settings"} <= set(live_maps)
    assert SHARED not in live_maps
    assert (
        f"agentic/alpha ConfigMap {ns}/{SHARED}: skipped (shared: also rendered by app beta "
        "(lab:deploy/beta/shared.yaml))"
    ) in synced.stdout
    assert f"agentic/beta ConfigMap {ns}/{SHARED}: skipped (shared: also rendered by app alpha" in (
        synced.stdout
    )
    findings = _findings(lab)
    for app, other in (("alpha", "beta"), ("beta", "alpha")):
        assert findings[app] == [
            {
                "kind": "shared",
                "object": f"ConfigMap {ns}/{SHARED}",
                "message": f"also rendered by app {other} (lab:deploy/{other}/shared.yaml)",
            }
        ]
    assert findings["web-agentic"] == []

    line = f"cluster agentic: ConfigMap {ns}/{SHARED} is rendered by app alpha"
    diff = lab.run("diff", "--cluster", "agentic", "--app", "beta")
    assert line in diff.stderr, diff.stderr
    render = lab.run("render", "--app", "alpha")
    assert render.returncode == 0 and line in render.stderr, render.stderr
    assert f"name: {SHARED}" not in render.stdout and "name: alpha-own" in render.stdout


def test_a_shared_object_one_app_applied_before_is_kept_not_pruned(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    lab.commit(_files("alpha", ns), "alpha alone owns the ConfigMap")
    assert lab.run("sync", "--cluster", "agentic").returncode == 0
    assert _configmaps(lab)[SHARED] == {"owner": "alpha"}
    uid = live(agentic, f"/api/v1/namespaces/{ns}/configmaps/{SHARED}")["metadata"]["uid"]

    lab.commit(_files("beta", ns), "beta renders it too")
    synced = lab.run("sync", "--cluster", "agentic")
    assert synced.returncode == 0, synced.stderr
    assert "pruned" not in synced.stdout, synced.stdout
    after = live(agentic, f"/api/v1/namespaces/{ns}/configmaps/{SHARED}")
    assert after["metadata"]["uid"] == uid and after["data"] == {"owner": "alpha"}
    assert "beta-own" in _configmaps(lab)

    # The conflict settled in beta's favour: beta takes the object over, nothing is deleted.
    lab.commit(_files("alpha", ns, shared=False), "alpha lets go")
    settled = lab.run("sync", "--cluster", "agentic")
    assert settled.returncode == 0, settled.stderr
    taken = live(agentic, f"/api/v1/namespaces/{ns}/configmaps/{SHARED}")
    assert taken["metadata"]["uid"] == uid and taken["data"] == {"owner": "beta"}
    assert _findings(lab)["alpha"] == [] and _findings(lab)["beta"] == []


def test_fail_on_shared_resource_fails_that_apps_sync_and_spares_the_other(lab: Lab) -> None:
    ns = lab.namespaces["agentic"]
    lab.commit(
        {**_files("alpha", ns), **_files("beta", ns, "FailOnSharedResource=true")},
        "beta refuses to share",
    )
    synced = lab.run("sync", "--cluster", "agentic")
    assert synced.returncode == 1, synced.stdout + synced.stderr
    assert (
        f"agentic/beta ConfigMap {ns}/{SHARED}: failed (FailOnSharedResource=true: also "
        "rendered by app alpha (lab:deploy/alpha/shared.yaml))"
    ) in synced.stdout
    assert f"agentic/beta ConfigMap {ns}/beta-own: skipped (not synced: FailOnSharedResource" in (
        synced.stdout
    )
    live_maps = _configmaps(lab)
    assert "alpha-own" in live_maps
    assert "beta-own" not in live_maps and SHARED not in live_maps
