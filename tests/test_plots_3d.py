"""The 3D panel: a slice at mid-height whose values are the exact P1 values on the plane."""

from __future__ import annotations

import numpy as np

from meshsr.evaluate.plots import MeshView, plot_panel
from meshsr.example.cube import make_mesh

PNG = b"\x89PNG\r\n\x1a\n"


def slice_points(view: MeshView) -> np.ndarray:
    tri = view.triangulation
    return np.column_stack([tri.x, tri.y])


def test_slice_of_a_linear_field_is_that_field_on_the_plane():
    points, cells = make_mesh(300, 4)
    field = 1.5 + points @ np.array([0.3, -2.0, 0.7])
    view = MeshView(points, cells)
    z = 0.5 * (points[:, 2].min() + points[:, 2].max())
    assert view.note == f"slice z = {z:.3g}"
    xy = slice_points(view)
    on_plane = 1.5 + xy @ np.array([0.3, -2.0]) + 0.7 * z
    values = view.operator.apply(field[:, None])[:, 0]
    np.testing.assert_allclose(values, on_plane, atol=1e-12)
    assert not view.operator.extrapolated.any() and not view.triangulation.mask.any()  # the cube is convex


def test_slice_leaves_the_part_outside_the_mesh_blank():
    points, cells = make_mesh(1000, 5)
    centroids = points[cells].mean(axis=1)
    notch = (centroids[:, 0] > 0.5) & (centroids[:, 1] > 0.5)  # a quarter column cut out: an L-shaped prism
    view = MeshView(points, cells[~notch])
    xy = slice_points(view)
    outside = view.operator.extrapolated
    in_notch = (xy[:, 0] > 0.7) & (xy[:, 1] > 0.7)
    assert outside[in_notch].all() and (xy[outside] > 0.3).all()  # the notch, up to its jagged faces
    blank = view.triangulation.mask
    np.testing.assert_array_equal(blank, outside[view.triangulation.triangles].any(axis=1))
    assert blank.any() and not blank.all()


def test_panel_of_a_tetrahedral_mesh_is_written(tmp_path):
    points, cells = make_mesh(200, 6)
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(len(points), 2))
    panel = {
        "field_names": np.array(["a", "b"]),
        "interp": truth + 0.1,
        "prediction": truth - 0.05,
        "truth": truth,
    }
    plot_panel(points, cells, panel, tmp_path / "panel.png", "3D")
    assert (tmp_path / "panel.png").read_bytes()[:8] == PNG
