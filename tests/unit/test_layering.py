"""The layers stay apart: only the edges touch the outside world's libraries.

`reconciler.cluster` is the one place that talks to the Kubernetes API and
`reconciler.sources` the one place that reads git, so the report-mode guard and
the read-only-clone rule each have one place to live and be checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"

# library -> the only sub-package allowed to import it
EDGES = {"kubernetes": "cluster", "pygit2": "sources"}


def imported_roots(source: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_imported_roots_sees_both_import_forms(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import kubernetes.client\nfrom pygit2 import Repository\nfrom . import x\n")
    assert imported_roots(module) == {"kubernetes", "pygit2"}


@pytest.mark.parametrize(("library", "home"), sorted(EDGES.items()))
def test_only_its_edge_package_imports(library: str, home: str) -> None:
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if library in imported_roots(path) and path.relative_to(PACKAGE).parts[0] != home
    ]
    assert offenders == [], f"{library} may only be imported under reconciler/{home}/"
