"""Feature assembly: the stencil read back from the operator, recovered derivatives, scaling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from train_helpers import write_tiny_pair

from meshsr.cache.format import PairCache
from meshsr.errors import InputError
from meshsr.interp.operator import InterpolationOperator
from meshsr.learn.features import FeatureBuilder, Stencil, field_spread, neighbour_average
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
