"""The data benchmarks run end to end on tiny inputs and print what they promise (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import noop  # noqa: E402


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cache_read_compares_the_reader_with_np_copy():
    out = run("cache_read.py", "--source-nodes", "200", "--target-nodes", "800", "--simulations", "1", "--frames", "3")
    for name in ("read_pair_cache", "np.copy", "np.load npz (CRC)"):
        assert f"{name}: median" in out
    assert "x np.copy" in out and "load average" in out


def test_training_data_splits_the_job_and_compares_peak_memory():
    out = run("training_data.py", "--simulations", "2", "3", "--epochs", "1", "--nodes", "100", "300", "--frames", "4")
    for part in ("read", "features", "batching", "side file", "batch reads", "validation", "epochs"):
        assert out.count(f"{part}:") >= 2
    assert out.count("data handling (features + batching)") == 2 and out.count("kept epoch 1") == 4
    assert out.count("data handling (side file + batch reads)") == 2 and out.count("training_batches job:") == 2
    assert out.count("same loss history as on the fly (every epoch, to the last bit): yes") == 2
    assert "peak RSS" in out and "load average" in out


def test_noop_times_a_workflow_and_refuses_one_with_work_to_do(tmp_path):
    (tmp_path / "Snakefile").write_text(noop.ONE_RULE)
    binary = noop.snakemake()
    with pytest.raises(SystemExit, match="has work to do"):
        noop.check_up_to_date(binary, tmp_path, [])
    wall, cpu, rss = noop.timed([binary, "--cores", "1"], tmp_path)
    assert (tmp_path / "a.txt").exists() and wall > 0 and cpu > 0 and rss > 0
    noop.check_up_to_date(binary, tmp_path, [])
