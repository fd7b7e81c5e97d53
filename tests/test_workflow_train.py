"""The train / evaluate / plot rules through the real snakemake CLI on the tiny example."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from train_helpers import TINY_TRAIN
from workflow_helpers import REPO, Workflow, copy_workflow

pytestmark = pytest.mark.integration
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
    assert "use_cache: false" in (root / "results/logs/batches/coarse_fine.log").read_text()
    assert not list(root.glob("results/batches/*"))  # temp(): removed once the model was written
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

    columns = {"split", "simulation", "field", "rel_l2_interp", "rel_l2_model", "rmse_interp", "rmse_model"}
    assert columns <= set(cached.columns)
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
    assert "results/models/coarse_medium.pt" in out and not re.search(r"(?<![a-z])fine\b", out)  # not "defines"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train": {"pairs": [["coarse", "huge"]]}}, "unknown resolution 'huge'"),
        ({"train": {"pairs": [["fine", "coarse"]]}}, "[fine, coarse] is not in order"),
        ({"train": {"test_simulations": [0], "validation_simulations": [1, 2]}}, "empty training split"),
    ],
    ids=["unknown-resolution", "pair-not-in-order", "empty-training-split"],
)
def test_bad_train_settings_fail_before_any_work(workflow, changes, message):
    workflow.update_config(**changes)
    proc = workflow.run("all", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (Path(workflow.root) / "results").exists()


# --- what a settings change reruns: each test changes a clone of one tiny `all` run ----------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workflow:
    """A tiny `all` run (three resolutions, the default pair coarse_fine); tests never change it."""
    wf = copy_workflow(tmp_path_factory.mktemp("built") / "wf")
    wf.update_config(train=TINY_TRAIN)
    wf.run("all")
    return wf


@pytest.fixture
def clone(built, tmp_path) -> Workflow:
    return built.clone(tmp_path / "wf")


def planned_after(wf: Workflow, **train_changes) -> dict[str, int]:
    """Jobs of `all` after changing the train section; the `all` rule itself left out."""
    wf.update_config(train={**TINY_TRAIN, **train_changes})
    return {rule: n for rule, n in wf.planned_jobs("all").items() if rule != "all"}


def planned_outputs(wf: Workflow) -> str:
    """The output lines of a dry run of `all`."""
    out = wf.run("-n", "all").stdout
    return "\n".join(line for line in out.splitlines() if line.strip().startswith("output:"))


def test_the_built_copy_is_up_to_date(built):
    assert built.planned_jobs("all") == {}


def test_panel_frame_replots_only(clone):
    assert planned_after(clone, panel_frame=2) == {"plot_model": 1}
    clone.run("all")
    assert clone.planned_jobs("all") == {}


def test_listing_the_default_pair_plans_nothing(clone):
    assert planned_after(clone, pairs=[["coarse", "fine"]]) == {}


def test_a_new_pair_plans_only_its_own_jobs(clone):
    assert planned_after(clone, pairs=[["coarse", "fine"], ["coarse", "medium"]]) == {
        "training_batches": 1,
        "train_model": 1,
        "evaluate_model": 1,
        "plot_model": 1,
    }
    outputs = planned_outputs(clone)
    assert "results/models/coarse_medium.pt" in outputs and "coarse_fine" not in outputs


@pytest.mark.parametrize("changes", [{"threads": 2}, {"device": "cpu"}, {"threads": 2, "device": "cpu"}])
def test_run_time_settings_plan_nothing(clone, changes):
    assert planned_after(clone, **changes) == {}


def test_a_model_setting_retrains_the_pair(clone):
    # the batches are temp(): removed after training, so a retrain draws them again (the same rows)
    retrain = {"training_batches": 1, "train_model": 1, "evaluate_model": 1, "plot_model": 1}
    assert planned_after(clone, hidden=16) == retrain


def test_kept_batches_serve_every_setting_but_the_sampling(clone):
    """With --notemp the batches stay: an optimisation setting retrains from them; a sampling setting redraws."""
    clone.update_config(train={**TINY_TRAIN, "hidden": 16})
    clone.run("all", "--notemp")
    batches = clone.root / "results" / "batches" / "coarse_fine.npy"
    assert batches.is_file()
    for change in ({"lr": 1e-3}, {"weight_decay": 1e-4}, {"layers": 3}, {"precision": "bf16"}):
        assert planned_after(clone, hidden=16, **change) == {"train_model": 1, "evaluate_model": 1, "plot_model": 1}
    for change in ({"seed": 1}, {"batch_size": 512}, {"epochs": 2}, {"test_simulations": [0]}):
        assert planned_after(clone, hidden=16, **change)["training_batches"] == 1, change
