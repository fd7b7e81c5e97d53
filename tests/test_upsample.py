"""Super-resolving a new coarse run: the numbers, the written files (read back by meshio and VTK), refusals."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import meshio
import numpy as np
import pytest
from scipy.spatial import Delaunay
from train_helpers import TINY, write_tiny_pair
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline
from vtkmodules.vtkIOXdmf2 import vtkXdmfReader

from meshsr.cache.pair_operator import read_pair_operator
from meshsr.config import check_config, load_schema
from meshsr.errors import InputError
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.settings import RunSettings
from meshsr.learn.training import train_pair
from meshsr.learn.upsample import mesh_digest, upsample_job
from meshsr.mesh.bundle import load_bundle, save_bundle
from meshsr.mesh.xdmf import write_time_series, write_upsampled

FIELDS = ["tracer", "heat"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny pair, its cache and a briefly trained model file (read-only for the tests)."""
    root = tmp_path_factory.mktemp("tiny")
    tiny = write_tiny_pair(root)
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    fit = replace(TINY.fit, epochs=1, steps_per_epoch=6)
    model = train_pair(data, fit, RunSettings(threads=1), progress=False)
    model_path = root / "coarse_fine.pt"
    model.save(model_path)
    return tiny, data, model, model_path


def run_job(trained, tmp_path: Path, run_path, simulation=0, use_cache=True):
    tiny, _, _, model_path = trained
    outputs = {"xdmf": str(tmp_path / "out" / "run.xdmf"), "npz": str(tmp_path / "out" / "run.npz")}
    cache = tiny.cache if use_cache else None
    upsample_job("run", "coarse", "fine", run_path, simulation, model_path, tiny.src, tiny.dst, cache, outputs,
                 device="cpu", threads=1)
    with np.load(outputs["npz"], allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}, outputs


@pytest.mark.parametrize("use_cache", [True, False], ids=["operator-from-cache", "operator-built"])
def test_a_simulation_of_the_pair_gets_the_evaluations_prediction(trained, tmp_path, use_cache):
    tiny, data, model, _ = trained
    out, _ = run_job(trained, tmp_path, tiny.src, simulation=2, use_cache=use_cache)
    builder = data.feature_builder(**model.feature_options)
    expected = model.predict(*data.features(builder, 2), data.cache.interpolated[2])
    assert out["fields"].shape == (1, *expected.shape) and out["baseline"].shape == out["fields"].shape
    np.testing.assert_array_equal(out["baseline"][0], data.cache.interpolated[2])
    np.testing.assert_allclose(out["fields"][0], expected, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(out["fields"], out["baseline"])  # the model did change something
    np.testing.assert_array_equal(out["points"], data.target_mesh.points)
    np.testing.assert_array_equal(out["cells"], data.target_mesh.cells)
    assert out["field_names"].tolist() == FIELDS
    np.testing.assert_array_equal(out["times"], load_bundle(tiny.src).times)
    assert load_bundle(tmp_path / "out" / "run.npz").fields.shape == out["fields"].shape  # a valid bundle


def vtk_frames(xdmf: Path) -> tuple[list[float], list[dict[str, np.ndarray]], int]:
    """Times, point data per time step and node count, as ParaView's XDMF reader (vtkXdmfReader) sees them."""
    reader = vtkXdmfReader()
    reader.SetFileName(str(xdmf))
    reader.UpdateInformation()
    times = list(reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS()))
    frames = []
    for time in times:
        reader.UpdateTimeStep(time)
        grid = reader.GetOutputDataObject(0)
        data = grid.GetPointData()
        arrays = range(data.GetNumberOfArrays())
        frames.append({data.GetArrayName(i): vtk_to_numpy(data.GetArray(i)).copy() for i in arrays})
    return times, frames, grid.GetNumberOfPoints()


def test_the_xdmf_opens_in_vtk_and_meshio_with_the_npz_values(trained, tmp_path, monkeypatch):
    tiny, *_ = trained
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out, outputs = run_job(trained, tmp_path, tiny.src, simulation=1)
    assert list(elsewhere.iterdir()) == []  # nothing written into the working directory
    xdmf = Path(outputs["xdmf"])
    assert sorted(p.name for p in xdmf.parent.iterdir()) == ["run.h5", "run.npz", "run.xdmf"]
    assert "run.h5:/" in xdmf.read_text() and str(tmp_path) not in xdmf.read_text()
    n_frames, n_nodes = out["fields"].shape[1:3]
    names = {f"{f}_{kind}" for f in FIELDS for kind in ("prediction", "baseline")}

    times, frames, vtk_nodes = vtk_frames(xdmf)
    assert vtk_nodes == n_nodes and len(frames) == n_frames
    np.testing.assert_allclose(times, out["times"])
    for t, frame in enumerate(frames):
        assert set(frame) == names
        for j, field in enumerate(FIELDS):
            np.testing.assert_array_equal(frame[f"{field}_prediction"], out["fields"][0, t, :, j])
            np.testing.assert_array_equal(frame[f"{field}_baseline"], out["baseline"][0, t, :, j])

    with meshio.xdmf.TimeSeriesReader(xdmf) as reader:
        points, cells = reader.read_points_cells()
        assert reader.num_steps == n_frames
        np.testing.assert_array_equal(points, out["points"])
        np.testing.assert_array_equal(cells[0].data, out["cells"])
        for t in range(n_frames):
            time, point_data, _ = reader.read_data(t)
            assert time == out["times"][t] and set(point_data) == names
            np.testing.assert_array_equal(point_data["heat_prediction"], out["fields"][0, t, :, 1])


def test_a_tetrahedral_time_series_reads_back(tmp_path):
    rng = np.random.default_rng(3)
    points = rng.random((40, 3))
    cells = Delaunay(points).simplices
    values = rng.random((2, 4, 40, 1)).astype(np.float32)
    write_upsampled(tmp_path / "t.npz", tmp_path / "t.xdmf", points, cells, values[0], values[1], ["c"],
                    np.array([0.0, 0.1, 0.2, 0.4]))
    times, frames, n_nodes = vtk_frames(tmp_path / "t.xdmf")
    assert n_nodes == 40 and times == [0.0, 0.1, 0.2, 0.4]
    np.testing.assert_array_equal(frames[3]["c_baseline"], values[1, 3, :, 0])
    with meshio.xdmf.TimeSeriesReader(tmp_path / "t.xdmf") as reader:
        assert reader.read_points_cells()[1][0].type == "tetra"


def test_point_data_of_the_wrong_shape_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        bad = {"a": np.zeros((2, 4))}  # 2 frames of 4 nodes on a mesh of 3
        write_time_series(tmp_path / "x.xdmf", np.zeros((3, 2)), np.array([[0, 1, 2]]), np.zeros(2), bad)
    assert list(tmp_path.iterdir()) == []


def test_the_same_mesh_in_another_file_format_is_accepted(trained, tmp_path):
    """The check is on the points and cells, not on the file: one frame exported by meshio is a run."""
    tiny, data, *_ = trained
    coarse = load_bundle(tiny.src)
    frame = coarse.fields[0, 3]
    vtu = tmp_path / "frame.vtu"
    meshio.write(vtu, meshio.Mesh(coarse.points, [("triangle", coarse.cells)],
                                  point_data={name: frame[:, j] for j, name in enumerate(FIELDS)}))
    out, _ = run_job(trained, tmp_path, vtu)
    assert out["fields"].shape == (1, 1, data.target_mesh.n_nodes, 2)
    assert mesh_digest(*read_mesh(vtu)) == mesh_digest(coarse.points, coarse.cells)


def read_mesh(path):
    bundle = load_bundle(path)
    return bundle.points, bundle.cells


def test_a_run_on_another_mesh_is_refused_in_one_line(trained, tmp_path):
    tiny, *_ = trained
    moved = load_bundle(tiny.src)
    moved.points = moved.points.copy()
    moved.points[0] += 1e-9  # same file layout and sizes, one point moved
    save_bundle(tmp_path / "moved.npz", moved)
    with pytest.raises(InputError) as info:
        run_job(trained, tmp_path, tmp_path / "moved.npz")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'moved.npz'}: run is not on the mesh of resolution 'coarse'")
    assert "\n" not in message and "; solve it on that mesh" in message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_simulation_the_run_lacks_and_other_fields_are_refused(trained, tmp_path):
    tiny, *_ = trained
    lacks = r"^config key 'upsample.run.simulation': simulation 3 but .* holds 3 \(0 to 2\); pick one of those$"
    with pytest.raises(InputError, match=lacks):
        run_job(trained, tmp_path, tiny.src, simulation=3)
    renamed = load_bundle(tiny.src)
    renamed.field_names = ["heat", "tracer"]
    save_bundle(tmp_path / "renamed.npz", renamed)
    with pytest.raises(InputError, match=r"run has fields \['heat', 'tracer'\] but the model .* predicts"):
        run_job(trained, tmp_path, tmp_path / "renamed.npz")


def test_the_cache_operator_is_read_without_the_field_arrays(trained):
    tiny, data, *_ = trained
    operator, summary = read_pair_operator(tiny.cache)
    assert (operator.matrix != data.cache.operator.matrix).nnz == 0
    np.testing.assert_array_equal(operator.extrapolated, data.cache.operator.extrapolated)
    assert summary.shape == data.cache.interpolated.shape and summary.meta == data.cache.meta


def test_a_model_of_another_pair_is_refused(trained, tmp_path):
    tiny, _, _, model_path = trained
    outputs = {"xdmf": str(tmp_path / "r.xdmf"), "npz": str(tmp_path / "r.npz")}
    expected = f"{model_path}: model was trained for coarse -> fine, not coarse -> medium; retrain it with: "
    with pytest.raises(InputError, match=re.escape(expected)):
        upsample_job("r", "coarse", "medium", tiny.src, 0, model_path, tiny.src, tiny.dst, None, outputs, "cpu", 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (
            {"input": "r.npz", "pair": ["coarse", "fine"], "simulaton": 1},
            "config key 'upsample.new-run.simulaton': unknown; did you mean 'simulation'? "
            "(valid: input, pair, simulation)",
        ),
        (
            {"pair": ["coarse", "fine"]},
            "config key 'upsample.new-run.input': missing; add it (the coarse run, in the same forms as an entry of "
            "'meshes')",
        ),
        (
            {"input": "r.npz", "pair": ["coarse", "fine"], "simulation": -1},
            "config key 'upsample.new-run.simulation': -1 is too small; use an integer of at least 0 (which simulation "
            "of the input to upsample)",
        ),
    ],
    ids=["unknown-key", "no-input", "negative-simulation"],
)
def test_an_upsample_entry_is_checked_like_the_rest_of_the_config(entry, line):
    config = {"meshes": {"coarse": "c.npz", "fine": "f.npz"}, "upsample": {"new-run": entry}}
    assert check_config(config, load_schema(REPO / "config" / "config.schema.yaml")) == [line]


def test_an_upsample_entry_gets_simulation_0_by_default():
    config = {"meshes": {"coarse": "c.npz", "fine": "f.npz"}, "upsample": {"r": {"input": "r.npz", "pair": ["a", "b"]}}}
    assert check_config(config, load_schema(REPO / "config" / "config.schema.yaml")) == []
    assert config["upsample"]["r"]["simulation"] == 0


def test_the_inference_benchmark_explains_itself():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "inference.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "frames per second" in proc.stdout and "--threads" in proc.stdout
