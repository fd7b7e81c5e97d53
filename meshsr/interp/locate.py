r"""Point location in a simplicial mesh: containing cell and barycentric coordinates.

Cells are binned by bounding box into a uniform grid of about one cell per bucket (a
cell is listed in every bucket its box meets); each query is tested only against the
cells of its own bucket.  The loops are compiled (:mod:`meshsr.interp.kernels`) and run
over the queries one at a time, in parallel over blocks of queries, so memory holds the
mesh, the bucket lists and the answers, never a (query, candidate cell) pair list.

Cell maps and the degeneracy rule are :mod:`meshsr.mesh.geometry`'s (LAPACK's determinant
and inverse of each cell's E), so weights are the same to the last bit as before.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

from meshsr.mesh.geometry import DEGENERACY


def _cell_maps(points: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell E (M, D, D), columns :math:`v_i - v_0`, and the non-degenerate mask (M,): the degeneracy
    rule of :func:`affine_maps` (on LAPACK's determinant of the same E)."""
    from meshsr.interp import kernels

    n, dim = len(cells), points.shape[1]
    edges = np.empty((n, dim, dim))
    box = np.empty(n)
    kernels.cell_edges(points, cells, edges, box)
    threshold = DEGENERACY * np.maximum(box, np.finfo(float).tiny)
    del box
    if dim > 3:
        good = np.abs(np.linalg.det(edges)) > threshold
    else:
        # The rule is on LAPACK's determinant; every term of det E is at most the box volume, so
        # the closed form and LAPACK agree to ~1e-15 box: LAPACK decides only near the threshold.
        closed = np.abs(kernels.determinants(edges))
        good = closed > threshold
        near = np.flatnonzero((closed > 0.5 * threshold) & (closed < 2.0 * threshold))
        if len(near):
            good[near] = np.abs(np.linalg.det(edges[near])) > threshold[near]
    return edges, good


def _packed_maps(points: np.ndarray, cells: np.ndarray, edges: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Per cell ``[v_0, E^{-1} row-major]`` (M, D + D^2), zero where not ``good``.

    The same numbers as :func:`affine_maps` (LAPACK's inverse of the same E), without its
    per-cell vertex and index copies.
    """
    n, dim = len(cells), points.shape[1]
    packed = np.zeros((n, dim + dim * dim))
    packed[:, :dim] = points[cells[:, 0]]
    if good.all():
        packed[:, dim:] = np.linalg.inv(edges).reshape(n, -1)
    else:
        packed[good, dim:] = np.linalg.inv(edges[good]).reshape(-1, dim * dim)
    return packed


def locate_points(
    points: np.ndarray, cells: np.ndarray, queries: np.ndarray, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Containing cell (or -1) and barycentric coordinates (Q, D+1) of each query point.

    A point counts as inside when all its barycentric coordinates are >= -tol; on
    shared edges the cell with the largest smallest coordinate wins (the lowest cell
    index among equals).  Degenerate (zero-volume) cells are skipped.
    """
    import numba

    from meshsr.interp import kernels

    points = np.ascontiguousarray(points, dtype=np.float64)
    queries = np.ascontiguousarray(queries, dtype=np.float64)
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    n_q, dim = queries.shape
    edges, good = _cell_maps(points, cells) if len(cells) else (None, np.zeros(0, dtype=bool))
    good_ids = np.flatnonzero(good)
    if n_q == 0 or len(good_ids) == 0:
        return np.full(n_q, -1, dtype=np.int64), np.zeros((n_q, dim + 1))

    # With more than one thread, the inverses (numpy's LAPACK loop, one core) are computed while
    # the compiled kernels, which release the GIL, bin the cells.
    with ThreadPoolExecutor(1) if numba.get_num_threads() > 1 else nullcontext() as pool:
        inverses = pool.submit(_packed_maps, points, cells, edges, good) if pool else None
        origin, top = kernels.bounds(points, cells, good, queries)
        extent = top - origin
        extent = np.where(extent > 0, extent, 1.0)
        h = float((np.prod(extent) / len(good_ids)) ** (1.0 / dim))
        shape = np.maximum(np.ceil(extent / h).astype(np.int64), 1)
        starts, members = kernels.cell_buckets(points, cells, good_ids, origin, h, shape)
        packed = inverses.result() if inverses else _packed_maps(points, cells, edges, good)
    del edges
    cell = np.empty(n_q, dtype=np.int64)  # the kernel writes every entry: -1 and zeros where outside
    lam = np.empty((n_q, dim + 1))
    below_tol = float(np.nextafter(-float(tol), -np.inf))
    kernels.locate_in_buckets(queries, packed, starts, members, origin, h, shape, below_tol, cell, lam)
    return cell, lam
