"""The train / evaluate / plot rules through the real snakemake CLI on the tiny example."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.integration

# Small but not trivial: the held-out simulation must still show the model's gain.
TINY_TRAIN = {
    "hidden": 32,
    "layers": 2,
    "epochs": 4,
    "steps_per_epoch": 60,
    "batch_size": 1024,
    "threads": 1,
}
OUTPUTS = [
    "results/models/coarse_fine.pt",
    "results/models/coarse_fine_history.csv",
    "results/metrics/coarse_fine.csv",
    "results/metrics/coarse_fine.html",
    "results/plots/coarse_fine_loss.png",
    "results/plots/coarse_fine_panel.png",
    "results/plots/coarse_fine_error_time.png",
]


def with_captions(workflow):
    # The report's captions live in report/ (not among the fixture's copied paths).
    shutil.copytree(REPO / "report", workflow.root / "report", dirs_exist_ok=True)
    return workflow


def two_meshes(workflow):
    """Only coarse and fine: fewer example and cache jobs, same code paths."""
    config = workflow.config()
    config["meshes"] = {k: v for k, v in config["meshes"].items() if k in ("coarse", "fine")}
    config["example"]["nodes"] = {k: v for k, v in config["example"]["nodes"].items() if k in ("coarse", "fine")}
    workflow.write_config(config)


def test_all_without_cache_then_with_cache_same_model_and_report(workflow):
    with_captions(workflow)
    two_meshes(workflow)
    root = workflow.root
    metrics = "results/metrics/coarse_fine.csv"

    # use_cache: false -- everything is built in memory, cache_dir never appears
    workflow.update_config(train=TINY_TRAIN, use_cache=False)
    workflow.run("all")
    assert not (root / "results" / "cache").exists()
    for path in OUTPUTS:
        assert (root / path).stat().st_size > 0, path
    assert "use_cache: false" in (root / "results/logs/train/coarse_fine.log").read_text()
    in_memory = pd.read_csv(root / metrics)

    report = workflow.run("--report", "report.html")
    html = (root / "report.html").read_text(errors="replace")
    assert report.returncode == 0 and "coarse_fine_panel.png" in html and "coarse_fine.html" in html

    # use_cache: true -- the cache is built and read; bit-identical arrays and the same
    # seed give the very same model and metrics (training twice also shows a rerun
    # reproduces them)
    workflow.update_config(train=TINY_TRAIN, use_cache=True)
    workflow.run(metrics)
    assert (root / "results/cache/coarse_fine.npz").exists()
    cached = pd.read_csv(root / metrics)
    pd.testing.assert_frame_equal(in_memory, cached)

    assert {"split", "simulation", "field", "rel_l2_interp", "rel_l2_model", "rmse_interp", "rmse_model"} <= set(cached.columns)
    assert len(cached) == 3 * 2  # 3 simulations x 2 fields
    test = cached[cached.split == "test"]
    assert test.simulation.unique().tolist() == [2]
    gain = test.rel_l2_interp.mean() / test.rel_l2_model.mean()
    assert gain >= 1.3, f"model only {gain:.2f}x better than interpolation on the held-out simulation"

    state = torch.load(root / "results/models/coarse_fine.pt", weights_only=True)
    assert state["splits"]["test"] == [2] and state["model"]["kind"] == "mlp"
    train_log = (root / "results/logs/train/coarse_fine.log").read_text()
    assert train_log.count("epoch 4/4") == 1 and "kept epoch" in train_log
    assert "test split, mean over fields" in (root / "results/logs/evaluate/coarse_fine.log").read_text()

    assert workflow.planned_jobs(metrics) == {}  # up to date: nothing reruns
    workflow.update_config(train={**TINY_TRAIN, "seed": 3}, use_cache=True)
    assert workflow.planned_jobs(metrics).get("train_model") == 1  # a changed setting retrains


def test_every_pair_in_train_pairs_gets_its_jobs(workflow):
    workflow.update_config(train={**TINY_TRAIN, "pairs": [["coarse", "medium"], ["medium", "fine"]]})
    planned = workflow.planned_jobs("all")
    assert planned["train_model"] == 2 and planned["evaluate_model"] == 2 and planned["plot_model"] == 2
    # without train.pairs: coarsest -> finest of whatever 'meshes' holds
    config = workflow.config()
    config["meshes"].pop("fine")
    config["train"] = dict(TINY_TRAIN)
    workflow.write_config(config)
    out = workflow.run("-n", "all").stdout
    assert "results/models/coarse_medium.pt" in out and "fine" not in out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train": {"pairs": [["coarse", "huge"]]}}, "unknown resolution 'huge'"),
        ({"train": {"pairs": [["fine", "coarse"]]}}, "[fine, coarse] is not in order"),
        ({"train": {"test_simulations": [0], "validation_simulations": [1, 2]}}, "empty training split"),
    ],
)
def test_bad_train_settings_fail_before_any_work(workflow, changes, message):
    workflow.update_config(**changes)
    proc = workflow.run("all", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (Path(workflow.root) / "results").exists()
