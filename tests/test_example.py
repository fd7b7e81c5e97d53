"""The example data generator: meshes with a hole, the flow, and a solver that converges."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.tri import LinearTriInterpolator, Triangulation

from meshsr.example.mesh import HEIGHT, HOLE_CENTRE, HOLE_RADIUS, LENGTH, make_mesh
from meshsr.example.solver import ExampleSettings, _draw_parameters, _velocity, generate_example, simulate
from meshsr.mesh.bundle import load_bundle, save_bundle

TINY = ExampleSettings(n_simulations=2, n_frames=3, t_end=0.6, steps_per_frame=2)


def signed_areas(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    a, b, c = (points[cells[:, k]] for k in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def hole_distance(xy: np.ndarray) -> np.ndarray:
    return np.hypot(xy[:, 0] - HOLE_CENTRE[0], xy[:, 1] - HOLE_CENTRE[1])


def lumped_weights(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """int of each hat function: a third of the area of its cells."""
    weights = np.zeros(len(points))
    np.add.at(weights, cells.ravel(), np.repeat(signed_areas(points, cells) / 3.0, 3))
    return weights


def gaussian_integrals(centres: np.ndarray, sigma: float, moment: bool = False) -> np.ndarray:
    """int_Omega g_k (or x g_k) by a fine midpoint rule, independent of any mesh."""
    h = 2e-3
    X, Y = np.meshgrid(np.arange(h / 2, LENGTH, h), np.arange(h / 2, HEIGHT, h))
    weight = (np.hypot(X - HOLE_CENTRE[0], Y - HOLE_CENTRE[1]) > HOLE_RADIUS) * (X if moment else 1.0) * h * h
    return np.array([(weight * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * sigma**2))).sum() for cx, cy in centres])


def pulses(sim, times: np.ndarray) -> np.ndarray:
    """Source amplitudes (len(times), K)."""
    return sim.strengths * 0.5 * (1 + np.sin(2 * np.pi * sim.frequencies * times[:, None] + sim.phases))


def interpolate(src_points, src_cells, values, dst_points) -> np.ndarray:
    tri = Triangulation(src_points[:, 0], src_points[:, 1], src_cells)
    out = LinearTriInterpolator(tri, values)(dst_points[:, 0], dst_points[:, 1])
    return np.ma.filled(out, np.nan)


@pytest.mark.parametrize("n_nodes, seed", [(300, 0), (800, 1), (800, 7)])
def test_mesh_is_a_conforming_triangulation_with_a_hole(n_nodes, seed):
    points, cells = make_mesh(n_nodes, seed)
    assert points.dtype == np.float64 and points.shape[1] == 2
    assert cells.dtype == np.int64 and cells.shape[1] == 3
    assert abs(len(points) / n_nodes - 1.0) < 0.1
    assert np.array_equal(np.unique(cells), np.arange(len(points)))  # no unused nodes
    assert (signed_areas(points, cells) > 0).all()
    assert (hole_distance(points) > HOLE_RADIUS - 1e-12).all()
    assert (hole_distance(points[cells].mean(axis=1)) > HOLE_RADIUS).all()
    assert points.min(axis=0) == pytest.approx([0.0, 0.0]) and points.max(axis=0) == pytest.approx([LENGTH, HEIGHT])
    # conforming, one hole: every edge borders at most two cells and V - E + F = 1 - #holes
    edges = np.sort(cells[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique_edges, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 2
    assert len(points) - len(unique_edges) + len(cells) == 0
    # the cells tile the channel minus the hole (up to the polygonal approximation of the circle)
    area = LENGTH * HEIGHT - np.pi * HOLE_RADIUS**2
    assert 0.0 <= signed_areas(points, cells).sum() - area < 0.02


def test_meshes_of_different_seeds_are_independent():
    (p0, _), (p1, _) = make_mesh(500, 0), make_mesh(500, 1)
    p0_again, _ = make_mesh(500, 0)
    assert np.array_equal(p0, p0_again)
    shared = {tuple(p) for p in np.round(p0, 12)} & {tuple(p) for p in np.round(p1, 12)}
    assert len(shared) < 0.2 * len(p0)  # only some rectangle-boundary points may coincide
    on_boundary = [x in (0.0, LENGTH) or y in (0.0, HEIGHT) for x, y in shared]
    assert all(on_boundary)


@pytest.mark.parametrize("speed, circulation", [(1.0, 0.0), (1.3, 0.5), (0.8, -0.6)])
def test_flow_is_divergence_free_and_tangent_to_the_cylinder(speed, circulation):
    rng = np.random.default_rng(0)
    xy = rng.uniform((0.0, 0.0), (LENGTH, HEIGHT), size=(400, 2))
    xy = xy[hole_distance(xy) > HOLE_RADIUS + 0.01]
    x, y, eps = xy[:, 0], xy[:, 1], 1e-5
    dbx = _velocity(x + eps, y, speed, circulation)[0] - _velocity(x - eps, y, speed, circulation)[0]
    dby = _velocity(x, y + eps, speed, circulation)[1] - _velocity(x, y - eps, speed, circulation)[1]
    div = (dbx + dby) / (2 * eps)
    assert np.abs(div).max() < 1e-6

    theta = np.linspace(0.0, 2.0 * np.pi, 50)
    nx, ny = np.cos(theta), np.sin(theta)
    bx, by = _velocity(HOLE_CENTRE[0] + HOLE_RADIUS * nx, HOLE_CENTRE[1] + HOLE_RADIUS * ny, speed, circulation)
    assert np.abs(bx * nx + by * ny).max() < 1e-12
    assert np.abs(np.hypot(bx, by)).max() > speed  # the flow does go round it

    far_bx, far_by = _velocity(np.array([LENGTH]), np.array([HOLE_CENTRE[1]]), speed, 0.0)
    assert far_bx[0] == pytest.approx(speed, rel=0.01) and abs(far_by[0]) < 1e-12


def test_simulate_shapes_and_identical_times_and_parameters_across_meshes():
    a = simulate(*make_mesh(300, 0), TINY)
    b = simulate(*make_mesh(450, 1), TINY)
    for bundle in (a, b):
        assert bundle.fields.dtype == np.float32
        assert bundle.fields.shape == (2, 3, bundle.n_nodes, 2)
        assert bundle.field_names == ["tracer", "heat"]
        assert np.isfinite(bundle.fields).all()
        assert (bundle.fields[:, -1].max(axis=1) > 0.05).all()  # every sim and field is non-trivial
    assert np.array_equal(a.times, b.times)
    assert a.times.dtype == np.float64 and a.times == pytest.approx([0.2, 0.4, 0.6])
    first, again = _draw_parameters(TINY), _draw_parameters(TINY)
    for p, q in zip(first, again, strict=True):
        assert p.speed == q.speed and p.circulation == q.circulation
        assert np.array_equal(p.centres, q.centres) and np.array_equal(p.phases, q.phases)
    assert first[0].speed != first[1].speed


def test_generate_example_round_trips_through_a_bundle_file(tmp_path):
    bundle = generate_example(260, 3, ExampleSettings(n_simulations=1, n_frames=2, t_end=0.2))
    save_bundle(tmp_path / "coarse.npz", bundle)
    loaded = load_bundle(tmp_path / "coarse.npz")
    assert np.array_equal(loaded.fields, bundle.fields) and np.array_equal(loaded.cells, bundle.cells)
    assert loaded.field_names == ["tracer", "heat"]


def test_without_flow_the_mass_equals_the_injected_source_mass():
    """No flow: d/dt int c = int f (diffusive flux vanishes except at the inflow wall)."""
    settings = ExampleSettings(
        n_simulations=2, n_frames=4, t_end=0.4, flow_speed=(0.0, 0.0), circulation=(0.0, 0.0)
    )
    points, cells = make_mesh(800, 2)
    bundle = simulate(points, cells, settings)
    mass = np.einsum("stnf,n->stf", bundle.fields.astype(np.float64), lumped_weights(points, cells))
    dt = settings.t_end / (settings.n_frames * settings.steps_per_frame)
    steps = np.arange(settings.n_frames * settings.steps_per_frame + 1) * dt
    for s, sim in enumerate(_draw_parameters(settings)):
        rate = pulses(sim, steps) @ gaussian_integrals(sim.centres, settings.source_width)
        injected = np.cumsum(0.5 * (rate[1:] + rate[:-1]) * dt)  # the trapezoid rule, as Crank-Nicolson
        expected = injected[settings.steps_per_frame - 1 :: settings.steps_per_frame]
        for f in range(bundle.n_fields):
            np.testing.assert_allclose(mass[s, :, f], expected, rtol=0.01)


def test_solution_converges_under_mesh_refinement():
    settings = ExampleSettings(n_simulations=1, n_frames=4, t_end=1.0)
    ref = generate_example(3000, 10, settings)
    errors = []
    for n_nodes, seed in [(300, 11), (800, 12)]:
        coarse = generate_example(n_nodes, seed, settings)
        diffs, norms = [], []
        for t in range(settings.n_frames):
            for f in range(coarse.n_fields):
                up = interpolate(coarse.points, coarse.cells, coarse.fields[0, t, :, f].astype(np.float64), ref.points)
                assert np.isfinite(up).all()  # the coarse polygonal hole covers all of the fine domain
                diffs.append(up - ref.fields[0, t, :, f])
                norms.append(ref.fields[0, t, :, f])
        errors.append(np.linalg.norm(diffs) / np.linalg.norm(norms))
    assert errors[1] < 0.7 * errors[0]
    assert errors[0] > 0.05  # the coarse mesh is visibly coarse: a real super-resolution target


def test_first_moment_obeys_the_advection_balance():
    r"""With :math:`\nabla \cdot b = 0`: :math:`d/dt \int x c = \int x f + \int b_x c` (c small on the walls).

    Catches a wrong flow speed, an inconsistent SUPG mass term or mis-weighted theta-scheme terms.
    """
    settings = ExampleSettings(n_simulations=3, n_frames=8, t_end=0.4, steps_per_frame=1)
    points, cells = make_mesh(3000, 4)
    bundle = simulate(points, cells, settings)
    weights = lumped_weights(points, cells)
    times = np.concatenate([[0.0], bundle.times])
    for s, sim in enumerate(_draw_parameters(settings)):
        source_moment = pulses(sim, times) @ gaussian_integrals(sim.centres, settings.source_width, moment=True)
        bx, _ = _velocity(points[:, 0], points[:, 1], sim.speed, sim.circulation)
        for f in range(bundle.n_fields):
            c = np.concatenate([np.zeros((1, len(points))), bundle.fields[s, :, :, f].astype(np.float64)])
            rate = source_moment + c @ (weights * bx)
            predicted = np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(times))
            np.testing.assert_allclose(c[1:] @ (weights * points[:, 0]), predicted, rtol=0.01)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (dict(n_frames=0), "must be >= 1"),
        (dict(t_end=0.0), "t_end must be positive"),
        (dict(theta=0.3), "theta must lie in"),
        (dict(source_width=0.5), "source_width must lie in"),
        (dict(diffusivities=(1e-3,)), "equal length"),
    ],
)
def test_settings_reject_nonsense(bad, message):
    with pytest.raises(ValueError, match=message):
        ExampleSettings(**bad)


def test_make_mesh_rejects_too_few_nodes():
    with pytest.raises(ValueError, match="at least 50"):
        make_mesh(10, 0)
