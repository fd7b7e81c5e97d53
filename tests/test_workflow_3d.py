"""The 3D example (config/example-3d.yaml) end to end through the real snakemake CLI, as CI runs it."""

from __future__ import annotations

import contextlib

import meshio
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, copy_workflow

from meshsr.example.cube import lattice_size
from meshsr.mesh.bundle import load_bundle

pytestmark = pytest.mark.integration

CONFIG = "config/example-3d.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    """The workflow copy after `snakemake --configfile config/example-3d.yaml --cores 2 all`, as README says.

    The file replaces config/config.yaml (whose example has three resolutions): nothing of it may leak in.
    """
    wf = copy_workflow(tmp_path_factory.mktemp("wf3d"))
    wf.run("all", "--configfile", CONFIG, cores=2)  # targets first: --configfile takes several values
    return wf, yaml.safe_load((REPO / CONFIG).read_text())


def test_tetrahedral_example_bundles_are_independent_meshes_of_the_cube(run_3d):
    wf, config = run_3d
    bundles = {res: load_bundle(wf.root / f"results/example/{res}.npz") for res in ("coarse", "fine")}  # validated
    example = config["example"]
    for res, bundle in bundles.items():
        assert bundle.points.shape == (lattice_size(example["nodes"][res]) ** 3, 3) and bundle.cells.shape[1] == 4
        assert bundle.fields.shape == (example["simulations"], example["frames"], bundle.n_nodes, 2)
        assert np.isfinite(bundle.fields).all() and np.abs(bundle.fields).max() > 0
        np.testing.assert_allclose(bundle.points.min(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(bundle.points.max(axis=0), 1.0, atol=1e-12)
    shared = {tuple(p) for p in bundles["coarse"].points} & {tuple(p) for p in bundles["fine"].points}
    assert len(shared) <= 8  # the corners at most: not one mesh a refinement of the other
    assert sorted(p.name for p in (wf.root / "results/example").glob("*.npz")) == ["coarse.npz", "fine.npz"]


def test_metrics_compare_the_model_with_interpolation(run_3d):
    wf, _ = run_3d
    assert sorted(p.name for p in (wf.root / "results/cache").glob("*.npz")) == ["coarse_fine.npz"]
    metrics = pd.read_csv(wf.root / "results/metrics/coarse_fine.csv")
    test = metrics[metrics["split"] == "test"]
    assert sorted(test["field"]) == ["heat", "tracer"]
    errors = metrics[["rel_l2_interp", "rel_l2_model"]].to_numpy()
    assert np.isfinite(errors).all() and (errors > 0).all()
    train = metrics[metrics["split"] == "train"]
    assert (train["rel_l2_model"] < train["rel_l2_interp"]).all()  # fitted there: it must beat interpolation
    frames = pd.read_csv(wf.root / "results/metrics/coarse_fine.frames.csv")
    assert np.isfinite(frames[["rel_l2_interp", "rel_l2_model"]].to_numpy()).all()


def test_the_held_out_run_is_upsampled_to_a_tetrahedral_xdmf(run_3d):
    wf, config = run_3d
    fine = load_bundle(wf.root / "results/example/fine.npz")
    with np.load(wf.root / "results/upsampled/test-run.npz", allow_pickle=False) as npz:
        prediction, baseline = npz["fields"], npz["baseline"]
    with np.load(wf.root / "results/metrics/coarse_fine_panel.npz", allow_pickle=False) as panel:
        assert int(panel["simulation"]) == config["upsample"]["test-run"]["simulation"]
        np.testing.assert_array_equal(prediction[0], panel["prediction"])  # the predictions behind the metrics
        np.testing.assert_array_equal(baseline[0], panel["interp"])
    with meshio.xdmf.TimeSeriesReader(wf.root / "results/upsampled/test-run.xdmf") as reader:
        points, cells = reader.read_points_cells()
        assert [block.type for block in cells] == ["tetra"] and len(cells[0].data) == len(fine.cells)
        np.testing.assert_allclose(points, fine.points)
        assert reader.num_steps == fine.n_frames
        time, point_data, _ = reader.read_data(fine.n_frames - 1)
    assert time == pytest.approx(fine.times[-1])
    np.testing.assert_array_equal(point_data["heat_prediction"], prediction[0, -1, :, fine.field_names.index("heat")])


def test_a_tetrahedral_xdmf_run_is_ingested_and_upsampled_like_the_bundle(run_3d):
    """The held-out coarse run as a user's solver would write it (meshio XDMF time series), upsampled."""
    wf, config = run_3d
    coarse = load_bundle(wf.root / "results/example/coarse.npz")
    s = config["upsample"]["test-run"]["simulation"]
    (wf.root / "runs").mkdir()
    with contextlib.chdir(wf.root / "runs"), meshio.xdmf.TimeSeriesWriter("coarse-test.xdmf") as writer:
        writer.write_points_cells(coarse.points, [("tetra", coarse.cells)])  # the .h5 goes to the working directory
        for t, time in enumerate(coarse.times):
            writer.write_data(time, point_data={n: coarse.fields[s, t, :, f] for f, n in enumerate(coarse.field_names)})
    mine = {**config, "upsample": {"from-xdmf": {"input": "runs/coarse-test.xdmf", "pair": ["coarse", "fine"]}}}
    (wf.root / "my.yaml").write_text(yaml.safe_dump(mine, sort_keys=False))
    target = "results/upsampled/from-xdmf.npz"
    assert wf.planned_jobs(target, "--configfile", "my.yaml") == {"ingest_mesh": 1, "upsample": 1}
    wf.run(target, "--configfile", "my.yaml")
    with (
        np.load(wf.root / target, allow_pickle=False) as ours,
        np.load(wf.root / "results/upsampled/test-run.npz", allow_pickle=False) as bundled,
    ):
        for name in ("points", "cells", "fields", "baseline", "times"):
            np.testing.assert_array_equal(ours[name], bundled[name])


def test_plots_are_written_and_the_run_is_complete(run_3d):
    wf, _ = run_3d
    for name in ("loss", "panel", "error_time"):
        assert (wf.root / f"results/plots/coarse_fine_{name}.png").read_bytes()[:8] == PNG
    assert wf.planned_jobs("all", "--configfile", CONFIG) == {}
