"""The interpolation operator: a sparse matrix W with ``W @ f_src = f_dst``.

For a destination point :math:`x` inside source cell :math:`K = [v_0, \\dots, v_D]`
the row of :math:`W` holds the barycentric coordinates :math:`\\lambda_i(x)` at the
columns of the cell's vertices, where

.. math::  x = \\sum_i \\lambda_i v_i, \\qquad \\sum_i \\lambda_i = 1,

so P1 (piecewise-linear) fields on the source cells are reproduced exactly.  Points in
no source cell (outside the source domain, in its holes) get weight 1 on the nearest
source node and are flagged ``extrapolated``.  Located rows keep all D+1 entries, even
a zero weight, so the containing cell can be read back from the matrix.

Point location (:mod:`meshsr.interp.locate`) uses the source cells themselves, never a
Delaunay triangulation of the points, which bridges holes and concave boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from meshsr.interp.locate import locate_points

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
