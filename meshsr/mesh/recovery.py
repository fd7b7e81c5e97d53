"""Recovered nodal derivatives of P1 fields on a simplicial mesh.

On each cell :math:`K` a P1 field has the constant gradient
:math:`\\nabla u|_K = \\sum_i u_{v_i} \\nabla \\lambda_i`.  The recovered nodal gradient
is the volume-weighted average over the cells around a node,

.. math::  G u(v) = \\frac{\\sum_{K \\ni v} |K| \\, \\nabla u|_K}{\\sum_{K \\ni v} |K|},

and the recovered Hessian applies the same recovery to each component of :math:`G u`
and symmetrises the result.  Degenerate (zero-volume) cells are left out; a node that
only touches degenerate cells gets zero derivatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from meshsr.mesh.geometry import affine_maps


@dataclass
class GradientRecovery:
    """The cell gradients of the barycentric coordinates and the cell -> node average."""

    cells: np.ndarray  # (M, D+1)
    grad_lambda: np.ndarray  # (M, D+1, D)
    average: sp.csr_matrix  # (N, M)

    @classmethod
    def build(cls, points: np.ndarray, cells: np.ndarray) -> GradientRecovery:
        points = np.asarray(points, dtype=np.float64)
        cells = np.asarray(cells, dtype=np.int64)
        n, d = points.shape
        maps = affine_maps(points, cells)
        inv = maps.inverse  # rows: grad lambda_1 .. lambda_D
        grad_lambda = np.concatenate([-inv.sum(axis=1, keepdims=True), inv], axis=1)
        volume = np.where(maps.nondegenerate, np.abs(maps.determinant), 0.0)
        m = len(cells)
        rows, cols = cells.ravel(), np.repeat(np.arange(m), d + 1)
        weights = sp.csr_matrix((np.repeat(volume, d + 1), (rows, cols)), shape=(n, m))
        total = np.asarray(weights.sum(axis=1)).ravel()
        inv_total = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
        return cls(cells=cells, grad_lambda=grad_lambda, average=(sp.diags(inv_total) @ weights).tocsr())

    def gradient(self, values: np.ndarray) -> np.ndarray:
        """Recovered gradient of nodal ``values`` (B, N, F) as (B, N, F, D), float64."""
        values = np.asarray(values, dtype=np.float64)
        b, n, f = values.shape
        per_cell = np.einsum("bmkf,mkd->mbfd", values[:, self.cells], self.grad_lambda)
        m, d = per_cell.shape[0], per_cell.shape[-1]
        nodal = self.average @ per_cell.reshape(m, -1)
        return np.ascontiguousarray(nodal.reshape(n, b, f, d).transpose(1, 0, 2, 3))

    def hessian(self, gradient: np.ndarray) -> np.ndarray:
        """Recovered symmetric Hessian (B, N, F, D, D) from a recovered gradient (B, N, F, D)."""
        b, n, f, d = gradient.shape
        hess = self.gradient(gradient.reshape(b, n, f * d)).reshape(b, n, f, d, d)
        return 0.5 * (hess + np.swapaxes(hess, -1, -2))
