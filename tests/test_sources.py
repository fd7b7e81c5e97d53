"""Users' meshio files read into bundles: XDMF time series, .pvd, globs, vector fields, quad/hex splitting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import meshio
import numpy as np
import pytest

from meshsr.config import check_config, load_schema
from meshsr.errors import InputError
from meshsr.interp.operator import InterpolationOperator
from meshsr.mesh.bundle import load_bundle
from meshsr.mesh.sources import entry_files, read_entry, save_canonical, simplices

RNG = np.random.default_rng(7)
REPO = Path(__file__).resolve().parents[1]


def grid(n: int = 6, z: bool = True):
    """Points of an n x n grid on [0, 1]^2 (with z = 0 when ``z``), its quads and its triangles."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="xy")
    points = np.column_stack([x.ravel(), y.ravel()] + ([np.zeros(n * n)] if z else []))
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a = (i * n + j).ravel()
    quads = np.column_stack([a, a + 1, a + n + 1, a + n])
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return points, quads, tris


def hex_grid(n: int = 4, permute: bool = True):
    """An n^3-node grid of hexahedra on [0, 1]^3 with the nodes numbered at random (every apex position occurs)."""
    g = np.linspace(0, 1, n)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    points = np.column_stack([x.ravel(), y.ravel(), z.ravel()])
    idx = np.arange(n**3).reshape(n, n, n)
    i, j, k = (a.ravel() for a in np.meshgrid(*(np.arange(n - 1),) * 3, indexing="ij"))
    hexes = np.column_stack([idx[i, j, k], idx[i + 1, j, k], idx[i + 1, j + 1, k], idx[i, j + 1, k],
                             idx[i, j, k + 1], idx[i + 1, j, k + 1], idx[i + 1, j + 1, k + 1], idx[i, j + 1, k + 1]])
    if permute:
        perm = RNG.permutation(n**3)  # old index -> new index
        new_points = np.empty_like(points)
        new_points[perm] = points
        return new_points, perm[hexes]
    return points, hexes


def write_series(path: Path, points, cells, frames, times, monkeypatch):
    """An XDMF time series as meshio's TimeSeriesWriter writes it (its .h5 goes to the working directory)."""
    monkeypatch.chdir(path.parent)
    with meshio.xdmf.TimeSeriesWriter(path.name) as writer:
        writer.write_points_cells(points, cells)
        for t, data in zip(times, frames, strict=True):
            writer.write_data(t, point_data=data)


def frame_data(points, t):
    return {"c": np.sin(3 * points[:, 0]) + t, "u": np.column_stack([points[:, 0] * t, points[:, 1] - t])}


def measures(points, cells):
    verts = points[cells]
    edges = verts[:, 1:] - verts[:, :1]
    return np.abs(np.linalg.det(edges)) / (2 if points.shape[1] == 2 else 6)


def test_xdmf_time_series_gives_every_frame_vector_components_and_times(tmp_path, monkeypatch):
    points, _, tris = grid()
    times = [0.0, 0.25, 0.5, 1.0]
    paths = []
    for s in range(2):
        path = tmp_path / f"sim{s}.xdmf"
        write_series(path, points, [("triangle", tris)], [frame_data(points, t + s) for t in times], times, monkeypatch)
        paths.append(str(path))
    monkeypatch.chdir(tmp_path.parent)
    bundle = read_entry({"simulations": paths})
    assert (bundle.n_simulations, bundle.n_frames, bundle.n_fields) == (2, 4, 3)
    assert bundle.field_names == ["c", "u_x", "u_y"]
    np.testing.assert_array_equal(bundle.times, times)
    np.testing.assert_allclose(bundle.fields[1, 2, :, 0], np.sin(3 * points[:, 0]) + 1.5)
    np.testing.assert_allclose(bundle.fields[0, 3, :, 2], points[:, 1] - 1.0)
    assert bundle.points.shape == (len(points), 2)  # the constant z is dropped
    files = entry_files({"simulations": paths})
    assert str(tmp_path / "sim0.h5") in files and str(tmp_path / "sim1.h5") in files


def test_fields_selects_point_data_and_names_a_missing_one(tmp_path, monkeypatch):
    points, _, tris = grid()
    path = tmp_path / "run.xdmf"
    write_series(path, points, [("triangle", tris)], [frame_data(points, t) for t in range(3)], [0, 1, 2], monkeypatch)
    bundle = read_entry({"simulations": [str(path)], "fields": ["u"]})
    assert bundle.field_names == ["u_x", "u_y"]
    with pytest.raises(InputError, match="no point data 'p'.*point data: c, u"):
        read_entry({"simulations": [str(path)], "fields": ["p"]})


def test_xdmf_without_its_h5_file_is_refused_naming_it(tmp_path, monkeypatch):
    points, _, tris = grid()
    path = tmp_path / "run.xdmf"
    write_series(path, points, [("triangle", tris)], [frame_data(points, 0)], [0], monkeypatch)
    (tmp_path / "run.h5").unlink()
    with pytest.raises(InputError, match=r"run\.h5 does not exist"):
        read_entry(str(path))


def write_pvd(path: Path, frames: list[tuple[float, str]]) -> None:
    sets = "".join(f'<DataSet timestep="{t}" part="0" file="{f}"/>' for t, f in frames)
    path.write_text(f'<?xml version="1.0"?><VTKFile type="Collection" version="0.1"><Collection>{sets}'
                    "</Collection></VTKFile>")


def test_pvd_collection_reads_frames_with_their_timesteps(tmp_path):
    points, _, tris = grid()
    (tmp_path / "out").mkdir()
    for k in range(4):
        meshio.write(tmp_path / "out" / f"f{k}.vtu", meshio.Mesh(points, [("triangle", tris)], frame_data(points, k)))
    write_pvd(tmp_path / "run.pvd", [(0.1 * k, f"out/f{k}.vtu") for k in range(4)])
    bundle = read_entry(str(tmp_path / "run.pvd"))
    assert (bundle.n_simulations, bundle.n_frames) == (1, 4)
    np.testing.assert_allclose(bundle.times, [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(bundle.fields[0, 3, :, 1], points[:, 0] * 3)
    assert entry_files(str(tmp_path / "run.pvd"))[1:] == [str(tmp_path / "out" / f"f{k}.vtu") for k in range(4)]


def test_glob_of_vtu_files_sorted_by_name_times_are_frame_indices(tmp_path):
    points, _, tris = grid()
    for k in (2, 0, 3, 1):  # written out of order
        meshio.write(tmp_path / f"frame_{k:03d}.vtu", meshio.Mesh(points, [("triangle", tris)], frame_data(points, k)))
    bundle = read_entry(str(tmp_path / "frame_*.vtu"))
    assert bundle.n_frames == 4
    np.testing.assert_array_equal(bundle.times, [0, 1, 2, 3])
    for k in range(4):
        np.testing.assert_allclose(bundle.fields[0, k, :, 0], np.sin(3 * points[:, 0]) + k)


def test_glob_frames_carrying_their_time_keep_it(tmp_path):
    """ParaView writes a frame's time as FieldData 'TimeValue' (meshio reads it, but does not write it)."""
    points, _, tris = grid()
    for k in range(3):
        path = tmp_path / f"frame_{k}.vtu"
        meshio.write(path, meshio.Mesh(points, [("triangle", tris)], frame_data(points, k)), binary=False)
        time = f'<DataArray type="Float64" Name="TimeValue" NumberOfTuples="1" format="ascii">{0.5 * k}</DataArray>'
        grid_tag = "<UnstructuredGrid>"
        path.write_text(path.read_text().replace(grid_tag, f"{grid_tag}<FieldData>{time}</FieldData>"))
    np.testing.assert_array_equal(read_entry(str(tmp_path / "frame_*.vtu")).times, [0.0, 0.5, 1.0])


def test_a_glob_matching_nothing_is_refused(tmp_path):
    with pytest.raises(InputError, match="matches no file"):
        read_entry(str(tmp_path / "nothing_*.vtu"))


def test_one_mesh_file_is_one_frame(tmp_path):
    points, _, tris = grid()
    meshio.write(tmp_path / "snap.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    bundle = read_entry(str(tmp_path / "snap.vtu"))
    assert (bundle.n_simulations, bundle.n_frames, bundle.n_fields) == (1, 1, 1)
    np.testing.assert_array_equal(bundle.times, [0.0])


def linear(points):
    return 1.0 + points @ np.arange(2.0, 2.0 + points.shape[1])


def interpolation_is_exact(points, cells):
    dst = RNG.uniform(0.02, 0.98, size=(300, points.shape[1]))
    op = InterpolationOperator.build(points, cells, dst)
    assert not op.extrapolated.any()
    np.testing.assert_allclose(op.matrix @ linear(points), linear(dst), rtol=1e-12, atol=1e-12)


def test_quads_split_into_two_triangles_covering_the_quad(tmp_path):
    points, quads, _ = grid(7)
    meshio.write(tmp_path / "q.vtu", meshio.Mesh(points, [("quad", quads)], {"c": linear(points[:, :2])}))
    bundle = read_entry(str(tmp_path / "q.vtu"))
    assert bundle.cells.shape == (2 * len(quads), 3)
    area = measures(bundle.points, bundle.cells)
    assert area.min() > 0 and area.sum() == pytest.approx(1.0, rel=1e-12)
    interpolation_is_exact(bundle.points, bundle.cells)


def faces_of(tets):
    faces = np.sort(np.concatenate([tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]]), 1)
    _, counts = np.unique(faces, axis=0, return_counts=True)
    return counts


def test_hexahedra_split_into_six_conforming_tetrahedra(tmp_path):
    points, hexes = hex_grid(4)
    meshio.write(tmp_path / "h.vtu", meshio.Mesh(points, [("hexahedron", hexes)], {"c": linear(points)}))
    bundle = read_entry(str(tmp_path / "h.vtu"))
    assert bundle.cells.shape == (6 * len(hexes), 4)
    volume = measures(bundle.points, bundle.cells)
    assert volume.min() > 0 and volume.sum() == pytest.approx(1.0, rel=1e-12)
    # conforming: every triangle is a face of two tets, or of one on the boundary (6 sides x 3^2 squares x 2)
    counts = faces_of(bundle.cells)
    assert set(counts) == {1, 2} and (counts == 1).sum() == 6 * 9 * 2
    interpolation_is_exact(bundle.points, bundle.cells)


def test_one_hexahedron_splits_alike_from_every_lowest_vertex():
    points, hexes = hex_grid(2, permute=False)
    for apex in range(8):
        renumber = np.empty(8, dtype=np.int64)  # local vertex `apex` gets the lowest global index
        renumber[hexes[0][apex:].tolist() + hexes[0][:apex].tolist()] = np.arange(8)
        dim, tets = simplices([("hexahedron", renumber[hexes])], "h")
        assert dim == 3 and len(tets) == 6 and tets[:, 0].tolist() == [0] * 6  # the cone's apex
        pts = np.empty_like(points)
        pts[renumber] = points
        assert measures(pts, tets).sum() == pytest.approx(1.0) and measures(pts, tets).min() > 0


@pytest.mark.parametrize(
    ("cells", "named"),
    [
        pytest.param([("wedge", np.array([[0, 1, 2, 3, 4, 5]]))], "'wedge'", id="wedge"),
        pytest.param([("line", np.array([[0, 1], [1, 2]]))], "cell types: line", id="lines-only"),
        pytest.param([("triangle6", np.array([[0, 1, 2, 3, 4, 5]]))], "'triangle6'", id="quadratic"),
    ],
)
def test_other_cell_types_are_refused_naming_the_type(tmp_path, cells, named):
    points = RNG.uniform(size=(6, 3))
    meshio.write(tmp_path / "bad.vtu", meshio.Mesh(points, cells, {"c": points[:, 0]}))
    with pytest.raises(InputError, match=named) as info:
        read_entry(str(tmp_path / "bad.vtu"))
    assert info.value.path == str(tmp_path / "bad.vtu")


def test_boundary_lines_of_a_triangle_mesh_are_ignored(tmp_path):
    points, _, tris = grid()
    mesh = meshio.Mesh(points, [("line", np.array([[0, 1], [1, 2]])), ("triangle", tris)], {"c": points[:, 0]})
    meshio.write(tmp_path / "m.vtu", mesh)
    assert len(read_entry(str(tmp_path / "m.vtu")).cells) == len(tris)


def test_simulations_on_different_meshes_are_refused(tmp_path):
    points, _, tris = grid()
    meshio.write(tmp_path / "a.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    moved = points.copy()
    moved[7, 0] += 0.01
    meshio.write(tmp_path / "b.vtu", meshio.Mesh(moved, [("triangle", tris)], {"c": points[:, 0]}))
    with pytest.raises(InputError, match="simulation 1 has another mesh.*point 7 differs") as info:
        read_entry({"simulations": [str(tmp_path / "a.vtu"), str(tmp_path / "b.vtu")]})
    assert info.value.path == str(tmp_path / "b.vtu")


def test_simulations_with_other_fields_or_frame_counts_are_refused(tmp_path):
    points, _, tris = grid()
    meshio.write(tmp_path / "a.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    meshio.write(tmp_path / "b.vtu", meshio.Mesh(points, [("triangle", tris)], {"d": points[:, 0]}))
    with pytest.raises(InputError, match=r"has fields \['d'\]"):
        read_entry({"simulations": [str(tmp_path / "a.vtu"), str(tmp_path / "b.vtu")]})
    meshio.write(tmp_path / "c_0.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    meshio.write(tmp_path / "c_1.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    with pytest.raises(InputError, match="has 2 frames, simulation 0 has 1"):
        read_entry({"simulations": [str(tmp_path / "a.vtu"), str(tmp_path / "c_*.vtu")]})


def test_simulations_written_at_other_times_are_refused(tmp_path):
    points, _, tris = grid()
    for s, dt in enumerate((0.1, 0.2)):
        write_pvd(tmp_path / f"sim{s}.pvd", [(dt * k, f"f{k}.vtu") for k in range(2)])
    for k in range(2):
        meshio.write(tmp_path / f"f{k}.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    with pytest.raises(InputError, match="simulation 1 has other frame times than simulation 0") as info:
        read_entry({"simulations": [str(tmp_path / "sim0.pvd"), str(tmp_path / "sim1.pvd")]})
    assert info.value.path == str(tmp_path / "sim1.pvd")


def test_the_schema_takes_a_path_or_a_mapping_of_simulations():
    schema = load_schema(REPO / "config" / "config.schema.yaml")
    good = {"coarse": "runs/c.npz", "fine": {"simulations": ["runs/f0.xdmf", "runs/f*.vtu"], "fields": ["c"]}}
    assert check_config({"meshes": good}, schema) == []
    bad = {"coarse": "runs/c.npz", "fine": {"simulation": ["runs/f0.xdmf"]}}
    assert check_config({"meshes": bad}, schema) == [
        "config key 'meshes.fine.simulation': unknown; did you mean 'simulations'? (valid: simulations, fields)",
        "config key 'meshes.fine.simulations': missing; add it (one meshio source per simulation, in order)",
    ]


def test_non_finite_point_data_are_refused_naming_the_frame_file(tmp_path):
    points, _, tris = grid()
    c = points[:, 0].copy()
    c[3] = np.nan
    meshio.write(tmp_path / "f_1.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": c}))
    meshio.write(tmp_path / "f_0.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    with pytest.raises(InputError, match="1 NaN/Inf") as info:
        read_entry(str(tmp_path / "f_*.vtu"))
    assert info.value.path == str(tmp_path / "f_1.vtu")


def test_a_surface_in_space_is_refused(tmp_path):
    points, _, tris = grid()
    points[:, 2] = points[:, 0] ** 2
    meshio.write(tmp_path / "s.vtu", meshio.Mesh(points, [("triangle", tris)], {"c": points[:, 0]}))
    with pytest.raises(InputError, match="surface in space"):
        read_entry(str(tmp_path / "s.vtu"))


def test_degenerate_cells_are_refused_as_for_npz_bundles(tmp_path):
    points, _, tris = grid()
    bad = np.concatenate([tris, [[0, 1, 2]]])  # three collinear grid points
    meshio.write(tmp_path / "d.vtu", meshio.Mesh(points, [("triangle", bad)], {"c": points[:, 0]}))
    with pytest.raises(InputError, match="degenerate"):
        read_entry(str(tmp_path / "d.vtu"))


def test_canonical_bundle_is_byte_identical_when_rewritten_and_loads_as_contract_1(tmp_path):
    points, _, tris = grid()
    meshio.write(tmp_path / "a.vtu", meshio.Mesh(points, [("triangle", tris)], frame_data(points, 1)))
    bundle = read_entry(str(tmp_path / "a.vtu"))
    save_canonical(tmp_path / "one.npz", bundle)
    save_canonical(tmp_path / "two.npz", read_entry(str(tmp_path / "a.vtu")))
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("one.npz", "two.npz")]
    assert digest[0] == digest[1]
    loaded = load_bundle(tmp_path / "one.npz")
    np.testing.assert_array_equal(loaded.fields, bundle.fields)
    assert loaded.field_names == ["c", "u_x", "u_y"]
