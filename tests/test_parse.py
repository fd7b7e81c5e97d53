"""The Snakefile parse stays lean: no torch, matplotlib, scipy or pandas for a dry run or a no-op.

Snakemake's own start-up may load some of them (its executor plugins are imported to build its
command line: the Slurm plugin imports pandas), so the parse is compared with a one-rule
workflow's under the same Snakemake: what meshsr adds must be none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PARSE_AND_REPORT = """
import json, sys
from snakemake.cli import main
try:
    main(["--cores", "1", "-n", "--quiet", "rules", sys.argv[1]])
except SystemExit as exc:
    code = exc.code
HEAVY = ("torch", "matplotlib", "scipy", "pandas", "numba")
print(json.dumps({"exit": code, "loaded": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def parse_report(workdir: Path, target: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    proc = subprocess.run(
        [sys.executable, "-c", PARSE_AND_REPORT, target], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0, proc.stderr
    return report, proc.stdout + proc.stderr


@pytest.mark.integration
def test_dry_run_parse_imports_neither_torch_nor_matplotlib(workflow, tmp_path):
    one_rule = tmp_path / "one-rule"
    one_rule.mkdir()
    rule = 'rule all:\n    output:\n        "done.txt",\n    shell:\n        "touch {output}"\n'
    (one_rule / "Snakefile").write_text(rule)
    baseline, _ = parse_report(one_rule, "all")
    report, out = parse_report(workflow.root, "all")
    assert "train_model" in out  # the dry run really planned the workflow
    added = sorted(set(report["loaded"]) - set(baseline["loaded"]))
    assert added == [], f"the parse imported {added} (Snakemake alone: {baseline['loaded']})"
    assert not {"torch", "matplotlib", "scipy", "numba"} & set(baseline["loaded"])  # what the check can see
