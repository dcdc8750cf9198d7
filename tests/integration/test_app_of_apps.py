"""App-of-apps on a real cluster without Argo CD: `reconciler sync` applies the
objects of an app that another app's render declares, and sends nothing for the
Application object itself (agentic serves no Application kind)."""

from __future__ import annotations

from tests.builders import config_map, yaml_file
from tests.helpers_lab import Lab, application, live, writes_by_reconciler


def test_sync_applies_a_child_apps_objects_and_nothing_for_its_application(lab: Lab) -> None:
    agentic = lab.clusters["agentic"]
    ns = lab.namespaces["agentic"]
    lab.commit(
        {
            "apps/root.yaml": yaml_file(application("root-agentic", "agentic", "roots", ns)),
            "roots/child.yaml": yaml_file(
                application("child-agentic", "agentic", "deploy/child", ns)
            ),
            "roots/own.yaml": yaml_file(config_map("root-own", {"from": "root"})),
            "deploy/child/cm.yaml": yaml_file(config_map("child-own", {"from": "child"})),
        },
        "an app of apps on agentic",
    )
    done = lab.run("sync", "--cluster", "agentic")
    assert done.returncode == 0, done.stdout + done.stderr

    child = live(agentic, f"/api/v1/namespaces/{ns}/configmaps/child-own")
    assert child["metadata"]["labels"]["reconciler.kernow.io/app"] == "child-agentic"
    root = live(agentic, f"/api/v1/namespaces/{ns}/configmaps/root-own")
    assert root["metadata"]["labels"]["reconciler.kernow.io/app"] == "root-agentic"
    writes = writes_by_reconciler(agentic)
    assert not [w for w in writes if "argoproj.io" in w or "applications" in w], writes
    assert "child-agentic" in done.stdout
