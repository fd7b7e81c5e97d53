"""Users' tetrahedral solver output in: meshio XDMF time series and per-frame VTU files of a 3D run."""

from __future__ import annotations

import meshio
import numpy as np

from meshsr.example.settings import ExampleSettings
from meshsr.example.solver import generate_example
from meshsr.mesh.sources import read_entry

SETTINGS = ExampleSettings.from_config({"dim": 3, "simulations": 2, "frames": 3})


def test_tetrahedral_time_series_are_read_as_the_bundle_they_were_written_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # meshio's TimeSeriesWriter puts the .h5 in the working directory
    bundle = generate_example(150, 3, SETTINGS)
    sources = []
    for s in range(bundle.n_simulations):
        path = tmp_path / f"sim{s}.xdmf"
        with meshio.xdmf.TimeSeriesWriter(path) as writer:
            writer.write_points_cells(bundle.points, [("tetra", bundle.cells)])
            for t, time in enumerate(bundle.times):
                data = {name: bundle.fields[s, t, :, f] for f, name in enumerate(bundle.field_names)}
                writer.write_data(time, point_data=data)
        sources.append(str(path))
    read = read_entry({"simulations": sources})
    np.testing.assert_array_equal(read.points, bundle.points)
    np.testing.assert_array_equal(read.cells, bundle.cells)
    np.testing.assert_array_equal(read.fields, bundle.fields)
    assert read.field_names == bundle.field_names
    np.testing.assert_array_equal(read.times, bundle.times)


def test_per_frame_vtu_files_with_a_velocity_vector_become_components(tmp_path):
    bundle = generate_example(150, 4, SETTINGS)
    rng = np.random.default_rng(0)
    velocity = rng.normal(size=(bundle.n_frames, bundle.n_nodes, 3))
    for t in range(bundle.n_frames):
        point_data = {"tracer": bundle.fields[0, t, :, 0], "u": velocity[t]}
        meshio.write(tmp_path / f"run_{t:03d}.vtu", meshio.Mesh(bundle.points, [("tetra", bundle.cells)], point_data))
    read = read_entry(str(tmp_path / "run_*.vtu"))
    assert read.cells.shape == bundle.cells.shape and read.points.shape == (bundle.n_nodes, 3)
    assert read.fields.shape == (1, bundle.n_frames, bundle.n_nodes, 4)
    assert sorted(read.field_names) == ["tracer", "u_x", "u_y", "u_z"]
    u = [read.field_names.index(f"u_{c}") for c in "xyz"]
    np.testing.assert_allclose(read.fields[0][..., u], velocity, rtol=1e-6)
    np.testing.assert_allclose(read.fields[0][..., read.field_names.index("tracer")], bundle.fields[0, :, :, 0])
