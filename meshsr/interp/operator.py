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

An operator is an object of its own, built once and reused (like xESMF's regridding
weights): :meth:`InterpolationOperator.save` writes W in CSR form, ``extrapolated`` and
the method to an ``.npz`` (the arrays of contract 3 that hold the operator, plus
``method``), :meth:`InterpolationOperator.load` reads it back without unpickling and
after checking its structure (:func:`operator_problem`, shared with the pair-cache reader).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from meshsr.atomic import atomic_savez
from meshsr.errors import InputError

if TYPE_CHECKING:
    import scipy.sparse as sp

METHOD = "p1-barycentric-on-source-cells+nearest-node-fallback"
_COMPILED = (np.dtype(np.float32), np.dtype(np.float64))  # field/output types of the compiled product
_BLOCK_VALUES = 1 << 16  # values per thread task in apply (rows x frames x fields): its buffer stays in L2
_GROUP_BYTES = 32 << 20  # apply copies this much of the fields at a time to node-major order
ARRAYS = ("op_indptr", "op_indices", "op_data", "op_shape", "extrapolated")
# What a damaged or foreign file can raise while numpy reads it with allow_pickle=False.
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, MemoryError, zipfile.BadZipFile, struct.error, zlib.error)


def operator_problem(arrays: Mapping[str, np.ndarray], n_dst: int | None = None) -> str | None:
    """Why the :data:`ARRAYS` in ``arrays`` are not a CSR operator (with ``n_dst`` rows if given); None if they are.

    Checked: integer shape with columns, integer indices in range, finite floating
    weights, an ``op_indptr`` of length rows + 1 that starts at 0, never decreases and
    ends at the number of entries, and a boolean ``extrapolated`` per row.
    """
    op_shape = arrays["op_shape"]
    if op_shape.shape != (2,) or not np.issubdtype(op_shape.dtype, np.integer):
        return "op_shape must be 2 integers"
    shape = (int(op_shape[0]), int(op_shape[1]))
    if n_dst is not None and shape[0] != n_dst:
        return f"operator shape {shape} does not match {n_dst} target nodes"
    if shape[0] < 0 or shape[1] <= 0:
        return f"operator shape {shape} has no source nodes or negative rows"
    indptr, indices, weights = arrays["op_indptr"], arrays["op_indices"], arrays["op_data"]
    if not all(np.issubdtype(a.dtype, np.integer) for a in (indptr, indices)):
        return "operator indices must be integers"
    if not np.issubdtype(weights.dtype, np.floating):
        return "operator weights must be floating point"
    if indptr.ndim != 1 or len(indptr) != shape[0] + 1 or indptr[0] != 0:
        return "op_indptr has the wrong length"
    if indices.ndim != 1 or weights.ndim != 1:
        return "operator indices/data must be 1-D"
    if not len(indices) == len(weights) == indptr[-1]:
        return "operator index/data lengths disagree"
    if not np.all(np.diff(indptr) >= 0):
        return "op_indptr is not monotone"
    if len(indices) and (indices.min() < 0 or indices.max() >= shape[1]):
        return "operator indices out of range"
    if not np.isfinite(weights).all():
        return "NaN/Inf in operator weights"
    extrapolated = arrays["extrapolated"]
    if extrapolated.dtype != bool or extrapolated.shape != (shape[0],):
        return "'extrapolated' has the wrong shape"
    return None


@dataclass
class InterpolationOperator:
    """Sparse (N_dst x N_src) interpolation weights, built once per mesh pair."""

    matrix: sp.csr_matrix
    extrapolated: np.ndarray
    method: str = METHOD

    @classmethod
    def build(
        cls, src_points: np.ndarray, src_cells: np.ndarray, dst_points: np.ndarray, tol: float = 1e-10
    ) -> InterpolationOperator:
        """Locate every destination point in the source cells and assemble W."""
        import scipy.sparse as sp  # scipy and numba load on first use, not with the module
        from scipy.spatial import cKDTree

        from meshsr.interp import kernels
        from meshsr.interp.locate import locate_points

        src_points = np.asarray(src_points, dtype=np.float64)
        dst_points = np.asarray(dst_points, dtype=np.float64)
        src_cells = np.asarray(src_cells, dtype=np.int64)
        n_dst, n_src, k = len(dst_points), len(src_points), src_cells.shape[1]
        cell, lam = locate_points(src_points, src_cells, dst_points, tol)
        extrapolated = cell < 0
        rows_out = np.flatnonzero(extrapolated)

        indptr = np.empty(n_dst + 1, dtype=np.int64)
        indptr[0] = 0
        np.cumsum(np.where(extrapolated, 1, k), out=indptr[1:])
        index_type = np.int32 if max(n_src, indptr[-1]) < np.iinfo(np.int32).max else np.int64
        indices = np.empty(indptr[-1], dtype=index_type)
        data = np.empty(indptr[-1], dtype=np.float64)
        kernels.fill_located_rows(cell, lam, src_cells, indptr, indices, data)
        del cell, lam
        if len(rows_out):
            used = np.unique(src_cells)
            _, nearest = cKDTree(src_points[used]).query(dst_points[rows_out])
            indices[indptr[rows_out]] = used[nearest]
            data[indptr[rows_out]] = 1.0
        if index_type == np.int32:
            indptr = indptr.astype(np.int32)
        matrix = sp.csr_matrix((data, indices, indptr), shape=(n_dst, n_src))
        return cls(matrix=matrix, extrapolated=extrapolated)

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def arrays(self) -> dict[str, np.ndarray]:
        """The operator as the plain :data:`ARRAYS` of contract 3 (int64 indices, float64 weights)."""
        return {
            "op_indptr": self.matrix.indptr.astype(np.int64),
            "op_indices": self.matrix.indices.astype(np.int64),
            "op_data": self.matrix.data.astype(np.float64),
            "op_shape": np.array(self.matrix.shape, dtype=np.int64),
            "extrapolated": np.asarray(self.extrapolated, dtype=bool),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], method: str = METHOD) -> InterpolationOperator:
        """Inverse of :meth:`arrays`, for arrays that :func:`operator_problem` accepted."""
        import scipy.sparse as sp

        shape = (int(arrays["op_shape"][0]), int(arrays["op_shape"][1]))
        matrix = sp.csr_matrix((arrays["op_data"], arrays["op_indices"], arrays["op_indptr"]), shape=shape)
        return cls(matrix=matrix, extrapolated=arrays["extrapolated"], method=method)

    def save(self, path: str | Path) -> None:
        """Write the operator atomically to ``path`` (an uncompressed ``.npz``)."""
        atomic_savez(path, **self.arrays(), method=np.array(self.method))

    @classmethod
    def load(cls, path: str | Path) -> InterpolationOperator:
        """Read an operator written by :meth:`save`; anything else is one :class:`InputError` naming the file.

        Never unpickles; ``method`` is the recorded one (compare it with :data:`METHOD`).
        """
        if not Path(path).is_file():
            raise InputError(path, "interpolation operator file does not exist")
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InputError(path, "not an interpolation operator: a single .npy array, not an .npz archive")
            with data:
                missing = [k for k in (*ARRAYS, "method") if k not in data.files]
                if missing:
                    raise InputError(path, f"not an interpolation operator: missing arrays {missing}")
                arrays = {k: data[k] for k in (*ARRAYS, "method")}
        except _READ_ERRORS as exc:
            problem = f"not an interpolation operator: cannot read it as a plain-array npz ({exc})"
            raise InputError(path, problem) from None
        method = arrays["method"]
        problem = operator_problem(arrays)
        if problem is None and (method.ndim != 0 or method.dtype.kind != "U"):
            problem = "'method' must be a 0-d string"
        if problem is not None:
            raise InputError(path, f"invalid interpolation operator: {problem}")
        return cls.from_arrays(arrays, method=str(method))

    def apply(
        self, fields: np.ndarray, dtype: np.dtype | type | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Interpolate ``fields`` of shape (..., N_src, F) to (..., N_dst, F).

        Every output value is :math:`\\sum_j W_{ij} f_j` summed in float64 in the stored
        order of row i and rounded once to ``dtype`` (default: the fields' dtype), the same
        numbers as one scipy sparse product per frame.  Floating-point fields go through
        compiled loops: a group of frames (about ``_GROUP_BYTES``) is copied node-major, so
        a row's weights combine whole contiguous rows of it, and threads over blocks of
        rows write each output value once; no float64 copy of the output is ever made.
        ``out``: a C-contiguous array of the result's shape and dtype to write into (a
        buffer reused across calls spares the cost of fresh memory); it is returned.
        """
        fields = np.asarray(fields)
        *lead, n_src, n_f = fields.shape
        if n_src != self.matrix.shape[1]:
            raise ValueError(f"fields have {n_src} nodes, operator expects {self.matrix.shape[1]}")
        out_type = np.dtype(dtype or (out.dtype if out is not None else fields.dtype))
        flat = fields.reshape(-1, n_src, n_f)
        shape = (*lead, self.matrix.shape[0], n_f)
        if out is None:
            out = np.empty(shape, dtype=out_type)
        elif out.shape != shape or out.dtype != out_type or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {out_type} array of shape {shape}")
        result, out = out, out.reshape(len(flat), self.matrix.shape[0], n_f)
        m = self.matrix
        if fields.dtype in _COMPILED and out_type in _COMPILED and m.data.dtype == np.float64 and out.size:
            from meshsr.interp import kernels

            group = max(1, min(len(flat), _GROUP_BYTES // max(1, n_src * n_f * fields.itemsize)))
            node_major = np.empty((n_src, group * n_f), dtype=fields.dtype)
            for b0 in range(0, len(flat), group):
                rows = node_major[:, : (min(b0 + group, len(flat)) - b0) * n_f]
                kernels.frames_to_rows(flat, b0, rows)
                block = min(1024, max(8, _BLOCK_VALUES // rows.shape[1]))
                kernels.csr_rows(m.indptr, m.indices, m.data, rows, out, b0, block)
        else:
            for i, frame in enumerate(flat):
                out[i] = m @ frame
        return result
