"""The 3D example (example.dim: 3): tetrahedral meshes of the cube, the helical flow, a solver that converges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import LinearNDInterpolator

from meshsr.errors import InputError
from meshsr.example.cube import lattice_size, make_mesh, signed_volumes, velocity
from meshsr.example.settings import DIM_DEFAULTS, ExampleSettings
from meshsr.example.solver import generate_example, simulate
from meshsr.mesh.bundle import load_bundle, save_bundle

TINY_3D = ExampleSettings.from_config({"dim": 3, "simulations": 2, "frames": 3})
FACES = ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3))


@pytest.mark.parametrize("n_nodes, seed", [(64, 0), (500, 1), (1000, 7)])
def test_mesh_is_a_conforming_tetrahedralisation_of_the_cube(n_nodes, seed):
    points, cells = make_mesh(n_nodes, seed)
    assert points.shape == (lattice_size(n_nodes) ** 3, 3) and cells.shape[1] == 4 and cells.dtype == np.int64
    assert np.array_equal(np.unique(cells), np.arange(len(points)))
    volumes = signed_volumes(points, cells)
    assert (volumes > 0).all()
    assert volumes.sum() == pytest.approx(1.0, abs=1e-12)  # the cells tile the cube: no gap, no overlap
    faces = np.sort(cells[:, FACES].reshape(-1, 3), axis=1)
    unique_faces, counts = np.unique(faces, axis=0, return_counts=True)
    assert counts.max() == 2
    boundary = points[unique_faces[counts == 1]]  # (B, 3 vertices, 3 coordinates)
    on_a_side = ((boundary == 0.0).all(axis=1) | (boundary == 1.0).all(axis=1)).any(axis=1)
    assert on_a_side.all()  # faces of one cell only lie on the cube's sides


def test_meshes_of_other_sizes_or_seeds_share_only_corners():
    (p0, c0), (p0_again, c0_again) = make_mesh(500, 0), make_mesh(500, 0)
    assert np.array_equal(p0, p0_again) and np.array_equal(c0, c0_again)
    for other in (make_mesh(500, 1)[0], make_mesh(3000, 0)[0]):
        shared = {tuple(p) for p in p0} & {tuple(p) for p in other}
        assert len(shared) <= 8 and all(set(p) <= {0.0, 1.0} for p in shared)


@pytest.mark.parametrize("speed, swirl", [(1.0, 0.0), (1.2, 1.5), (0.9, -2.0)])
def test_flow_is_divergence_free_and_tangent_to_the_side_walls(speed, swirl):
    x, y, z = np.random.default_rng(1).random((3, 500))
    eps = 1e-5
    div = sum(
        velocity(*(c + eps * (i == k) for k, c in enumerate((x, y, z))), speed, swirl)[i]
        - velocity(*(c - eps * (i == k) for k, c in enumerate((x, y, z))), speed, swirl)[i]
        for i in range(3)
    ) / (2 * eps)
    assert np.abs(div).max() < 1e-6
    for wall in (0.0, 1.0):
        assert np.abs(velocity(x, np.full_like(y, wall), z, speed, swirl)[1]).max() < 1e-12
        assert np.abs(velocity(x, y, np.full_like(z, wall), speed, swirl)[2]).max() < 1e-12
    np.testing.assert_array_equal(velocity(x, y, z, speed, swirl)[0], speed)


def test_settings_of_dimension_three():
    assert TINY_3D.dim == 3 and TINY_3D.n_simulations == 2
    for name, value in DIM_DEFAULTS[3].items():
        assert getattr(TINY_3D, name) == value
    assert ExampleSettings.from_config({"dim": 3, "simulations": 2}).source_width == DIM_DEFAULTS[3]["source_width"]
    assert ExampleSettings.from_config({}).dim == 2
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        ExampleSettings(dim=4)
    with pytest.raises(ValueError, match="mesh is 2D"):
        simulate(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([[0, 1, 2]]), TINY_3D)


def test_simulate_on_tetrahedra(tmp_path):
    bundle = generate_example(300, 5, TINY_3D)
    assert bundle.fields.shape == (2, 3, bundle.n_nodes, 2) and bundle.fields.dtype == np.float32
    assert np.isfinite(bundle.fields).all()
    assert (np.abs(bundle.fields[:, -1]).max(axis=1) > 0.05).all()  # every simulation and field is non-trivial
    assert (bundle.fields[:, :, bundle.points[:, 0] == 0.0] == 0.0).all()  # c = 0 on the inflow side x = 0
    assert bundle.times == pytest.approx(TINY_3D.t_end * np.arange(1, 4) / 3)
    save_bundle(tmp_path / "b.npz", bundle)
    assert np.array_equal(load_bundle(tmp_path / "b.npz").fields, bundle.fields)  # passes the bundle checks


def test_solution_converges_under_mesh_refinement():
    settings = ExampleSettings.from_config({"dim": 3, "simulations": 1, "frames": 3})
    ref = generate_example(3375, 20, settings)
    errors = []
    for n_nodes, seed in [(216, 21), (1000, 22)]:
        coarse = generate_example(n_nodes, seed, settings)
        up = LinearNDInterpolator(coarse.points, coarse.fields[0].transpose(1, 0, 2).reshape(coarse.n_nodes, -1))
        values = up(ref.points)  # the cube is convex: every reference node lies in the coarse Delaunay hull
        assert np.isfinite(values).all()
        truth = ref.fields[0].transpose(1, 0, 2).reshape(ref.n_nodes, -1)
        errors.append(np.linalg.norm(values - truth) / np.linalg.norm(truth))
    assert errors[1] < 0.7 * errors[0], errors
    assert errors[0] > 0.05  # the coarse mesh is visibly coarse: a real super-resolution target


def test_bundle_checks_refuse_a_tilted_flat_tetrahedron_but_keep_the_example_slivers(tmp_path):
    """The degeneracy rule is relative to the bounding box, so a flat tetrahedron in a tilted plane is caught too."""
    points, cells = make_mesh(500, 1)
    fields = np.zeros((1, 1, len(points), 1))
    np.savez(tmp_path / "ok.npz", points=points, cells=cells, fields=fields)
    assert len(load_bundle(tmp_path / "ok.npz").cells) == len(cells)  # thinnest: |det E| ~ 1e-3 h^3
    tilted = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 1.0, 1.0]])
    cells = np.array([[0, 1, 2, 4], [0, 1, 2, 3]])  # the second lies in the plane x + y + z = 1
    np.savez(tmp_path / "flat.npz", points=tilted, cells=cells, fields=np.zeros((1, 1, 5, 1)))
    with pytest.raises(InputError, match=r"1 of 2 cells are degenerate .*first: cells \[1\]"):
        load_bundle(tmp_path / "flat.npz")
