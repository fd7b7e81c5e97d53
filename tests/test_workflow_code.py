"""A change to library code invalidates exactly what that code makes (real snakemake CLI, tiny example)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from train_helpers import TINY_TRAIN
from workflow_helpers import job_counts

pytestmark = pytest.mark.integration

# Shorter still than the shared tiny training: this test is about what reruns, not about the model.
RERUN_TRAIN = {**TINY_TRAIN, "epochs": 1, "steps_per_epoch": 4}
PAIRS = {"coarse_medium", "coarse_fine", "medium_fine"}


def edit(path: Path, old: str, new: str) -> str:
    """Replace ``old`` once; return the original text."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return text


def planned(workflow) -> tuple[dict[str, int], dict[str, set[str]]]:
    """One dry run of ``all``: rule -> job count, and rule -> the reasons Snakemake gives for its jobs."""
    proc = workflow.run("-n", "all")
    out = proc.stdout + proc.stderr
    reasons: dict[str, set[str]] = {}
    rule = None
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("reason:") and rule:
            reasons.setdefault(rule, set()).add(line.split("reason: ", 1)[1].split(":")[0])
    return job_counts(out), reasons


def append(path: Path, text: str) -> str:
    """Append ``text`` to a module; return the original text."""
    original = path.read_text()
    path.write_text(original + text)
    return original


def test_library_edits_invalidate_exactly_the_outputs_of_that_code(workflow):
    workflow.update_config(train=RERUN_TRAIN)
    workflow.run("all", "--notemp")
    assert workflow.planned_jobs("all") == {}
    operator = workflow.root / "meshsr" / "interp" / "operator.py"
    plots = workflow.root / "meshsr" / "evaluate" / "plots.py"
    training = workflow.root / "meshsr" / "learn" / "training.py"

    # The operator is cache code: every cache, then what reads them; not the example data.
    original = edit(operator, 'METHOD = "p1-', 'METHOD = "p1-edited-')
    jobs, reasons = planned(workflow)
    assert jobs["pair_cache"] == 3 and jobs["train_model"] == 1 and "example_data" not in jobs, jobs
    assert reasons["pair_cache"] == {"Updated input files"}  # the marker of each cache's new key

    # Before any rebuild, every reader sees the caches for what they are.
    workflow.run("cache_info")
    rows = list(csv.DictReader((workflow.root / "results/cache_info.tsv").open(), delimiter="\t"))[:-1]
    assert {r["pair"]: r["status"] for r in rows} == dict.fromkeys(PAIRS, "stale")
    for row in rows:
        assert "built by other cache code (fingerprint " in row["detail"], row
        assert row["detail"].endswith(f"rebuild it with: snakemake --cores 1 --force {row['file']}")

    # The code as it was: the fingerprints match the records again, nothing to do.
    operator.write_text(original)
    assert workflow.planned_jobs("all") == {}

    # Training code: the model's own fingerprint retrains (and what follows), no cache.
    original = append(training, "\n_EDITED = True\n")
    jobs, reasons = planned(workflow)
    assert "pair_cache" not in jobs and jobs["training_batches"] == jobs["train_model"] == 1, jobs
    # the batches (kept by --notemp) carry the training code's fingerprint too; the model follows them
    assert reasons["training_batches"] == {"Params have changed since last execution"}
    training.write_text(original)

    # A comment in the plotting code changes no fingerprint; a code edit there replots only.
    append(plots, "\n# a comment changes nothing\n")
    assert workflow.planned_jobs("all") == {}
    append(plots, "\n_EDITED = True\n")
    jobs, reasons = planned(workflow)
    assert jobs == {"plot_model": 1, "all": 1}
    assert reasons["plot_model"] == {"Params have changed since last execution"}
