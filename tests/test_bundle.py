"""Mesh bundles (contract 1): reading, validation and clear errors."""

from __future__ import annotations

import io
import zipfile

import meshio
import numpy as np
import pytest

from meshsr.errors import InputError
from meshsr.example.mesh import make_mesh
from meshsr.jobs import job_logging
from meshsr.mesh.bundle import (
    MeshBundle,
    check_compatible,
    load_bundle,
    peek_shape,
    save_bundle,
    validate_bundle,
)
from meshsr.mesh.geometry import degenerate_cells


def square_bundle(s: int = 2, t: int = 3, f: int = 2) -> MeshBundle:
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    cells = np.array([[0, 1, 2], [0, 2, 3]])
    fields = np.arange(s * t * 4 * f, dtype=np.float32).reshape(s, t, 4, f)
    return MeshBundle(pts, cells, fields, [f"f{i}" for i in range(f)], np.linspace(0, 1, t))


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_round_trip(tmp_path):
    b = square_bundle()
    save_bundle(tmp_path / "b.npz", b)
    back = load_bundle(tmp_path / "b.npz")
    np.testing.assert_array_equal(back.points, b.points)
    np.testing.assert_array_equal(back.cells, b.cells)
    np.testing.assert_array_equal(back.fields, b.fields)
    assert back.field_names == ["f0", "f1"] and back.fields.dtype == np.float32
    np.testing.assert_array_equal(back.times, b.times)


def test_missing_cells_use_delaunay(tmp_path):
    b = square_bundle()
    back = load_bundle(write(tmp_path / "b.npz", points=b.points, fields=b.fields))
    assert back.cells.shape == (2, 3) and back.cells.dtype == np.int64
    # Two triangles over the four corners that tile the unit square: areas 1/2 each, every corner used.
    verts = back.points[back.cells]
    edges = verts[:, 1:] - verts[:, :1]
    areas = np.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]) / 2
    np.testing.assert_allclose(areas, [0.5, 0.5])
    assert sorted(np.unique(back.cells)) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("fields"), "missing required array"),
        (lambda a: a.update(points=a["points"][:, :1]), "'points' must have shape"),
        (lambda a: a.update(cells=a["cells"] + 2), "index out of range"),
        (lambda a: a.update(cells=a["cells"][:, :2]), "'cells' must have shape"),
        (lambda a: a.update(fields=a["fields"][:, :, :3]), "'fields' must have shape"),
        (lambda a: a.update(fields=np.where(a["fields"] > 5, np.nan, a["fields"])), "NaN/Inf"),
        (lambda a: a.update(fields=a["fields"].astype(np.int32)), "float32 or float64"),
        (lambda a: a.update(times=np.zeros(7)), "'times' must have shape"),
    ],
    ids=["no-fields", "points-one-column", "cells-out-of-range", "cells-two-columns", "fields-three-nodes",
         "fields-nan", "fields-int", "times-seven"],
)
def test_bad_bundles_name_file_and_problem(tmp_path, change, message):
    b = square_bundle()
    arrays = {"points": b.points, "cells": b.cells, "fields": b.fields, "times": b.times}
    change(arrays)
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message) as info:
        load_bundle(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "; " in info.value.problem and "\n" not in str(info.value)  # '<problem>; <what to do>', one line


def test_pickled_object_array_is_refused_not_loaded(tmp_path):
    b = square_bundle()
    path = write(tmp_path / "evil.npz", points=b.points, cells=b.cells, fields=np.array([{"x": 1}], dtype=object))
    with pytest.raises(InputError, match=r"'fields' holds Python objects \(pickled data\), which are never loaded"):
        load_bundle(path)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"\x00not a zip" * 10)
    with pytest.raises(InputError, match="cannot read npz"):
        load_bundle(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="does not exist"):
        load_bundle(tmp_path / "nope.npz")


def test_meshio_formats_are_single_snapshots(tmp_path):
    b = square_bundle(1, 1, 1)
    mesh = meshio.Mesh(
        np.column_stack([b.points, np.zeros(4)]),
        [("triangle", b.cells)],
        point_data={"u": b.fields[0, 0, :, 0], "v": np.ones((4, 2))},
    )
    mesh.write(tmp_path / "m.vtu")
    back = load_bundle(tmp_path / "m.vtu")
    assert back.points.shape == (4, 2) and back.fields.shape == (1, 1, 4, 3)
    assert back.field_names == ["u", "v_0", "v_1"]
    np.testing.assert_array_equal(back.fields[0, 0, :, 0], b.fields[0, 0, :, 0])


def test_bundles_must_share_s_t_f():
    with pytest.raises(InputError, match=r"disagree on \(S, T, F\): a: .*; export every resolution with the same"):
        check_compatible({"a": square_bundle(2, 3), "b": square_bundle(2, 4)})
    check_compatible({"a": square_bundle(), "b": square_bundle()})


# --- Bad mesh geometry and hostile members: one line naming the file, the problem and what to do ---

LINE = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
PLANE = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [2.0, 1.0, 0.0]]
GiB = 1 << 30


def grid_mesh(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Unit square, n x n nodes, two triangles per square."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    cells = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    return np.column_stack([x.ravel(), y.ravel()]), cells


def arrays_for(points, cells=None) -> dict[str, np.ndarray]:
    arrays = {"points": np.asarray(points, dtype=float), "fields": np.zeros((1, 2, len(points), 1))}
    if cells is not None:
        arrays["cells"] = np.asarray(cells, dtype=np.int64)
    return arrays


def third_degenerate() -> dict[str, np.ndarray]:
    pts, cells = grid_mesh(4)
    cells[::3, 2] = cells[::3, 1]  # every third triangle loses its third vertex
    return arrays_for(pts, cells)


def duplicated_corner() -> dict[str, np.ndarray]:
    b = square_bundle()
    points = np.concatenate([b.points, b.points[2:3]])  # node 4 sits on node 2
    return arrays_for(points, [[0, 1, 2], [0, 4, 3]])


def npy_member(shape: tuple[int, ...], payload: bytes, descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def write_members(path, fields_shape: tuple[int, ...], fields_payload: bytes):
    """A bundle zipped by hand, so that the 'fields' member can disagree with its own header."""
    b = square_bundle()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("points.npy", npy_member(b.points.shape, b.points.tobytes()))
        zf.writestr("cells.npy", npy_member(b.cells.shape, b.cells.astype("<i8").tobytes(), "<i8"))
        zf.writestr("fields.npy", npy_member(fields_shape, fields_payload))
    return path


FIELDS = np.zeros((1, 2, 4, 1))
BAD_MESHES = {
    "nan-points-no-cells": (arrays_for([[0, 0], [1, 0], [np.nan, 1], [0, 1]]), ["NaN/Inf", "1 of 4 nodes", "node 2"]),
    "inf-points-no-cells": (arrays_for([[0, 0], [1, 0], [1, 1], [0, -np.inf]]), ["NaN/Inf", "1 of 4 nodes", "node 3"]),
    "no-points-no-cells": (arrays_for(np.zeros((0, 2))), ["empty mesh", "'points' has no rows"]),
    "no-points-with-cells": (arrays_for(np.zeros((0, 2)), np.zeros((0, 3))), ["empty mesh", "'points' has no rows"]),
    "no-cells-rows": (arrays_for(square_bundle().points, np.zeros((0, 3))), ["empty mesh", "'cells' has no rows"]),
    "collinear-no-cells": (arrays_for(LINE), ["all 4 points lie on one line", "nothing to triangulate"]),
    "coplanar-3d-no-cells": (arrays_for(PLANE), ["all 5 points lie in one plane", "nothing to triangulate in 3D"]),
    "two-points-no-cells": (arrays_for(LINE[:2]), ["only 2 points", "needs at least 3"]),
    "qhull-last-resort": (arrays_for([[0, 0], [1, 1], [2, 2 + 1e-14], [3, 3]]), ["qhull cannot triangulate", "QH6154"]),
    "scaled-1e300": (arrays_for(square_bundle().points * 1e300, square_bundle().cells),
                     ["coordinates span 1e+300", "overflow", "rescale the mesh"]),
    "scaled-1e-300": (arrays_for(square_bundle().points * 1e-300, square_bundle().cells),
                      ["cells as small as 1e-300 across", "underflow", "rescale the mesh"]),
    "all-cells-degenerate": (arrays_for(LINE, [[0, 1, 2], [1, 2, 3]]),
                             ["2 of 2 cells are degenerate (zero area; first: cells [0, 1])", "not exact"]),
    "a-third-degenerate": (third_degenerate(), ["6 of 18 cells are degenerate", "cells [0, 3, 6, 9, 12, ...]"]),
    "degenerate-tetrahedron": (arrays_for(PLANE, [[0, 1, 2, 4]]),
                               ["1 of 1 cells are degenerate (zero volume; first: cells [0])"]),
    "duplicate-points": (duplicated_corner(), ["duplicate points: 1 point(s)", "points 2 and 4, both at (1.0, 1.0)"]),
}


@pytest.mark.parametrize(("arrays", "words"), list(BAD_MESHES.values()), ids=list(BAD_MESHES))
def test_bad_mesh_is_one_line_naming_file_problem_and_remedy(tmp_path, arrays, words):
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError) as info:
        load_bundle(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and info.value.path == str(path)
    assert "; " in info.value.problem and "\n" not in message  # '<problem>; <what to do>', one line
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("shape", "payload", "words"),
    [
        ((1, 2, 4, 1), np.zeros(7).tobytes(), ["'fields' has 184 bytes, its header says 192", "truncated"]),
        ((215, 1024, 1024, 128), np.zeros(8).tobytes(), ["'fields' has 192 bytes", f"says {215 * GiB + 128} "]),
    ],
    ids=["truncated-fields", "header-claims-215-GiB"],
)
def test_member_disagreeing_with_its_header_is_refused_before_reading(tmp_path, shape, payload, words):
    path = write_members(tmp_path / "bad.npz", shape, payload)
    with pytest.raises(InputError) as info:
        load_bundle(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read npz: array ") and "re-export the bundle" in message
    for word in words:
        assert word in message


def test_peek_shape_uses_the_checked_header(tmp_path):
    assert peek_shape(write_members(tmp_path / "ok.npz", (1, 2, 4, 1), np.zeros(8).tobytes())) == (1, 2)
    assert peek_shape(write_members(tmp_path / "cut.npz", (1, 2, 4, 1), np.zeros(7).tobytes())) is None


def test_a_job_turns_a_bad_mesh_into_one_error_line_and_exit_1(tmp_path, capsys):
    path = write(tmp_path / "bad.npz", **arrays_for(LINE))
    with pytest.raises(SystemExit) as info, job_logging(tmp_path / "job.log"):
        load_bundle(path)
    assert info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR {path}: no 'cells' given and all 4 points lie on one line")
    assert "; check the coordinates" in lines[0]


@pytest.mark.parametrize(("n_nodes", "seed"), [(50, 0), (300, 1), (2000, 2), (6000, 3)])
def test_example_meshes_pass_the_mesh_checks(tmp_path, n_nodes, seed):
    points, cells = make_mesh(n_nodes, seed)
    assert len(degenerate_cells(points, cells)) == 0
    bundle = MeshBundle(points, cells, np.zeros((1, 1, len(points), 1)))
    save_bundle(tmp_path / "m.npz", validate_bundle(bundle, "m.npz"))
    back = load_bundle(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.points, points)
    np.testing.assert_array_equal(back.cells, cells)
