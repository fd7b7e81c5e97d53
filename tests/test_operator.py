"""The interpolation operator: exact on P1 fields of the source cells, never across holes."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from cache_helpers import pickled_object_npz, rewrite_npz, trap_fires
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import Delaunay

from meshsr.errors import InputError
from meshsr.interp.locate import locate_points
from meshsr.interp.operator import METHOD, InterpolationOperator, operator_problem


def grid_mesh_long_diagonals(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Jittered grid on [0, 1]^2 whose quads are split along their *longer* diagonal: not Delaunay."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    pts = np.column_stack([x.ravel(), y.ravel()])
    inner = (pts > 0).all(axis=1) & (pts < 1).all(axis=1)
    pts[inner] += rng.uniform(-0.25, 0.25, (inner.sum(), 2)) / n
    idx = np.arange(n * n).reshape(n, n)
    cells = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = idx[i, j], idx[i + 1, j], idx[i + 1, j + 1], idx[i, j + 1]
            if np.linalg.norm(pts[a] - pts[c]) >= np.linalg.norm(pts[b] - pts[d]):
                cells += [[a, b, c], [a, c, d]]
            else:
                cells += [[a, b, d], [b, c, d]]
    return pts, np.array(cells)


def annulus_mesh(n_r: int = 6, n_t: int = 40, r0: float = 0.4, r1: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Structured triangulation of an annulus: a domain with a hole."""
    r = np.linspace(r0, r1, n_r)
    t = np.linspace(0, 2 * np.pi, n_t, endpoint=False)
    rr, tt = np.meshgrid(r, t, indexing="ij")
    pts = np.column_stack([(rr * np.cos(tt)).ravel(), (rr * np.sin(tt)).ravel()])
    idx = np.arange(n_r * n_t).reshape(n_r, n_t)
    cells = []
    for i in range(n_r - 1):
        for j in range(n_t):
            a, b = idx[i, j], idx[i, (j + 1) % n_t]
            c, d = idx[i + 1, (j + 1) % n_t], idx[i + 1, j]
            cells += [[a, b, c], [a, c, d]]
    return pts, np.array(cells)


def points_in_cells(pts: np.ndarray, cells: np.ndarray, n: int, seed: int = 1):
    """Random points inside random cells, with their exact barycentric weights."""
    rng = np.random.default_rng(seed)
    which = rng.integers(len(cells), size=n)
    w = rng.dirichlet(np.ones(cells.shape[1]), size=n)
    q = np.einsum("nk,nkd->nd", w, pts[cells[which]])
    return q, which, w


def p1_values(values: np.ndarray, cells: np.ndarray, which: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("nk,nk...->n...", w, values[cells[which]])


def test_reproduces_p1_fields_on_non_delaunay_cells():
    pts, cells = grid_mesh_long_diagonals()
    assert not np.array_equal(np.sort(np.sort(Delaunay(pts).simplices, 1), 0), np.sort(np.sort(cells, 1), 0))
    q, which, w = points_in_cells(pts, cells, 2000)
    f = np.random.default_rng(2).normal(size=(len(pts), 3))
    op = InterpolationOperator.build(pts, cells, q)
    expected = p1_values(f, cells, which, w)
    np.testing.assert_allclose(op.apply(f), expected, atol=1e-12)
    assert not op.extrapolated.any()
    # A Delaunay-based interpolator of the same points gets these values wrong.
    delaunay = np.column_stack([LinearNDInterpolator(pts, f[:, k])(q) for k in range(3)])
    assert np.nanmax(np.abs(delaunay - expected)) > 1e-3


def test_hole_is_not_bridged_and_points_in_it_are_extrapolated():
    pts, cells = annulus_mesh()
    q_in, which, w = points_in_cells(pts, cells, 1000)
    rng = np.random.default_rng(3)
    radius, angle = rng.uniform(0, 0.3, 50), rng.uniform(0, 2 * np.pi, 50)  # inside the hole r < 0.4 cos(pi/40)
    q_hole = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    f = rng.normal(size=len(pts))
    op = InterpolationOperator.build(pts, cells, np.vstack([q_in, q_hole]))
    out = op.apply(f[:, None])[:, 0]
    np.testing.assert_allclose(out[:1000], p1_values(f, cells, which, w), atol=1e-12)
    assert not op.extrapolated[:1000].any() and op.extrapolated[1000:].all()
    nearest = np.argmin(np.linalg.norm(q_hole[:, None] - pts[None], axis=2), axis=1)
    np.testing.assert_array_equal(out[1000:], f[nearest])


def test_rows_sum_to_one_and_keep_cell_structure():
    pts, cells = annulus_mesh()
    q = np.random.default_rng(4).uniform(-1.2, 1.2, (3000, 2))
    op = InterpolationOperator.build(pts, cells, q)
    np.testing.assert_allclose(np.asarray(op.matrix.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    nnz = np.diff(op.matrix.indptr)
    assert set(nnz[~op.extrapolated]) == {3} and set(nnz[op.extrapolated]) == {1}
    assert op.extrapolated.any() and (~op.extrapolated).any()


def test_agrees_with_linear_nd_interpolator_on_convex_delaunay_mesh():
    rng = np.random.default_rng(5)
    pts = rng.random((800, 2))
    cells = Delaunay(pts).simplices
    q = rng.uniform(-0.1, 1.1, (5000, 2))
    f = rng.normal(size=len(pts))
    op = InterpolationOperator.build(pts, cells, q)
    ref = LinearNDInterpolator(pts, f)(q)
    outside = np.isnan(ref)
    np.testing.assert_array_equal(op.extrapolated, outside)
    np.testing.assert_allclose(op.apply(f[:, None])[~outside, 0], ref[~outside], atol=1e-10)


def test_outside_points_take_nearest_node():
    pts, cells = grid_mesh_long_diagonals(6)
    q = np.array([[1.5, 0.5], [-0.2, -0.3], [0.5, 2.0]])
    f = np.arange(len(pts), dtype=float)
    op = InterpolationOperator.build(pts, cells, q)
    assert op.extrapolated.all()
    nearest = np.argmin(np.linalg.norm(q[:, None] - pts[None], axis=2), axis=1)
    np.testing.assert_array_equal(op.apply(f[:, None])[:, 0], f[nearest])


def test_tetrahedra_3d():
    rng = np.random.default_rng(6)
    pts = rng.random((300, 3))
    cells = Delaunay(pts).simplices
    q, which, w = points_in_cells(pts, cells, 1000)
    f = rng.normal(size=len(pts))
    op = InterpolationOperator.build(pts, cells, q)
    np.testing.assert_allclose(op.apply(f[:, None])[:, 0], p1_values(f, cells, which, w), atol=1e-12)
    assert not op.extrapolated.any()


def test_apply_handles_simulation_and_time_axes():
    pts, cells = grid_mesh_long_diagonals(8)
    q, which, w = points_in_cells(pts, cells, 200)
    fields = np.random.default_rng(7).normal(size=(2, 3, len(pts), 4)).astype(np.float32)
    op = InterpolationOperator.build(pts, cells, q)
    out = op.apply(fields)
    assert out.shape == (2, 3, 200, 4) and out.dtype == np.float32
    for s in range(2):
        for t in range(3):
            np.testing.assert_allclose(out[s, t], op.matrix @ fields[s, t].astype(np.float64), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="nodes"):
        op.apply(fields[..., :-1, :])


@pytest.mark.parametrize(
    ("in_type", "out_type"),
    [(np.float32, None), (np.float64, None), (np.float64, np.float32), (np.float32, np.float64)],
)
@pytest.mark.parametrize("group_bytes", [1, 5000, 32 << 20], ids=["one-frame", "some-frames", "all-frames"])
def test_compiled_apply_gives_scipys_product_to_the_last_bit(monkeypatch, in_type, out_type, group_bytes):
    """Located rows of 3 (2D) and 4 (3D) entries, extrapolated rows of 1; frames copied node-major in groups."""
    from meshsr.interp import operator

    monkeypatch.setattr(operator, "_GROUP_BYTES", group_bytes)
    rng = np.random.default_rng(10)
    for pts in (rng.random((60, 2)), rng.random((60, 3))):
        op = InterpolationOperator.build(pts, Delaunay(pts).simplices, rng.uniform(-0.2, 1.2, (400, pts.shape[1])))
        assert op.extrapolated.any() and not op.extrapolated.all()
        fields = rng.normal(size=(2, 7, len(pts), 3)).astype(in_type)
        out = op.apply(fields, dtype=out_type)
        expected = np.stack([[op.matrix @ frame for frame in sim] for sim in fields])
        assert out.dtype == (out_type or in_type)
        np.testing.assert_array_equal(out, expected.astype(out.dtype))


def test_apply_writes_into_a_given_output():
    pts, cells = grid_mesh_long_diagonals(6)
    op = InterpolationOperator.build(pts, cells, points_in_cells(pts, cells, 50)[0])
    fields = np.random.default_rng(12).normal(size=(3, len(pts), 2)).astype(np.float32)
    buffer = np.full((3, 50, 2), np.nan, dtype=np.float32)
    assert op.apply(fields, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, op.apply(fields))
    np.testing.assert_array_equal(op.apply(fields, out=np.empty((3, 50, 2))), op.apply(fields, dtype=np.float64))
    wrong = [
        np.empty((3, 50, 2)),
        np.empty((3, 49, 2), np.float32),
        np.empty((3, 2, 50), np.float32).transpose(0, 2, 1),
    ]
    for buffer in wrong:
        with pytest.raises(ValueError, match="out must be"):
            op.apply(fields, dtype=np.float32, out=buffer)


def test_apply_of_integer_fields_takes_the_sparse_product():
    pts, cells = grid_mesh_long_diagonals(6)
    op = InterpolationOperator.build(pts, cells, points_in_cells(pts, cells, 50)[0])
    fields = np.arange(len(pts) * 2).reshape(len(pts), 2)
    out = op.apply(fields)
    assert out.dtype == fields.dtype
    np.testing.assert_array_equal(out, (op.matrix @ fields).astype(fields.dtype))


def test_a_node_shared_by_cells_goes_to_the_lowest_cell_index():
    """On an integer grid every cell around a vertex scores exactly 0 there: the lowest cell index wins,
    whatever order the cells come in."""
    n = 5
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pts = np.column_stack([x.ravel(), y.ravel()]).astype(float)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    cells = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    inner = np.flatnonzero(((pts > 0) & (pts < n - 1)).all(axis=1))
    for order in (np.arange(len(cells)), np.random.default_rng(11).permutation(len(cells))):
        cell, lam = locate_points(pts, cells[order], pts[inner])
        around = [np.flatnonzero((cells[order] == v).any(axis=1)) for v in inner]
        assert all(len(a) == 6 for a in around)
        np.testing.assert_array_equal(cell, [a.min() for a in around])
        np.testing.assert_array_equal(np.sort(lam, axis=1), np.tile([0.0, 0.0, 1.0], (len(inner), 1)))


def test_kernels_take_a_jobs_thread_count_from_omp_num_threads():
    code = "import numba; from meshsr.interp import kernels; print(numba.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    for omp, expected in (("1", "1"), ("", str(numba.config.NUMBA_NUM_THREADS))):
        run = subprocess.run(
            [sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": omp}, capture_output=True, text=True
        )
        assert run.stdout.strip() == expected, run.stderr


def test_degenerate_cells_are_skipped():
    pts = np.array([[0, 0], [1, 0], [0, 1], [2, 0]], dtype=float)
    cells = np.array([[0, 1, 2], [0, 1, 3]])  # the second is flat
    cell, lam = locate_points(pts, cells, np.array([[0.2, 0.2], [1.5, 0.0]]))
    assert cell[0] == 0 and cell[1] == -1
    np.testing.assert_allclose(lam[0], [0.6, 0.2, 0.2])


# --- the operator as a file of its own: save / load ---


@pytest.fixture
def saved(tmp_path):
    """An operator with extrapolated rows (an annulus, points in its hole), saved to a file."""
    pts, cells = annulus_mesh()
    q = np.random.default_rng(8).uniform(-1.1, 1.1, (150, 2))
    op = InterpolationOperator.build(pts, cells, q)
    assert op.extrapolated.any() and not op.extrapolated.all()
    path = tmp_path / "ops" / "coarse_fine.npz"
    op.save(path)
    return op, path


def test_save_load_round_trip_applies_the_same_weights(saved):
    op, path = saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # atomic: no temporary file left
    loaded = InterpolationOperator.load(path)
    assert loaded.method == METHOD and loaded.shape == op.shape
    assert (loaded.matrix != op.matrix).nnz == 0 and loaded.matrix.dtype == np.float64
    np.testing.assert_array_equal(loaded.extrapolated, op.extrapolated)
    fields = np.random.default_rng(9).normal(size=(2, op.shape[1], 3))
    np.testing.assert_array_equal(loaded.apply(fields), op.apply(fields))


def test_load_keeps_the_recorded_method(saved):
    op, path = saved
    InterpolationOperator(op.matrix, op.extrapolated, method="another-method").save(path)
    assert InterpolationOperator.load(path).method == "another-method"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "cannot read it as a plain-array npz"),
        (lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000)), "cannot read it as a plain-array npz"),
        (lambda p: rewrite_npz(p, op_indices=np.full(3, 10**6)), "operator index/data lengths disagree"),
        (lambda p: rewrite_npz(p, op_data=np.full_like(np.load(p)["op_data"], np.nan)), "NaN/Inf in operator weights"),
        (lambda p: rewrite_npz(p, op_shape=np.array([1, 2, 3])), "op_shape must be 2 integers"),
        (lambda p: rewrite_npz(p, extrapolated=None), "missing arrays ['extrapolated']"),
        (lambda p: rewrite_npz(p, method=np.array([1.0])), "'method' must be a 0-d string"),
        (lambda p: np.save(open(p, "wb"), np.zeros(3)), "a single .npy array"),
        (lambda p: p.unlink(), "does not exist"),
    ],
    ids=["truncated", "random-bytes", "lengths", "nan", "shape", "missing", "method", "npy", "missing-file"],
)
def test_a_damaged_operator_file_is_one_error_naming_it(saved, damage, problem):
    _, path = saved
    damage(path)
    with pytest.raises(InputError) as info:
        InterpolationOperator.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_out_of_range_index_is_refused_by_the_check_the_cache_reader_shares(saved):
    op, path = saved
    arrays = op.arrays()
    arrays["op_indices"][0] = op.shape[1]
    assert operator_problem(arrays) == "operator indices out of range"
    assert operator_problem(op.arrays(), n_dst=op.shape[0] + 1).startswith("operator shape")
    rewrite_npz(path, op_indices=arrays["op_indices"])
    with pytest.raises(InputError, match="invalid interpolation operator: operator indices out of range"):
        InterpolationOperator.load(path)


def test_a_pickled_array_is_refused_without_running_it(saved, tmp_path):
    assert trap_fires(tmp_path)
    _, path = saved
    marker = tmp_path / "executed"
    pickled_object_npz(path, marker, template=path, key="method")
    with pytest.raises(InputError, match="not an interpolation operator"):
        InterpolationOperator.load(path)
    assert not marker.exists()
