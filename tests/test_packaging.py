"""The package declares exactly what it imports.

Every third-party module that ``novakms/`` imports (read from the source, so lazy imports
count) belongs to a distribution named in ``[project] dependencies``, and every distribution
named there is imported by some module: nothing arrives only by luck (as a dependency of a
dependency), nothing is installed for nothing. Tests, benchmarks and tools declare theirs in
the extras.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_levels() -> dict[str, set[str]]:
    """Top-level module → the package modules that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "novakms").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _third_party(found: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        top: where
        for top, where in found.items()
        if top not in sys.stdlib_module_names and top not in ("novakms", "__future__")
    }


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


def test_every_imported_distribution_is_declared_and_every_declared_one_imported() -> None:
    owners = packages_distributions()
    imported: dict[str, set[str]] = {}
    for top, where in _third_party(_imported_top_levels()).items():
        assert top in owners, f"{top} (imported by {sorted(where)}) is not installed"
        for dist in owners[top]:
            imported.setdefault(canonicalize_name(dist), set()).update(where)
    declared = _declared()
    undeclared = {d: sorted(w) for d, w in imported.items() if d not in declared}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"
    unused = declared - set(imported)
    assert not unused, f"declared but never imported by novakms/: {sorted(unused)}"


def test_the_license_is_an_spdx_expression_and_the_classifiers_name_the_pythons() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639
    pythons = {c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if "Python :: 3." in c}
    assert pythons == {"3.11", "3.12", "3.13"}
    assert "Typing :: Typed" in project["classifiers"]
