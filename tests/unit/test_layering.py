"""The layers stay apart: import-linter contracts in pyproject.toml say who may import whom.

Pure stages never reach the store, clusters, git or the conductors; `kubernetes`,
`pygit2`, `structlog` and `subprocess` each have one home, so the report-mode guard,
the read-only-clone rule, the log format and the render sandbox each live, and are
checked, in one place. `make lint` runs `lint-imports`; these tests prove the
package keeps the contracts and that each contract fails on an import that breaks it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contract_ids() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as config:
        contracts = tomllib.load(config)["tool"]["importlinter"]["contracts"]
    return [contract["id"] for contract in contracts]


def lint_imports(project: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the package under `project` (it reads the package from its cwd)."""
    limit = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *limit],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def module_file(package_root: Path, module: str) -> Path:
    """The file holding `module`: a package's `__init__.py`, else a (maybe new) single file."""
    path = package_root.joinpath(*module.split("."))
    package = path / "__init__.py"
    return package if package.exists() else path.with_suffix(".py")


def test_the_package_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contract_ids())} kept, 0 broken." in result.stdout


# contract -> (module that gains the import, what it imports); `reconciler.offender`
# is a new module, so the case does not depend on how the package is split today.
VIOLATIONS = {
    "pure-stages": ("reconciler.model", "reconciler.store"),
    "conductors": ("reconciler.engine", "reconciler.daemon"),
    "edges": ("reconciler.store", "reconciler.cluster"),
    "kubernetes-home": ("reconciler.offender", "kubernetes"),
    "matrix-home": ("reconciler.notify.offender", "http"),
    "pygit2-home": ("reconciler.offender", "pygit2"),
    "structlog-home": ("reconciler.offender", "structlog"),
    "subprocess-home": ("reconciler.offender", "subprocess"),
}


def test_every_contract_has_a_violation_case() -> None:
    assert sorted(VIOLATIONS) == sorted(contract_ids())


@pytest.mark.parametrize(("contract", "edge"), sorted(VIOLATIONS.items()))
def test_a_contract_fails_on_an_import_that_breaks_it(
    tmp_path: Path, contract: str, edge: tuple[str, str]
) -> None:
    importer, imported = edge
    shutil.copytree(
        ROOT / "reconciler", tmp_path / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = module_file(tmp_path, importer)
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(f"{existing}\nimport {imported}\n", encoding="utf-8")

    result = lint_imports(tmp_path, contract)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken." in result.stdout
    assert f"{importer} -> {imported}" in result.stdout
