"""One long simulation (S = 1) through the real snakemake CLI: caches never need training settings, training
splits by frames, a zero first frame stays readable in frames.csv, and the report opens on the headline table."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from train_helpers import TINY_TRAIN
from workflow_helpers import Workflow

from meshsr.example.solver import ExampleSettings, generate_example
from meshsr.mesh.bundle import save_bundle

pytestmark = pytest.mark.integration


def one_simulation(workflow: Workflow, frames: int, zero_first_frame: bool = False) -> None:
    """Bundles runs/coarse.npz and runs/fine.npz of ONE simulation of ``frames`` frames as the config's meshes."""
    runs = workflow.root / "runs"
    runs.mkdir(exist_ok=True)
    settings = ExampleSettings(n_simulations=1, n_frames=frames)
    for i, (name, nodes) in enumerate((("coarse", 200), ("fine", 500))):
        bundle = generate_example(n_nodes=nodes, mesh_seed=1000 + i, settings=settings)
        if zero_first_frame:  # a run starting from rest: the first stored frame is all zero
            fields = np.array(bundle.fields, copy=True)
            fields[:, 0] = 0.0
            bundle = replace(bundle, fields=fields)
        save_bundle(runs / f"{name}.npz", bundle)
    config = workflow.config()
    config["meshes"] = {"coarse": "runs/coarse.npz", "fine": "runs/fine.npz"}
    config.pop("train", None)  # the default training settings
    workflow.write_config(config)


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("ERROR ")]


def test_caches_of_a_two_frame_run_need_no_training_settings_and_training_says_why_not(workflow):
    one_simulation(workflow, frames=2)
    workflow.run("caches")
    workflow.run("cache_info")
    assert (workflow.root / "results/cache/coarse_fine.npz").exists()
    assert "coarse_fine" in (workflow.root / "results/cache_info.tsv").read_text()
    for target in ("all", "results/models/coarse_fine.pt", "results/metrics/coarse_fine.csv"):
        proc = workflow.run("-n", target, check=False)
        assert proc.returncode != 0
        (line,) = error_lines(proc)
        assert line.startswith("ERROR config key 'train.test_fraction': one simulation of 2 frame(s)"), line
        assert "provide at least 3 frames or at least 2 simulations" in line and "S = 1, T = 2" in line


def test_one_simulation_trains_on_a_frame_split_and_the_report_shows_the_headline(workflow):
    one_simulation(workflow, frames=10, zero_first_frame=True)
    workflow.run("caches")  # the default settings: fine for caches
    workflow.update_config(train=TINY_TRAIN)
    workflow.run("all")
    root = workflow.root

    log = (root / "results/logs/train/coarse_fine.log").read_text()
    assert "splits: by frames: simulation(s) [0]: train frames 0-5, validation frames 6-7, test frames 8-9" in log
    metrics = pd.read_csv(root / "results/metrics/coarse_fine.csv")
    assert metrics.drop_duplicates("split")[["split", "frames"]].values.tolist() == [
        ["train", "0-5"], ["validation", "6-7"], ["test", "8-9"]
    ]
    assert np.isfinite(metrics[["rel_l2_interp", "rel_l2_model"]].to_numpy()).all()
    assert "by frames" in (root / "results/metrics/coarse_fine.html").read_text()

    frames = pd.read_csv(root / "results/metrics/coarse_fine.frames.csv")
    first = frames[frames.frame == 0]
    assert first.zero_truth.all() and first.rel_l2_model.isna().all() and (first.l2_interp >= 0).all()
    assert frames.rel_l2_model.max() < 10 and frames.time.notna().all()  # no 6.6e+150

    headline = pd.read_csv(root / "results/metrics/coarse_fine.headline.csv", dtype=str)
    assert headline["held out"].unique().tolist() == ["frames 8-9 of simulation 0"]
    workflow.run("--report", "report.html")
    html = (root / "report.html").read_text(errors="replace")
    assert "Headline: interpolation vs model" in html and "runs/coarse.npz" in html
    assert "System Message" not in html  # the description's RST rendered cleanly
    for row in headline.itertuples():
        for value in (row.field, row[4], row[5], row[6]):  # interpolation %, model %, lower by
            assert f"<td>{value}</td>" in html, value
