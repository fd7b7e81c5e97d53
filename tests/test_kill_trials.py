"""A short run of benchmarks/kill_trials.py: kill -9 mid-job never leaves a file readers accept wrongly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_trials.py"


@pytest.mark.integration
def test_killed_cache_and_training_jobs_leave_nothing_wrong_and_recover():
    args = ["--cache-trials", "3", "--train-trials", "2", "--source-nodes", "300", "--target-nodes", "2000",
            "--simulations", "3", "--frames", "5", "--seed", "1"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, check=True)
    counts = {}
    for label, body in re.findall(r"^(cache|training): \d+ kill -9 trials: (.*)$", proc.stdout, re.M):
        counts[label] = {k: int(v) for k, v in (item.rsplit(" ", 1) for item in body.split(", "))}
    assert set(counts) == {"cache", "training"}, proc.stdout
    assert counts["cache"]["accepted-wrong"] == 0 and counts["training"]["accepted-wrong"] == 0
    assert counts["cache"]["recovered"] == 3 and counts["training"]["recovered"] == 2
    assert sum(counts["cache"][k] for k in ("absent", "refused", "accepted-equal")) == 3
