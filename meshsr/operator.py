"""The interpolation operator: a sparse matrix W with ``W @ f_src = f_dst``.

For a destination point :math:`x` inside source cell :math:`K = [v_0, \\dots, v_D]`
the row of :math:`W` holds the barycentric coordinates :math:`\\lambda_i(x)` at the
columns of the cell's vertices, where

.. math::  x = \\sum_i \\lambda_i v_i, \\qquad \\sum_i \\lambda_i = 1,

so P1 (piecewise-linear) fields on the source cells are reproduced exactly.  Points in
no source cell (outside the source domain, in its holes) get weight 1 on the nearest
source node and are flagged ``extrapolated``.  Located rows keep all D+1 entries, even
a zero weight, so the containing cell can be read back from the matrix.

Point location uses the source cells themselves (never a Delaunay of the points, which
bridges holes and concave boundaries): cells are binned by bounding box into a uniform
grid, and each query is tested only against the cells of its grid bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

METHOD = "p1-barycentric-on-source-cells+nearest-node-fallback"


@dataclass
class InterpolationOperator:
    """Sparse (N_dst x N_src) interpolation weights, built once per mesh pair."""

    matrix: sp.csr_matrix
    extrapolated: np.ndarray

    @classmethod
    def build(
        cls, src_points: np.ndarray, src_cells: np.ndarray, dst_points: np.ndarray, tol: float = 1e-10
    ) -> InterpolationOperator:
        """Locate every destination point in the source cells and assemble W."""
        src_points = np.asarray(src_points, dtype=np.float64)
        dst_points = np.asarray(dst_points, dtype=np.float64)
        src_cells = np.asarray(src_cells, dtype=np.int64)
        n_dst, n_src, k = len(dst_points), len(src_points), src_cells.shape[1]
        cell, lam = locate_points(src_points, src_cells, dst_points, tol)
        inside = cell >= 0
        extrapolated = ~inside

        counts = np.where(inside, k, 1)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        indices = np.empty(indptr[-1], dtype=np.int64)
        data = np.empty(indptr[-1], dtype=np.float64)
        rows_in = np.flatnonzero(inside)
        pos_in = indptr[rows_in][:, None] + np.arange(k)
        indices[pos_in] = src_cells[cell[rows_in]]
        data[pos_in] = lam[rows_in]
        if extrapolated.any():
            used = np.unique(src_cells)
            _, nearest = cKDTree(src_points[used]).query(dst_points[extrapolated])
            rows_out = np.flatnonzero(extrapolated)
            indices[indptr[rows_out]] = used[nearest]
            data[indptr[rows_out]] = 1.0
        matrix = sp.csr_matrix((data, indices, indptr), shape=(n_dst, n_src))
        return cls(matrix=matrix, extrapolated=extrapolated)

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def apply(self, fields: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
        """Interpolate ``fields`` of shape (..., N_src, F) to (..., N_dst, F).

        One sparse product per frame: it needs no transposed copy of the whole array,
        and frame by frame is what a memory-mapped or streamed input wants anyway.
        """
        fields = np.asarray(fields)
        *lead, n_src, n_f = fields.shape
        if n_src != self.matrix.shape[1]:
            raise ValueError(f"fields have {n_src} nodes, operator expects {self.matrix.shape[1]}")
        flat = fields.reshape(-1, n_src, n_f)
        out = np.empty((len(flat), self.matrix.shape[0], n_f), dtype=dtype or fields.dtype)
        for i, frame in enumerate(flat):
            out[i] = self.matrix @ frame
        return out.reshape(*lead, self.matrix.shape[0], n_f)


def _grid_buckets(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, h: float, shape: np.ndarray):
    """All (bucket, cell) pairs whose grid bucket meets the cell's bounding box [lo, hi]."""
    ilo = np.clip(np.floor((lo - origin) / h).astype(np.int64), 0, shape - 1)
    ihi = np.clip(np.floor((hi - origin) / h).astype(np.int64), 0, shape - 1)
    ext = ihi - ilo + 1
    per_cell = np.prod(ext, axis=1)
    cell_of_pair = np.repeat(np.arange(len(lo)), per_cell)
    offset = np.arange(per_cell.sum()) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    idx = np.empty((len(cell_of_pair), lo.shape[1]), dtype=np.int64)
    for d in range(lo.shape[1]):
        e = ext[cell_of_pair, d]
        idx[:, d] = ilo[cell_of_pair, d] + offset % e
        offset = offset // e
    return np.ravel_multi_index(idx.T, tuple(shape)), cell_of_pair


def locate_points(
    points: np.ndarray, cells: np.ndarray, queries: np.ndarray, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Containing cell (or -1) and barycentric coordinates (Q, D+1) of each query point.

    A point counts as inside when all its barycentric coordinates are >= -tol; on
    shared edges the cell with the largest smallest coordinate wins.  Degenerate
    (zero-volume) cells are skipped.
    """
    n_q, dim = queries.shape
    cell = np.full(n_q, -1, dtype=np.int64)
    lam_out = np.zeros((n_q, dim + 1))
    verts = points[cells]  # (M, D+1, D)
    edges = np.swapaxes(verts[:, 1:] - verts[:, :1], 1, 2)  # columns v_i - v_0
    lo, hi = verts.min(axis=1), verts.max(axis=1)
    scale = np.maximum(np.prod(hi - lo, axis=1), np.finfo(float).tiny)
    good = np.abs(np.linalg.det(edges)) > 1e-12 * scale
    good_ids = np.flatnonzero(good)
    if len(good_ids) == 0 or n_q == 0:
        return cell, lam_out
    inv = np.zeros_like(edges)
    inv[good] = np.linalg.inv(edges[good])

    origin = np.minimum(lo[good].min(axis=0), queries.min(axis=0))
    extent = np.maximum(hi[good].max(axis=0), queries.max(axis=0)) - origin
    extent = np.where(extent > 0, extent, 1.0)
    h = float((np.prod(extent) / len(good_ids)) ** (1.0 / dim))
    shape = np.maximum(np.ceil(extent / h).astype(np.int64), 1)

    bucket, bcell = _grid_buckets(lo[good], hi[good], origin, h, shape)
    order = np.argsort(bucket, kind="stable")
    bucket, bcell = bucket[order], good_ids[bcell[order]]
    starts = np.searchsorted(bucket, np.arange(np.prod(shape) + 1))

    qidx = np.clip(np.floor((queries - origin) / h).astype(np.int64), 0, shape - 1)
    qb = np.ravel_multi_index(qidx.T, tuple(shape))
    n_cand = starts[qb + 1] - starts[qb]
    q_of = np.repeat(np.arange(n_q), n_cand)
    group_start = np.cumsum(n_cand) - n_cand
    cand = bcell[np.repeat(starts[qb] - group_start, n_cand) + np.arange(n_cand.sum())]
    if len(cand) == 0:
        return cell, lam_out

    rel = queries[q_of] - verts[cand, 0]
    lam_rest = np.einsum("nij,nj->ni", inv[cand], rel)
    lam0 = 1.0 - lam_rest.sum(axis=1)
    score = np.minimum(lam0, lam_rest.min(axis=1))

    # Candidates come grouped by query; keep the first candidate with its group's best score.
    nonempty = n_cand > 0
    group_max = np.maximum.reduceat(score, group_start[nonempty])
    is_best = np.flatnonzero(score == np.repeat(group_max, n_cand[nonempty]))
    best = is_best[np.concatenate([[True], q_of[is_best[1:]] != q_of[is_best[:-1]]])]
    best = best[score[best] >= -tol]
    found_q = q_of[best]
    cell[found_q] = cand[best]
    lam_out[found_q, 0] = lam0[best]
    lam_out[found_q, 1:] = lam_rest[best]
    return cell, lam_out
