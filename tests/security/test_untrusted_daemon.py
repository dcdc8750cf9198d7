"""The real daemon meets a poisoned commit: a flag-shaped release name, an alias
bomb and an escaping symlink chain land in one commit beside an honest change.
The daemon stays up, runs nothing, reads nothing outside the checkout, reports
each poisoned app's error, and still applies the honest change."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.builders import config_map, yaml_file
from tests.desired.conftest import HELM
from tests.faults import conftest as faults
from tests.faults.lab import FaultLab
from tests.helpers_cluster import wait_for
from tests.helpers_lab import application
from tests.security.test_untrusted_arguments import SHELL
from tests.security.test_untrusted_parsing import BILLION_LAUGHS
from tests.security.test_untrusted_paths import SECRET, escaping_chain, host_file
from tests.security.untrusted import chart

fault_lab = faults.fault_lab


def _poison(lab: FaultLab, marker: Path, host: Path) -> dict[str, bytes | None]:
    ns = lab.namespaces["agentic"]
    shell = application("shell-agentic", "agentic", "charts/shell", ns)
    shell["spec"]["source"]["helm"] = {"releaseName": SHELL}
    bomb = application("bomb-agentic", "agentic", "deploy/bomb", ns)
    leak = application("leak-agentic", "agentic", "charts/leak", ns)
    return {
        "apps/shell.yaml": yaml.safe_dump(shell).encode(),
        **chart(f"  x: y; touch {marker}\n", "charts/shell"),
        "apps/bomb.yaml": yaml.safe_dump(bomb).encode(),
        "deploy/bomb/bomb.yaml": BILLION_LAUGHS,
        "apps/leak.yaml": yaml.safe_dump(leak).encode(),
        **chart('  stolen: {{ .Files.Get "leak" | quote }}\n', "charts/leak"),
        **escaping_chain("charts/leak", host),  # type: ignore[dict-item]
        "deploy/agentic/after.yaml": yaml_file(config_map("after-the-poison", {"k": "v"})),
    }


def test_a_poisoned_commit_leaves_the_daemon_up_and_the_honest_change_applied(
    fault_lab: FaultLab, tmp_path: Path
) -> None:
    lab = fault_lab
    lab.render = {"helm": str(HELM)}
    marker, host = tmp_path / "post-renderer-ran", host_file(tmp_path)
    daemon = lab.start()
    ns = lab.namespaces["agentic"]

    lab.commit(_poison(lab, marker, host), "a poisoned commit beside an honest change")

    wait_for(
        lambda: lab.config_map("agentic", ns, "after-the-poison") is not None,
        120,
        "the honest change of the poisoned commit applied",
    )
    assert daemon.alive()
    # An Application refused by the catalogue has no status row; its error is logged.
    refused = daemon.wait_event("app.error", 30, app="shell-agentic")["error"]
    assert "apps/shell.yaml: spec.source.helm.releaseName" in refused
    errors = {
        name: (daemon.app("agentic", name) or {}).get("error") or ""
        for name in ("bomb-agentic", "leak-agentic")
    }
    assert "deploy/bomb/bomb.yaml" in errors["bomb-agentic"], errors
    assert "points outside the repository" in errors["leak-agentic"], errors
    assert not marker.exists()
    assert lab.config_map("agentic", ns, "leak") is None
    assert SECRET not in daemon.log_path.read_text()
    assert (daemon.app("monit", "side-monit") or {}).get("sync") == "Synced"
    lab.assert_prod_untouched()
    assert daemon.stop() == 0
