"""Property-based tests of :meth:`InterpolationOperator.build` on random simplicial meshes.

Meshes: the Delaunay triangulation (2D) or tetrahedralisation (3D) of D+2 to 40 random points in
a scaled and shifted unit box, without its flat cells (quality below ``MIN_QUALITY``: the
bundle reader refuses degenerate cells, and a near-flat cell's barycentric coordinates carry
rounding errors the size of the tolerance band below), and with up to half the remaining
cells removed at random, which leaves holes, non-convex boundaries and unused points.
Queries: random points in a box wider than the mesh, every source point, edge midpoints, the
centroids of the removed cells, and points just past a facet of a cell (by 1e-6, 1e-9 or
1e-12 in barycentric terms, either side of the location tolerance).

Properties, per row of W:

* every row sums to 1;
* a located row holds D+1 weights in [0, 1] (within the location tolerance) on the vertices
  of one source cell, and reproduces linear functions exactly;
* ``extrapolated`` is "outside every cell", decided by an independent brute-force test
  (the (D+1) x (D+1) system [v_0 ... v_D; 1 ... 1] lambda = [x; 1] solved against every
  cell, not the library's location); queries within ``BAND`` of the tolerance boundary
  are left out, where rounding may fairly decide either way;
* an extrapolated row is weight 1 on a nearest node among those the cells use.

Hypothesis settings (``SETTINGS``): max_examples=50 per test and dimension, deadline=None
(timings vary on shared CI machines), derandomize=True (the same examples on every run, so
CI never fails on a new random draw), database=None (no example database is kept).
Shrinking works on the drawn seed, sizes and fractions, so a failure reports a small case.
The whole file runs in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial import Delaunay

from meshsr.interp.operator import InterpolationOperator

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None)
DIMS = pytest.mark.parametrize("dim", [2, 3])
TOL = 1e-10  # InterpolationOperator.build's default location tolerance
BAND = 1e-11  # queries this close to the tolerance boundary may go either way
MIN_QUALITY = 0.05  # |det E| / (longest edge)^D of the cells kept: equilateral 0.87, regular tetrahedron 0.71


@dataclass
class Case:
    points: np.ndarray
    cells: np.ndarray
    queries: np.ndarray


def _quality(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """|det E| / L^D per cell, L its longest edge: 0 for a flat cell."""
    verts = points[cells]
    dim = points.shape[1]
    det = np.abs(np.linalg.det(verts[:, 1:] - verts[:, :1]))
    pairs = [(i, j) for i in range(dim + 1) for j in range(i + 1, dim + 1)]
    longest = np.max([np.linalg.norm(verts[:, i] - verts[:, j], axis=1) for i, j in pairs], axis=0)
    return det / longest**dim


@st.composite
def meshes(draw, dim: int) -> Case:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e4]))
    offset = draw(st.floats(-2.0, 2.0))
    points = scale * (offset + rng.random((draw(st.integers(dim + 2, 40)), dim)))
    cells = Delaunay(points).simplices
    cells = cells[_quality(points, cells) >= MIN_QUALITY]
    removed = rng.random(len(cells)) < draw(st.floats(0.0, 0.5))
    assume(not removed.all())
    kept, gone = cells[~removed], cells[removed]
    lo, hi = points.min(axis=0), points.max(axis=0)
    outer = rng.uniform(lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo), (draw(st.integers(1, 40)), dim))
    i = rng.integers(0, dim + 1, len(kept))
    j = (i + rng.integers(1, dim + 1, len(kept))) % (dim + 1)  # another vertex of the same cell
    row = np.arange(len(kept))
    midpoints = 0.5 * (points[kept[row, i]] + points[kept[row, j]])
    centroids = points[gone].mean(axis=1) if len(gone) else np.empty((0, dim))
    return Case(points, kept, np.concatenate([outer, points, midpoints, centroids, _past_a_facet(points, kept, rng)]))


def _past_a_facet(points: np.ndarray, cells: np.ndarray, rng: np.random.Generator, n: int = 30) -> np.ndarray:
    """Points just past one facet of a random cell (barycentric -1e-6, -1e-9 or -1e-12 there):
    inside the neighbour across an inner facet, outside the mesh (or within tolerance) across a boundary one."""
    which = rng.integers(0, len(cells), n)
    lam = rng.dirichlet(np.ones(cells.shape[1]), n)
    facet = rng.integers(0, cells.shape[1], n)
    past = rng.choice([1e-6, 1e-9, 1e-12], n)
    lam[np.arange(n), facet] = 0.0
    lam *= ((1.0 + past) / lam.sum(axis=1))[:, None]
    lam[np.arange(n), facet] = -past
    return np.einsum("nk,nkd->nd", lam, points[cells[which]])


def brute_force_depth(points: np.ndarray, cells: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per query, the largest over all cells of its smallest barycentric coordinate (>= 0: inside)."""
    dim = points.shape[1]
    system = np.ones((len(cells), dim + 1, dim + 1))
    system[:, :dim, :] = np.swapaxes(points[cells], 1, 2)  # column i: [v_i; 1]
    rhs = np.ones((len(queries), dim + 1))
    rhs[:, :dim] = queries
    lam = np.linalg.solve(system[None], rhs[:, None, :, None])[..., 0]  # (Q, M, D+1)
    return lam.min(axis=2).max(axis=1)


def build(case: Case) -> InterpolationOperator:
    return InterpolationOperator.build(case.points, case.cells, case.queries)


def rows(op: InterpolationOperator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(columns, weights) of every row of W."""
    m = op.matrix
    return [(m.indices[a:b], m.data[a:b]) for a, b in zip(m.indptr[:-1], m.indptr[1:], strict=True)]


@DIMS
@SETTINGS
@given(data=st.data())
def test_every_row_sums_to_one(dim, data):
    op = build(data.draw(meshes(dim)))
    np.testing.assert_allclose(np.asarray(op.matrix.sum(axis=1)).ravel(), 1.0, rtol=0, atol=1e-12)


@DIMS
@SETTINGS
@given(data=st.data())
def test_located_rows_are_bounded_weights_on_one_cell(dim, data):
    case = data.draw(meshes(dim))
    op = build(case)
    cells = {tuple(sorted(c)) for c in case.cells.tolist()}
    for (cols, weights), out in zip(rows(op), op.extrapolated, strict=True):
        if not out:
            assert tuple(sorted(cols.tolist())) in cells
            assert weights.min() >= -TOL - 1e-12 and weights.max() <= 1 + dim * TOL + 1e-12


@DIMS
@SETTINGS
@given(data=st.data())
def test_linear_functions_are_reproduced_at_located_nodes(dim, data):
    case = data.draw(meshes(dim))
    op = build(case)
    rng = np.random.default_rng(0)
    slope, intercept = rng.normal(size=(dim, 2)), rng.normal(size=2)
    f_src = case.points @ slope + intercept
    exact = case.queries @ slope + intercept
    located = ~op.extrapolated
    size = np.abs(case.points).max() * np.abs(slope).sum(axis=0) + np.abs(intercept)
    np.testing.assert_allclose((op.matrix @ f_src)[located], exact[located], rtol=0, atol=1e-12 * size.max())


@DIMS
@SETTINGS
@given(data=st.data())
def test_extrapolated_means_outside_every_cell(dim, data):
    case = data.draw(meshes(dim))
    op = build(case)
    depth = brute_force_depth(case.points, case.cells, case.queries)
    clear = np.abs(depth + TOL) > BAND
    assert clear.sum() >= len(case.points)  # the band leaves out almost nothing
    np.testing.assert_array_equal(op.extrapolated[clear], (depth < -TOL)[clear])


@DIMS
@SETTINGS
@given(data=st.data())
def test_extrapolated_rows_take_a_nearest_used_node(dim, data):
    case = data.draw(meshes(dim))
    op = build(case)
    used = np.unique(case.cells)
    all_rows = rows(op)
    for i in np.flatnonzero(op.extrapolated):
        (col,), (weight,) = all_rows[i]
        distances = np.linalg.norm(case.points[used] - case.queries[i], axis=1)
        assert weight == 1.0 and col in used
        assert distances[used == col][0] <= distances.min() * (1 + 1e-12)  # ties may go either way
