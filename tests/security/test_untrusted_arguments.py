"""Arguments are data: no value of an Application can become a flag of helm.

The issue's attack: `releaseName: --post-renderer=/bin/sh` made `helm template`
pipe the chart's rendered text into a shell. Here the chart's text would touch a
marker file; each variant must leave no marker and fail only its own app, with
an error naming the key."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.desired.conftest import HELM
from tests.security.conftest import MakeLab, application
from tests.security.untrusted import assert_only_app_failed, chart, rendered_apps

SHELL = "--post-renderer=/bin/sh"


def _chart(marker: Path) -> dict[str, bytes]:
    """A local chart whose rendered text is valid YAML and, read by a shell, touches
    `marker` (`x:` fails as a command, then `touch` runs)."""
    return chart(f"  x: y; touch {marker}\n")


def test_the_attack_chart_does_run_a_shell_when_the_name_becomes_a_flag(tmp_path: Path) -> None:
    """Without `--`, helm reads the release name as its --post-renderer flag."""
    marker = tmp_path / "post-renderer-ran"
    for name, data in _chart(marker).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    argv = [str(HELM), "template", SHELL, str(tmp_path / "charts/evil")]
    subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert marker.exists()


def _helm_source(**helm: Any) -> dict[str, Any]:
    return {"path": "charts/evil", "helm": helm}


@pytest.mark.parametrize(
    ("source", "destination_namespace", "key"),
    [
        (_helm_source(releaseName=SHELL), "evil", "spec.source.helm.releaseName"),
        (_helm_source(releaseName="ok"), SHELL, "spec.destination.namespace"),
        (
            _helm_source(parameters=[{"name": f"a={SHELL}", "value": "x"}]),
            "evil",
            "spec.source.helm.parameters[0].name",
        ),
        (
            {"repoURL": "https://charts.example.invalid", "chart": "evil", "targetRevision": SHELL},
            "evil",
            "spec.source.targetRevision",
        ),
        (
            {
                "repoURL": "https://charts.example.invalid",
                "chart": SHELL,
                "targetRevision": "1.0.0",
            },
            "evil",
            "spec.source.chart",
        ),
        (
            {"repoURL": SHELL, "chart": "evil", "targetRevision": "1.0.0"},
            "evil",
            "spec.source.repoURL",
        ),
    ],
)
def test_a_value_shaped_like_a_flag_runs_nothing_and_fails_its_app_naming_the_key(
    attack_lab: MakeLab,
    tmp_path: Path,
    source: dict[str, Any],
    destination_namespace: str,
    key: str,
) -> None:
    marker = tmp_path / "post-renderer-ran"
    doc = yaml.safe_load(application("evil", source))
    doc["spec"]["destination"]["namespace"] = destination_namespace
    lab = attack_lab(
        {"kubernetes/argocd-apps/evil.yaml": yaml.safe_dump(doc).encode(), **_chart(marker)}
    )

    result = lab.render()

    assert not marker.exists(), "a value from the repository reached helm as a flag"
    assert_only_app_failed(result, "evil", key)


def test_parameter_values_with_flags_in_them_stay_one_value(
    attack_lab: MakeLab, tmp_path: Path
) -> None:
    """A value is never checked (any string is a value), yet stays inside its `--set`."""
    marker = tmp_path / "post-renderer-ran"
    files = chart("  a: {{ .Values.a | quote }}\n")
    source = _helm_source(parameters=[{"name": "a", "value": f"x {SHELL} --debug"}])
    lab = attack_lab({"kubernetes/argocd-apps/evil.yaml": application("evil", source), **files})

    result = lab.render()

    assert result.returncode == 0, result.stderr
    assert {"evil", "honest"} <= rendered_apps(result)
    assert f"x {SHELL} --debug" in result.stdout
    assert not marker.exists()
