"""The package's dependency rules (stated in meshsr/__init__.py), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "meshsr"
SHARED = {"meshsr", "meshsr.__version__", "meshsr.errors", "meshsr.atomic"}  # every subpackage may use these
MAY_IMPORT = {
    "provenance": set(),
    "mesh": set(),
    "interp": {"mesh"},
    "cache": {"mesh", "interp", "provenance", "evaluate.norms"},
    "example": {"mesh"},
    "learn": {"provenance", "mesh", "interp", "cache", "example"},
    "evaluate": {"provenance", "mesh", "interp", "cache", "example", "learn", "evaluate"},
}
NUMERICAL = ("provenance", "mesh", "interp", "cache", "example", "evaluate.norms")
HEAVY = {"torch", "matplotlib", "snakemake", "pandas"}


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "meshsr":  # `from meshsr import learn` names a subpackage
                names.update(f"meshsr.{alias.name}" for alias in node.names)
    return names


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


def _allowed(module: str, imported: str) -> bool:
    sub = module.split(".")[1]
    if imported in SHARED or not imported.startswith("meshsr."):
        return True
    target = imported.removeprefix("meshsr.")
    if target.split(".")[0] == sub:
        return True
    return any(target == rule or target.startswith(rule + ".") for rule in MAY_IMPORT.get(sub, set()))


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent != PACKAGE], ids=_module)
def test_subpackage_imports_follow_the_dependency_rules(path):
    module = _module(path)
    bad = sorted(name for name in _imports(path) if not _allowed(module, name))
    assert not bad, f"{module} imports {bad}, outside what meshsr/__init__.py allows"


@pytest.mark.parametrize("path", [p for p in MODULES if _module(p).startswith(tuple(f"meshsr.{n}" for n in NUMERICAL))],
                         ids=_module)
def test_numerical_code_imports_no_torch_plotting_or_workflow(path):
    heavy = sorted(name for name in _imports(path) if name.split(".")[0] in HEAVY)
    assert not heavy, f"{_module(path)} imports {heavy}"


def test_only_plots_import_matplotlib_and_only_learning_code_imports_torch():
    for path in MODULES:
        module, top = _module(path), {name.split(".")[0] for name in _imports(path)}
        if "matplotlib" in top:
            assert module == "meshsr.evaluate.plots", module
        if "torch" in top:
            assert module.startswith(("meshsr.learn.", "meshsr.evaluate.metrics")), module
        assert "snakemake" not in top, module


def test_the_rules_see_every_subpackage():
    """A new subpackage must get a line in MAY_IMPORT (and in meshsr/__init__.py's table)."""
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(MAY_IMPORT)
    doc = (PACKAGE / "__init__.py").read_text()
    assert all(f"``meshsr.{name}``" in doc for name in subpackages)
