"""Feature assembly: the stencil read back from the operator, recovered derivatives, scaling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from train_helpers import write_tiny_pair

from meshsr.cache.format import PairCache
from meshsr.errors import InputError
from meshsr.interp.operator import InterpolationOperator
from meshsr.learn.features import (
    SCALE_FLOOR,
    SMOOTHING_STEPS,
    FeatureBuilder,
    Stencil,
    field_spread,
    mean_edge_length,
    neighbour_average,
    shift_vectors,
)
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.mesh.bundle import MeshBundle
from meshsr.mesh.recovery import GradientRecovery


def grid_mesh(n: int, lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A structured triangulation of the square [lo, hi]^2 with n x n nodes."""
    xs = np.linspace(lo, hi, n)
    points = np.array([(x, y) for y in xs for x in xs])
    cells = []
    for j in range(n - 1):
        for i in range(n - 1):
            a, b, c, d = j * n + i, j * n + i + 1, (j + 1) * n + i, (j + 1) * n + i + 1
            cells += [(a, b, d), (a, d, c)]
    return points, np.array(cells)


def pair_from_function(func, n_src: int = 9, dst_points: np.ndarray | None = None, frames: int = 3) -> PairData:
    """A synthetic pair whose source and destination fields sample ``func(points, t)``."""
    src_points, src_cells = grid_mesh(n_src)
    if dst_points is None:
        dst_points, dst_cells = grid_mesh(2 * n_src + 1, 0.01, 0.99)
    else:
        dst_cells = np.array([[0, 1, 2]])
    times = np.arange(frames, dtype=float)
    src_fields = np.stack([func(src_points, t) for t in times])[None].astype(np.float32)  # (1, T, N, F)
    dst_fields = np.stack([func(dst_points, t) for t in times])[None].astype(np.float32)
    operator = InterpolationOperator.build(src_points, src_cells, dst_points)
    cache = PairCache(
        interpolated=operator.apply(src_fields, dtype=np.float32),
        target_fields=dst_fields,
        operator=operator,
        meta={"field_names": ["u"]},
    )
    src = MeshBundle(points=src_points, cells=src_cells, fields=src_fields)
    dst = MeshBundle(points=dst_points, cells=dst_cells, fields=dst_fields)
    return PairData(source="a", target="b", cache=cache, source_mesh=src, target_mesh=dst)


def column(builder: FeatureBuilder, name: str) -> int:
    return builder.names.index(name)


def test_stencil_reproduces_the_cached_interpolation_with_sorted_weights():
    data = pair_from_function(lambda p, t: np.sin(3 * p[:, :1] + t) * np.cos(2 * p[:, 1:]))
    stencil = Stencil.from_operator(data.cache.operator, data.source_mesh.points, data.target_mesh.points)
    assert np.all(np.diff(stencil.weights, axis=1) <= 0)
    np.testing.assert_allclose(stencil.weights.sum(axis=1), 1.0)
    u = data.source_mesh.fields[0, :, :, 0].astype(np.float64)
    recon = np.einsum("nk,tnk->tn", stencil.weights, u[:, stencil.vertices])
    np.testing.assert_allclose(recon, data.cache.interpolated[0, :, :, 0], atol=1e-6)
    # the offsets reproduce the node: sum_i lambda_i (x - v_i) = 0 (barycentric property)
    np.testing.assert_allclose(np.einsum("nk,nkd->nd", stencil.weights, stencil.offsets), 0.0, atol=1e-12)


def test_extrapolated_rows_are_padded_with_the_nearest_node():
    dst = np.array([[0.5, 0.5], [1.5, 0.2], [0.3, -0.4]])  # two outside the source square
    data = pair_from_function(lambda p, t: p[:, :1] + t, dst_points=dst)
    stencil = Stencil.from_operator(data.cache.operator, data.source_mesh.points, dst)
    assert data.cache.extrapolated.tolist() == [False, True, True]
    for row in (1, 2):
        assert stencil.weights[row].tolist() == [1.0, 0.0, 0.0]
        assert len(set(stencil.vertices[row])) == 1
    builder = data.feature_builder()
    features, _ = data.features(builder, 0)
    assert features[0, :, column(builder, "extrapolated")].tolist() == [0.0, 1.0, 1.0]


def test_operator_rows_that_are_not_cells_are_refused():
    data = pair_from_function(lambda p, t: p[:, :1])
    matrix = data.cache.operator.matrix.tolil()
    matrix[0, :] = 0
    matrix[0, 0] = 1.0  # a located row with one entry: its cell cannot be read back
    bad = InterpolationOperator(matrix=sp.csr_matrix(matrix), extrapolated=data.cache.extrapolated)
    with pytest.raises(InputError, match="operator row 0 has 1 entries, but located rows need 3 .*; rebuild the pair"):
        Stencil.from_operator(bad, data.source_mesh.points, data.target_mesh.points)


def test_recovered_derivatives_are_exact_for_linear_and_quadratic_fields():
    points, cells = grid_mesh(7)
    recovery = GradientRecovery.build(points, cells)
    linear = (2.0 * points[:, 0] - 3.0 * points[:, 1] + 1.0)[None, :, None]
    np.testing.assert_allclose(recovery.gradient(linear)[0, :, 0], np.tile([2.0, -3.0], (len(points), 1)), atol=1e-12)
    quad = (points[:, 0] ** 2)[None, :, None]
    hessian = recovery.hessian(recovery.gradient(quad))[0, :, 0]
    interior = np.all((points > 0.3) & (points < 0.7), axis=1)
    np.testing.assert_allclose(hessian[interior], np.tile([[2.0, 0.0], [0.0, 0.0]], (interior.sum(), 1, 1)), atol=1e-9)


def test_gradient_correction_vanishes_for_linear_fields_and_helps_for_curved_ones():
    linear = pair_from_function(lambda p, t: 2 * p[:, :1] - p[:, 1:] + t)
    b = linear.feature_builder()
    features, scales = linear.features(b, 0)
    np.testing.assert_allclose(features[..., column(b, "u:grad_corr")], 0.0, atol=1e-5)

    curved = pair_from_function(lambda p, t: np.sin(4 * p[:, :1] + t) * np.cos(3 * p[:, 1:]))
    b = curved.feature_builder()
    features, scales = curved.features(b, 0)
    interp = curved.cache.interpolated[0, ..., 0]
    truth = curved.cache.target_fields[0, ..., 0]
    corrected = interp + 0.5 * features[..., column(b, "u:grad_corr")] * scales[..., 0]
    assert np.linalg.norm(corrected - truth) < 0.6 * np.linalg.norm(interp - truth)


def test_features_are_amplitude_invariant_and_scales_follow_the_amplitude():
    def func(p, t):
        return np.exp(-((p[:, :1] - 0.5) ** 2 + (p[:, 1:] - 0.4) ** 2) / 0.05) * (1 + t)

    one = pair_from_function(func)
    three = pair_from_function(lambda p, t: 3 * func(p, t))
    f1, s1 = one.features(one.feature_builder(field_std=np.array([1e-9])), 0)
    f3, s3 = three.features(three.feature_builder(field_std=np.array([1e-9])), 0)
    np.testing.assert_allclose(f3, f1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s3, 3 * s1, rtol=1e-5)


def test_feature_layout_names_and_time_neighbours():
    data = pair_from_function(lambda p, t: p[:, :1] * (1 + t), frames=4)
    with_xy, without_xy = data.feature_builder(), data.feature_builder(use_coordinates=False)
    features, scales = data.features(with_xy, 0)
    assert features.shape == (4, data.target_mesh.n_nodes, with_xy.n_features) and features.dtype == np.float32
    assert scales.shape == (4, data.target_mesh.n_nodes, 1)
    assert with_xy.names[:2] == ["x0", "x1"] and "x0" not in without_xy.names
    assert without_xy.n_features == with_xy.n_features - 2
    prev, nxt = column(with_xy, "u:prev"), column(with_xy, "u:next")
    assert np.all(features[0, :, prev] == 0) and np.all(features[-1, :, nxt] == 0)  # clamped at the ends
    assert not np.all(features[1, :, prev] == 0)


def test_neighbour_average_rows_are_means():
    points, cells = grid_mesh(4)
    s = neighbour_average(cells, len(points))
    np.testing.assert_allclose(np.asarray(s.sum(axis=1)).ravel(), 1.0)
    assert s[0].nnz == 4  # corner (0,0) of the grid: itself, two axis neighbours, one diagonal


def test_features_identical_from_cache_and_in_memory(tmp_path):
    tiny = write_tiny_pair(tmp_path)
    cached = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    built = load_pair_data("coarse", "fine", tiny.src, tiny.dst, None)
    a, sa = cached.features(cached.feature_builder(field_std=field_spread(cached.cache.interpolated, (0,))), 1)
    b, sb = built.features(built.feature_builder(field_std=field_spread(built.cache.interpolated, (0,))), 1)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)


def test_features_need_no_target_fields():
    """Inference on a run without a fine solution: source mesh and fields, target points, operator."""
    data = pair_from_function(lambda p, t: np.sin(3 * p[:, :1] + t) * np.cos(2 * p[:, 1:]))
    expected = data.features(data.feature_builder(), 0)
    src, dst_points = data.source_mesh, data.target_mesh.points.copy()
    operator = InterpolationOperator.build(src.points, src.cells, dst_points)
    builder = FeatureBuilder(src.points, src.cells, dst_points, operator, ["u"])
    fields = src.fields[0]
    got = builder.simulation(fields, operator.apply(fields[None], dtype=np.float32)[0])
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    with pytest.raises(ValueError, match="expected source fields"):
        builder.simulation(fields[..., :0], expected[1])


def test_field_spread_covers_the_given_simulations_and_frames_only():
    interp = np.zeros((3, 4, 5, 2))
    interp[0, :2] = [[[1.0, 2.0]], [[-1.0, -2.0]]]  # simulation 0, frames 0-1: +-1 and +-2
    interp[1] = 100.0  # another simulation
    interp[0, 3] = 50.0  # another frame
    np.testing.assert_allclose(field_spread(interp, (0,), (0, 1)), [1.0, 2.0])
    np.testing.assert_allclose(field_spread(interp, (0, 1), (0, 1)), [50.005, 50.02], rtol=1e-3)


def reference_features(builder: FeatureBuilder, data: PairData, sim: int) -> tuple[np.ndarray, np.ndarray]:
    """The features written out in numpy, float64 throughout, operator by operator: the test's oracle for the
    compiled kernel (meshsr.learn.feature_kernels)."""
    src, dst = data.source_mesh, data.target_mesh
    interpolate = data.cache.operator.matrix.astype(np.float64).tocsr()
    u = src.fields[sim].astype(np.float64)  # (T, N_src, F)
    interp_all = data.cache.interpolated[sim]
    t_len, n_src, f = u.shape
    interp = interp_all.astype(np.float64)

    def at_dst(matrix, nodal):  # (T, N_src, ...) -> (T, N_dst, ...)
        rest = nodal.shape[2:]
        flat = np.moveaxis(nodal, 0, 1).reshape(n_src, -1)
        return np.moveaxis((matrix @ flat).reshape(-1, t_len, *rest), 1, 0)

    upper = np.triu_indices(builder.dim)
    grad = builder.recovery.gradient(u)
    hess = builder.recovery.hessian(grad)[..., upper[0], upper[1]]
    grad_x, hess_x = at_dst(interpolate, grad), at_dst(interpolate, hess)
    grad_corr = np.einsum("tnfd,nd->tnf", grad_x, dst.points) - at_dst(interpolate, np.einsum("tsfd,sd->tsf", grad,
                                                                                              src.points))
    hess_corr = np.einsum("tnfc,nc->tnf", hess_x, builder.second_moment_upper)
    smoothed, unsharp, done = u, [], 0
    for steps in SMOOTHING_STEPS:
        for _ in range(steps - done):
            smoothed = at_dst(builder.smoothing, smoothed)
        done = steps
        unsharp.append(at_dst(interpolate, u - smoothed))
    h = mean_edge_length(src.points, src.cells)
    shifted = [
        at_dst(InterpolationOperator.build(src.points, src.cells, dst.points + h * offset).matrix.tocsr(), u) - interp
        for _, offset in shift_vectors(builder.dim)
    ]
    at_vertices = u[:, builder.stencil.vertices]  # (T, N, k, F)
    frames = np.arange(t_len)
    per_field = np.stack(
        [
            interp,
            *np.moveaxis(at_vertices - interp[:, :, None, :], 2, 0),
            grad_corr,
            hess_corr,
            *np.moveaxis(grad_x, -1, 0),
            *np.moveaxis(hess_x, -1, 0),
            *unsharp,
            *shifted,
            interp_all[np.maximum(frames - 1, 0)] - interp,
            interp_all[np.minimum(frames + 1, t_len - 1)] - interp,
        ],
        axis=-1,
    )  # (T, N, F, per_field)
    scale = np.sqrt(np.mean(at_vertices**2, axis=2)) + SCALE_FLOOR * builder.field_std
    per_field /= scale[..., None]
    geometry = np.broadcast_to(builder.geometry, (t_len, *builder.geometry.shape))
    features = np.concatenate([geometry, per_field.reshape(t_len, len(dst.points), -1)], axis=-1)
    return features.astype(np.float32), scale.astype(np.float32)


@pytest.mark.parametrize("use_coordinates", [True, False])
def test_kernel_features_match_the_operators_written_out_in_numpy(tmp_path, use_coordinates):
    tiny = write_tiny_pair(tmp_path, simulations=2, frames=4)
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    builder = data.feature_builder(use_coordinates=use_coordinates, field_std=np.array([0.3, 2.0]))
    assert len(builder.names) == builder.n_features
    for sim in range(2):
        got, scales = data.features(builder, sim)
        expected, expected_scales = reference_features(builder, data, sim)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_array_equal(scales, expected_scales)
        # float32 source quantities (gradient, Hessian, unsharp masks) and the order of the float64 sums:
        # differences at float32 rounding of each column's magnitude
        column_size = np.abs(expected).max(axis=(0, 1))
        assert np.all(np.abs(got - expected) <= 1e-5 * np.abs(expected) + 1e-6 * column_size)


def test_rows_in_any_order_equal_those_rows_of_the_whole_simulation():
    data = pair_from_function(lambda p, t: np.sin(3 * p[:, :1] + t) * np.cos(2 * p[:, 1:]), frames=5)
    builder = data.feature_builder()
    fields, interpolated = data.source_mesh.fields[0], data.cache.interpolated[0]
    whole, scales = builder.simulation(fields, interpolated)
    quantities = builder.source_quantities(fields)
    rng = np.random.default_rng(0)
    frames, nodes = rng.integers(0, 5, 300), rng.integers(0, interpolated.shape[1], 300)
    cached = [interpolated[np.clip(frames + shift, 0, 4), nodes] for shift in (0, -1, 1)]
    x, s = builder.rows(quantities, frames, nodes, *cached)
    assert np.array_equal(x, whole[frames, nodes]) and np.array_equal(s, scales[frames, nodes])
    # frames picked out of order, a few at a time, give the same frames
    got = list(builder.frame_chunks(fields, interpolated, (4, 0, 2), chunk=2))
    assert [list(f) for f, _, _ in got] == [[4, 0], [2]]
    assert np.array_equal(np.concatenate([x for _, x, _ in got]), whole[[4, 0, 2]])
    assert np.array_equal(np.concatenate([s for _, _, s in got]), scales[[4, 0, 2]])
