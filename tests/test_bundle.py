"""Mesh bundles (contract 1): reading, validation and clear errors."""

from __future__ import annotations

import meshio
import numpy as np
import pytest

from meshsr.mesh.bundle import MeshBundle, check_compatible, load_bundle, save_bundle
from meshsr.errors import InputError


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
)
def test_bad_bundles_name_file_and_problem(tmp_path, change, message):
    b = square_bundle()
    arrays = {"points": b.points, "cells": b.cells, "fields": b.fields, "times": b.times}
    change(arrays)
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message) as info:
        load_bundle(path)
    assert str(path) in str(info.value)


def test_pickled_object_array_is_refused_not_loaded(tmp_path):
    b = square_bundle()
    path = write(tmp_path / "evil.npz", points=b.points, cells=b.cells, fields=np.array([{"x": 1}], dtype=object))
    with pytest.raises(InputError, match="not a plain-array npz"):
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
    with pytest.raises(InputError, match="disagree"):
        check_compatible({"a": square_bundle(2, 3), "b": square_bundle(2, 4)})
    check_compatible({"a": square_bundle(), "b": square_bundle()})
