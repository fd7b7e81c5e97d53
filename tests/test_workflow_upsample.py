"""The upsample rule through the real snakemake CLI on the tiny example: the held-out simulation, a foreign mesh."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from train_helpers import TINY_TRAIN

from meshsr.mesh.bundle import load_bundle
from meshsr.mesh.xdmf import write_time_series

pytestmark = pytest.mark.integration
TEST_SIM = 2  # train.test_simulations [-1] of the tiny example's 3 simulations
OUT = "results/upsampled/held-out"


def upsample_config(workflow, **runs) -> None:
    config = workflow.config()
    config["meshes"] = {k: v for k, v in config["meshes"].items() if k in ("coarse", "fine")}
    config["example"]["nodes"] = {k: v for k, v in config["example"]["nodes"].items() if k in ("coarse", "fine")}
    config["train"] = TINY_TRAIN
    config["upsample"] = runs
    workflow.write_config(config)


def relative_l2(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per field over frames and nodes, (T, N, F) -> (F,), in float64."""
    diff = estimate.astype(np.float64) - truth
    return np.sqrt((diff**2).sum(axis=(0, 1)) / (truth**2).sum(axis=(0, 1)))


def test_the_held_out_simulation_upsampled_is_what_evaluation_scored(workflow):
    held_out = {"input": "results/example/coarse.npz", "pair": ["coarse", "fine"], "simulation": TEST_SIM}
    upsample_config(workflow, **{"held-out": held_out})
    workflow.run("all")
    root = workflow.root
    assert torch.load(root / "results/models/coarse_fine.pt", weights_only=True)["splits"]["test"] == [TEST_SIM]
    assert (root / f"{OUT}.h5").is_file() and "held-out.h5:/" in (root / f"{OUT}.xdmf").read_text()

    with np.load(root / f"{OUT}.npz", allow_pickle=False) as npz:
        prediction, baseline, names = npz["fields"][0], npz["baseline"][0], npz["field_names"].tolist()
    with np.load(root / "results/metrics/coarse_fine_panel.npz", allow_pickle=False) as panel:
        assert int(panel["simulation"]) == TEST_SIM
        np.testing.assert_allclose(prediction, panel["prediction"], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(baseline, panel["interp"])
    truth = load_bundle(root / "results/example/fine.npz").fields[TEST_SIM].astype(np.float64)
    metrics = pd.read_csv(root / "results/metrics/coarse_fine.csv")
    row = metrics[metrics.simulation == TEST_SIM].set_index("field").loc[names]
    assert (row.split == "test").all()
    np.testing.assert_allclose(relative_l2(prediction, truth), row.rel_l2_model, rtol=1e-5)
    np.testing.assert_allclose(relative_l2(baseline, truth), row.rel_l2_interp, rtol=1e-5)

    # Nothing reruns; another simulation of the run reruns the upsample job only.
    assert workflow.planned_jobs("all") == {}
    held_out["simulation"] = 0
    upsample_config(workflow, **{"held-out": held_out})
    assert workflow.planned_jobs("all") == {"upsample": 1, "all": 1}

    # A run on the fine mesh is not on the pair's source mesh: one ERROR line, nothing written.
    foreign = {"input": "results/example/fine.npz", "pair": ["coarse", "fine"]}
    upsample_config(workflow, **{"held-out": held_out, "foreign": foreign})
    proc = workflow.run("results/upsampled/foreign.npz", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR ")]
    assert errors == [
        "ERROR results/example/fine.npz: run is not on the mesh of resolution 'coarse' (points and cells differ: "
        f"{len(truth[0])} nodes, {len(load_bundle(root / 'results/example/fine.npz').cells)} cells vs "
        f"{load_bundle(root / 'results/example/coarse.npz').n_nodes} nodes, "
        f"{len(load_bundle(root / 'results/example/coarse.npz').cells)} cells); solve it on that mesh, "
        "or upsample it with a pair whose source is its mesh"
    ]
    assert not list((root / "results/upsampled").glob("foreign*"))

    # The same run as a meshio XDMF time series (another file, the same mesh): ingested, then the same numbers.
    coarse = load_bundle(root / "results/example/coarse.npz")
    series = {name: coarse.fields[TEST_SIM, :, :, j] for j, name in enumerate(names)}
    write_time_series(root / "runs" / "new.xdmf", coarse.points, coarse.cells, coarse.times, series)
    from_xdmf = {"input": "runs/new.xdmf", "pair": ["coarse", "fine"]}
    upsample_config(workflow, **{"held-out": held_out, "from-xdmf": from_xdmf})
    workflow.run("results/upsampled/from-xdmf.npz")
    with np.load(root / "results/upsampled/from-xdmf.npz", allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["fields"][0], prediction, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(npz["times"], coarse.times)


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (
            {"input": "data/none.npz", "pair": ["coarse", "fine"]},
            "ERROR config key 'upsample.new-run.input': input file data/none.npz does not exist; correct the path or "
            "put the file there",
        ),
        (
            {"input": "results/example/fine.npz", "pair": ["fine", "coarse"]},
            "ERROR config key 'upsample.new-run.pair': no pair [fine, coarse]; name two resolutions of config "
            "'meshes', coarser first (coarse < fine)",
        ),
    ],
    ids=["missing-input", "not-a-pair"],
)
def test_a_bad_upsample_entry_stops_planning_in_one_line(workflow, entry, line):
    upsample_config(workflow, **{"new-run": entry})
    proc = workflow.run("-n", "all", check=False)
    assert proc.returncode != 0
    assert [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("ERROR")] == [line]
    assert not (workflow.root / "results" / "upsampled").exists()


def test_without_a_cache_an_upsample_plans_no_cache_job(workflow):
    run = {"input": "results/example/coarse.npz", "pair": ["coarse", "fine"]}
    upsample_config(workflow, **{"new-run": run})
    workflow.update_config(use_cache=False)
    jobs = workflow.planned_jobs("results/upsampled/new-run.xdmf")
    assert jobs == {"example_data": 2, "training_batches": 1, "train_model": 1, "upsample": 1}
