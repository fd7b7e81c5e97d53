"""benchmarks/gpu_training.py runs on tiny data, on the CPU, without Snakemake, scikit-fem or meshio."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import write_tiny_pair

ROOT = Path(__file__).resolve().parents[1]
# The GPU machine the benchmark is for has none of these: the script must not import them.
BLOCK = "import sys\nfor m in ('meshio', 'skfem', 'snakemake'):\n    sys.modules[m] = None\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_pair(tmp_path_factory.mktemp("tiny"))


def test_the_benchmark_trains_evaluates_and_compares_on_the_cpu(tiny, tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "--src", str(tiny.src), "--dst", str(tiny.dst), "--out", str(out), "--epochs", "1", "--steps", "5",
        "--threads", "1", "--configs", "cpu-fp32,cpu-bf16,cuda-fp32",
    ]
    code = BLOCK + f"sys.argv = ['gpu_training.py', *{args!r}]\nimport runpy\n" + (
        "runpy.run_path('benchmarks/gpu_training.py', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a configuration outside its tolerance
    report = json.loads(out.read_text())
    by_name = {r["config"]: r for r in report["results"]}
    assert list(by_name) == ["cpu-fp32", "cpu-bf16", "cuda-fp32"]
    for name in ("cpu-fp32", "cpu-bf16"):
        test = by_name[name]["metrics"]["test"]
        assert math.isfinite(test["mean over fields"]) and test["mean over fields"] > 0
        assert len(by_name[name]["epoch_seconds"]) == 1
    assert by_name["cpu-bf16"]["precision"] == "bf16"
    if not torch.cuda.is_available():
        assert "skipped" in by_name["cuda-fp32"]
    assert len(report["summary"]) == 3 and "base" in report["summary"][0]
    assert ("OUTSIDE" in proc.stdout) == (proc.returncode == 1)


def test_an_unreadable_configuration_name_is_refused(tiny, tmp_path):
    args = ["--src", str(tiny.src), "--dst", str(tiny.dst), "--out", str(tmp_path / "x.json"), "--configs", "gpu-fp8"]
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_training.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "ERROR --configs" in proc.stderr
    assert not (tmp_path / "x.json").exists()
