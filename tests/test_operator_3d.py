"""The interpolation operator on tetrahedra, against computations that share nothing with meshsr.

* every row is checked against the barycentric coordinates of the tetrahedra that contain
  the point, found by brute force (a 4 x 4 system per tetrahedron, solved here);
* linear fields are reproduced exactly;
* on scipy's own Delaunay tetrahedralisation of the source points (a convex domain) the
  operator is the interpolant of ``scipy.interpolate.LinearNDInterpolator``, node for node.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import Delaunay

from meshsr.example.cube import make_mesh
from meshsr.interp.operator import InterpolationOperator

INSIDE = -1e-12  # barycentric coordinates above this count as inside (round-off of a point on a face)


def barycentric_all(points: np.ndarray, cells: np.ndarray, queries: np.ndarray) -> np.ndarray:
    r"""(Q, M, 4): :math:`\lambda` of every query in every tetrahedron, from

    .. math:: \begin{pmatrix} v_0 & v_1 & v_2 & v_3 \\ 1 & 1 & 1 & 1 \end{pmatrix} \lambda
              = \begin{pmatrix} x \\ 1 \end{pmatrix}.
    """
    systems = np.concatenate([np.swapaxes(points[cells], 1, 2), np.ones((len(cells), 1, 4))], axis=1)  # (M, 4, 4)
    inverse = np.linalg.inv(systems)
    rhs = np.column_stack([queries, np.ones(len(queries))])  # (Q, 4)
    return np.einsum("mij,qj->qmi", inverse, rhs)


def rows(op: InterpolationOperator) -> list[tuple[np.ndarray, np.ndarray]]:
    m = op.matrix
    spans = zip(m.indptr[:-1], m.indptr[1:], strict=True)
    return [(m.indices[a:b], m.data[a:b]) for a, b in spans]


@pytest.fixture(scope="module")
def cube_pair():
    """A coarse example tetrahedral mesh; destinations: an independent finer mesh's nodes and random points."""
    points, cells = make_mesh(216, 11)
    fine, _ = make_mesh(1000, 12)
    queries = np.concatenate([fine, np.random.default_rng(3).random((400, 3))])
    return points, cells, queries


def test_rows_are_the_barycentric_coordinates_of_a_containing_tetrahedron(cube_pair):
    points, cells, queries = cube_pair
    op = InterpolationOperator.build(points, cells, queries)
    assert not op.extrapolated.any()  # both meshes fill the unit cube
    lam = barycentric_all(points, cells, queries)
    containing = lam.min(axis=2) >= INSIDE  # (Q, M)
    assert containing.any(axis=1).all()
    cell_of = {tuple(sorted(c)): k for k, c in enumerate(cells)}
    for q, (cols, weights) in enumerate(rows(op)):
        assert len(cols) == 4
        k = cell_of[tuple(sorted(cols))]  # the row names the vertices of one source cell ...
        assert containing[q, k]  # ... that contains the point ...
        expected = dict(zip(cells[k], lam[q, k], strict=True))
        np.testing.assert_allclose(weights, [expected[c] for c in cols], atol=1e-12)  # ... with its coordinates


def test_linear_fields_are_reproduced_exactly(cube_pair):
    points, cells, queries = cube_pair
    op = InterpolationOperator.build(points, cells, queries)
    coefficients = np.random.default_rng(4).normal(size=(4, 3))  # three linear fields a + b . x
    linear = lambda x: coefficients[0] + x @ coefficients[1:]  # noqa: E731
    np.testing.assert_allclose(op.apply(linear(points)), linear(queries), rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.matrix.sum(axis=1).A1, 1.0, atol=1e-14)  # the constant is a linear field too


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_linear_nd_interpolator_on_scipys_delaunay(seed):
    rng = np.random.default_rng(seed)
    points = rng.random((400, 3))
    cells = Delaunay(points).simplices  # the source mesh IS scipy's Delaunay of the points
    queries = np.concatenate([points, rng.random((2000, 3)) * 1.1 - 0.05])  # the nodes, inside and outside the hull
    values = rng.normal(size=(len(points), 2))  # not linear: the two interpolants agree only on the same cells
    op = InterpolationOperator.build(points, cells, queries)
    reference = LinearNDInterpolator(points, values)(queries)  # triangulates the points itself
    outside = np.isnan(reference).any(axis=1)
    np.testing.assert_array_equal(op.extrapolated, outside)
    assert outside.any() and not outside[: len(points)].any()
    ours = op.apply(values)
    np.testing.assert_allclose(ours[~outside], reference[~outside], rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours[: len(points)], values, rtol=0, atol=1e-12)  # exact at every source node
