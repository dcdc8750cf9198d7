"""The two faces of a Drift for people and scripts: a `kubectl diff`-like unified
YAML diff, and the JSON record of `reconciler diff -o json`. Both read only the
Drift, whose values are already redacted, so neither can print a secret."""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from reconciler.model import Drift

_RESET = "\x1b[0m"
_COLOURS = {"+": "\x1b[32m", "-": "\x1b[31m", "@": "\x1b[36m"}
_BOLD = "\x1b[1m"


def render_text(drift: Drift, *, cluster: str, app: str, colour: bool = False) -> str:
    """A unified diff from live to desired, headed `cluster/app kind namespace/name`."""
    ref = drift.ref
    name = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
    kind = f"{ref.kind}.{ref.group}" if ref.group else ref.kind
    header = f"{cluster}/{app} {kind} {name} ({drift.type.value})"
    lines = difflib.unified_diff(
        _yaml_lines(drift.live),
        _yaml_lines(drift.desired),
        fromfile=f"live/{kind}/{name}",
        tofile=f"desired/{kind}/{name}",
        lineterm="",
    )
    body = [_paint(line, colour) for line in lines]
    title = f"{_BOLD}{header}{_RESET}" if colour else header
    return "\n".join([title, *body]) + "\n"


def drift_to_json(drift: Drift, *, cluster: str, app: str) -> dict[str, Any]:
    ref = drift.ref
    return {
        "cluster": cluster,
        "app": app,
        "ref": {
            "apiVersion": drift.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        },
        "type": drift.type.value,
        "changes": [{"path": c.path, "desired": c.desired, "live": c.live} for c in drift.changes],
    }


def _yaml_lines(obj: Any) -> list[str]:
    if obj is None:
        return []
    text: str = yaml.safe_dump(obj, default_flow_style=False, sort_keys=True)
    return text.splitlines()


def _paint(line: str, colour: bool) -> str:
    start = _COLOURS.get(line[:1]) if colour else None
    return f"{start}{line}{_RESET}" if start else line
