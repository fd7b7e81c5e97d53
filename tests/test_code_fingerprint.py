"""Code fingerprints (meshsr.provenance.code): what they cover, what changes them, what they cost."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshsr.provenance import code
from meshsr.provenance.code import OUTPUT_CODE, code_closure, code_fingerprint, output_fingerprint

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(code.__file__).resolve().parents[1]  # the meshsr this process imports
SCRIPT_OF = {
    "example_data": "example_data.py",
    "pair_cache": "pair_cache.py",
    "training_batches": "training_batches.py",
    "train_model": "train.py",
    "evaluate_model": "evaluate.py",
    "plot_model": "plots.py",
    "upsample": "upsample.py",
    "ingest_mesh": "ingest_mesh.py",
}
NOT_OUTPUT_CODE = {"meshsr.jobs"}  # logging and one-line failures: shapes no output


@pytest.fixture
def pkg(tmp_path, monkeypatch) -> Path:
    """A copy of the meshsr package that the fingerprints read instead of the real one."""
    copy = tmp_path / "meshsr"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "_search_locations", lambda: [copy])
    return copy


def fingerprints() -> dict[str, str]:
    return {rule: output_fingerprint(rule) for rule in OUTPUT_CODE}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_closures_hold_the_code_of_each_output_and_nothing_of_the_others():
    cache = set(code_closure(OUTPUT_CODE["pair_cache"]))
    expected = {"meshsr", "meshsr.cache", "meshsr.cache.build", "meshsr.cache.format", "meshsr.interp.operator"}
    assert expected | {"meshsr.interp.locate", "meshsr.mesh.geometry", "meshsr.evaluate.norms"} <= cache
    assert not {m for m in cache if m.startswith("meshsr.learn") or m == "meshsr.evaluate.plots"}
    plots = set(code_closure(OUTPUT_CODE["plot_model"]))
    assert "meshsr.evaluate.plots" in plots and not plots & {"meshsr.cache.build", "meshsr.learn.training"}
    assert "meshsr.interp.operator" in plots  # a 3D panel's slice takes its P1 values from the operator
    assert cache <= set(code_closure(OUTPUT_CODE["train_model"]))  # a model depends on how its cache is made
    assert "meshsr.evaluate.plots" not in code_closure(OUTPUT_CODE["train_model"] + OUTPUT_CODE["evaluate_model"])
    example = set(code_closure(OUTPUT_CODE["example_data"]))
    assert {"meshsr.example.solver", "meshsr.mesh.bundle"} <= example and "meshsr.cache.build" not in example


def test_imports_under_type_checking_are_not_followed():
    source = (PACKAGE / "cache" / "freshness.py").read_text()
    assert "if TYPE_CHECKING:\n    from meshsr.cache.format import" in source  # what this test relies on
    assert "meshsr.cache.format" not in code_closure(["meshsr.cache.freshness"])


@pytest.mark.parametrize("rule", list(OUTPUT_CODE))
def test_every_module_a_rule_script_imports_is_in_its_declared_closure(rule):
    """OUTPUT_CODE stays honest: what the job imports (but logging) is what its fingerprint covers."""
    tree = ast.parse((REPO / "scripts" / SCRIPT_OF[rule]).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.startswith("meshsr")}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    missing = {m for m in imported if m.startswith("meshsr")} - NOT_OUTPUT_CODE - set(code_closure(OUTPUT_CODE[rule]))
    assert not missing, f"scripts/{SCRIPT_OF[rule]} imports {missing}: add them to OUTPUT_CODE[{rule!r}]"


def test_every_rule_that_writes_outputs_has_its_code_param():
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    rules = re.split(r"^ *(?:rule|checkpoint) ", text, flags=re.M)  # ingest_mesh is indented under an if
    with_outputs = {body.split(":", 1)[0]: body for body in rules[1:] if re.search(r"\n +output:", body)}
    assert set(with_outputs) == set(OUTPUT_CODE)
    for name, body in with_outputs.items():
        assert f'code=code_of("{name}")' in body, name


def test_comments_docstrings_and_formatting_change_nothing(pkg):
    before = fingerprints()
    op = pkg / "interp" / "operator.py"
    edit(op, '"""The interpolation operator:', '"""Reworded docstring.\n\nThe interpolation operator:')
    edit(op, 'METHOD = "p1', '# a new comment\n\n\nMETHOD = (\n    "p1')
    edit(op, 'fallback"\n', 'fallback"  # trailing\n)\n')
    edit(op, '"""Locate every destination point in the source cells and assemble W."""', '"""Other words."""')
    assert fingerprints() == before


def test_a_code_edit_changes_exactly_the_outputs_whose_closure_holds_it(pkg):
    before = fingerprints()
    edit(pkg / "interp" / "operator.py", 'METHOD = "p1-', 'METHOD = "p1-edited-')
    after = fingerprints()
    changed = {rule for rule in before if after[rule] != before[rule]}
    assert changed == {"pair_cache", "training_batches", "train_model", "evaluate_model", "upsample", "plot_model"}

    edit(pkg / "evaluate" / "plots.py", "import matplotlib\n", "import matplotlib\n\nEDITED = 1\n")
    assert {rule for rule in after if fingerprints()[rule] != after[rule]} == {"plot_model"}


def test_the_fingerprint_pairs_code_with_module_names_and_follows_new_imports(pkg):
    op = pkg / "interp" / "operator.py"
    edit(op, "from meshsr.atomic", "from meshsr.interp import one, two\nfrom meshsr.atomic")
    (pkg / "interp" / "one.py").write_text("X = 1\n")
    (pkg / "interp" / "two.py").write_text("X = 2\n")
    before = code_fingerprint(["meshsr.interp.operator"])
    (pkg / "interp" / "one.py").write_text("X = 2\n")
    (pkg / "interp" / "two.py").write_text("X = 1\n")
    assert code_fingerprint(["meshsr.interp.operator"]) != before  # the same code, in other modules

    edit(op, "    def apply(", "    def helper(self):\n        from . import mine\n\n    def apply(")
    edit(op, "from meshsr.atomic", "if TYPE_CHECKING:\n    import meshsr.interp.typing_only\nfrom meshsr.atomic")
    (pkg / "interp" / "mine.py").write_text("X = 1\n")
    (pkg / "interp" / "typing_only.py").write_text("Y = 1\n")
    closure = code_closure(["meshsr.interp.operator"])
    assert "meshsr.interp.mine" in closure and "meshsr.interp.typing_only" not in closure


def test_unknown_roots_and_rules_are_refused():
    with pytest.raises(ModuleNotFoundError, match="no module meshsr.nowhere"):
        code_fingerprint(["meshsr.nowhere"])
    with pytest.raises(KeyError, match="no library code declared for rule 'caches'"):
        output_fingerprint("caches")


FROM_PYTHONPATH = """
import json, sys, time
start = time.perf_counter()
from meshsr.provenance.code import OUTPUT_CODE, output_fingerprint
prints = {rule: output_fingerprint(rule) for rule in OUTPUT_CODE}
seconds = time.perf_counter() - start
import meshsr
heavy = sorted(m for m in ("torch", "matplotlib", "scipy", "numpy") if m in sys.modules)
print(json.dumps({"prints": prints, "heavy": heavy, "seconds": seconds, "package": meshsr.__file__}))
"""


def test_a_fresh_process_fingerprints_the_package_on_pythonpath_without_importing_it(tmp_path):
    """What the Snakefile parse does: the meshsr first on PYTHONPATH (a workflow copy), nothing heavy imported."""
    shutil.copytree(PACKAGE, tmp_path / "meshsr", ignore=shutil.ignore_patterns("__pycache__"))
    edit(tmp_path / "meshsr" / "interp" / "operator.py", 'METHOD = "p1-', 'METHOD = "p1-edited-')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    # cwd: `python -c` puts it first on sys.path, and the cwd of these tests holds the real meshsr
    proc = subprocess.run(
        [sys.executable, "-c", FROM_PYTHONPATH], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(proc.stdout)
    assert Path(report["package"]).parent == tmp_path / "meshsr"
    assert report["heavy"] == [], f"fingerprinting imported {report['heavy']}"
    here = fingerprints()
    assert report["prints"]["pair_cache"] != here["pair_cache"]  # the edited copy, not this checkout
    assert report["prints"]["example_data"] == here["example_data"]
    assert report["seconds"] < 2.0  # a few tens of ms; generous for a loaded CI machine
