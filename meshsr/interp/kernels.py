r"""Compiled loops (numba) behind point location and the operator's product.

Imported only by the functions that use them, so importing :mod:`meshsr.interp`
(and the workflow's parse) neither loads numba nor compiles anything.  Every kernel is
compiled once per argument types and cached on disk (``cache=True``); the first call
in a fresh checkout pays the compile time (a few seconds), later processes load it.

Location, per cell :math:`K = [v_0, \dots, v_D]`: :math:`E = [v_1 - v_0, \dots]`,
:math:`\lambda_{1..D} = E^{-1}(x - v_0)` summed over :math:`j` in increasing order,
:math:`\lambda_0 = 1 - \sum_{i \ge 1} \lambda_i`; the score of a cell is
:math:`\min_i \lambda_i`, and a query takes the first cell (in its bucket's ascending
cell order) with the largest score, if that score is :math:`\ge -\mathrm{tol}`.
"""

from __future__ import annotations

import os

import numba as nb
import numpy as np

_PAR = {"parallel": True, "cache": True, "nogil": True}
_SEQ = {"cache": True, "nogil": True}


def follow_omp_threads() -> None:
    """Use at most ``OMP_NUM_THREADS`` threads (Snakemake sets it to a job's ``threads``) unless
    ``NUMBA_NUM_THREADS`` says otherwise; results do not depend on the thread count."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if "NUMBA_NUM_THREADS" not in os.environ and omp.isdigit() and int(omp) > 0:
        nb.set_num_threads(min(int(omp), nb.config.NUMBA_NUM_THREADS))


follow_omp_threads()


@nb.njit(**_SEQ)
def _bin(x: float, origin: float, h: float, size: int) -> int:
    """Grid index of coordinate ``x``: floor((x - origin) / h) clipped to [0, size - 1]."""
    f = np.floor((x - origin) / h)
    if not f >= 0.0:  # negative or NaN
        return 0
    if f >= size - 1:
        return size - 1
    return int(f)


@nb.njit(**_PAR)
def cell_edges(points, cells, edges, box):  # pragma: no cover - compiled
    """Per cell: ``edges[c]`` = E (columns v_i - v_0) and ``box[c]`` = its bounding-box volume."""
    n, k = cells.shape
    d = k - 1
    for c in nb.prange(n):
        v0 = cells[c, 0]
        volume = 1.0
        for j in range(d):
            lo = points[v0, j]
            hi = lo
            for i in range(1, k):
                v = points[cells[c, i], j]
                edges[c, j, i - 1] = v - points[v0, j]
                lo = min(lo, v)
                hi = max(hi, v)
            volume *= hi - lo
        box[c] = volume


@nb.njit(**_PAR)
def determinants(edges):  # pragma: no cover - compiled
    """det E of every cell by the closed form (D = 1, 2, 3 only)."""
    n, d = edges.shape[0], edges.shape[1]
    out = np.empty(n)
    for c in nb.prange(n):
        e = edges[c]
        if d == 1:
            out[c] = e[0, 0]
        elif d == 2:
            out[c] = e[0, 0] * e[1, 1] - e[0, 1] * e[1, 0]
        elif d == 3:
            out[c] = (
                e[0, 0] * (e[1, 1] * e[2, 2] - e[1, 2] * e[2, 1])
                - e[0, 1] * (e[1, 0] * e[2, 2] - e[1, 2] * e[2, 0])
                + e[0, 2] * (e[1, 0] * e[2, 1] - e[1, 1] * e[2, 0])
            )
    return out


@nb.njit(**_SEQ)
def bounds(points, cells, good, queries):  # pragma: no cover - compiled
    """Smallest box (lo, hi) holding the vertices of the ``good`` cells and all ``queries``."""
    d = points.shape[1]
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    for c in range(cells.shape[0]):
        if good[c]:
            for i in range(cells.shape[1]):
                for j in range(d):
                    lo[j] = min(lo[j], points[cells[c, i], j])
                    hi[j] = max(hi[j], points[cells[c, i], j])
    for q in range(queries.shape[0]):
        for j in range(d):
            lo[j] = min(lo[j], queries[q, j])
            hi[j] = max(hi[j], queries[q, j])
    return lo, hi


@nb.njit(**_SEQ)
def _box(points, cells, c, origin, h, shape, ilo, ihi) -> int:
    """Grid index range [ilo, ihi] of cell ``c``'s bounding box; returns the number of buckets in it."""
    count = 1
    for j in range(points.shape[1]):
        lo = points[cells[c, 0], j]
        hi = lo
        for i in range(1, cells.shape[1]):
            v = points[cells[c, i], j]
            lo = min(lo, v)
            hi = max(hi, v)
        ilo[j] = _bin(lo, origin[j], h, shape[j])
        ihi[j] = _bin(hi, origin[j], h, shape[j])
        count *= ihi[j] - ilo[j] + 1
    return count


@nb.njit(**_PAR)
def cell_boxes(points, cells, ids, origin, h, shape, ilo, ihi):  # pragma: no cover - compiled
    """Grid index ranges ``[ilo[p], ihi[p]]`` (each (len(ids), D)) of the bounding boxes of cells ``ids``."""
    for p in nb.prange(len(ids)):
        _box(points, cells, ids[p], origin, h, shape, ilo[p], ihi[p])


@nb.njit(**_PAR)
def _bucket_pass(ids, ilo, ihi, shape, n_parts, starts, fill, members, counting):  # pragma: no cover - compiled
    """One pass over the cells' boxes: count each bucket's cells into ``starts[b + 1]`` (``counting``) or
    write them to ``members[fill[b]]``.  Part ``t`` of ``n_parts`` takes the buckets of one slab of the
    first grid axis, so parts never share a bucket, and each runs over the cells in ascending order."""
    d = ilo.shape[1]
    for part in nb.prange(n_parts):
        a0 = part * shape[0] // n_parts
        a1 = (part + 1) * shape[0] // n_parts
        lo = np.empty(d, np.int64)
        cur = np.empty(d, np.int64)
        for p in range(len(ids)):
            if ihi[p, 0] < a0 or ilo[p, 0] >= a1:
                continue
            for j in range(d):
                lo[j] = ilo[p, j]
            lo[0] = max(lo[0], a0)
            top0 = min(ihi[p, 0], a1 - 1)
            cur[:] = lo
            while True:
                b = 0
                for j in range(d):
                    b = b * shape[j] + cur[j]
                if counting:
                    starts[b + 1] += 1
                else:
                    members[fill[b]] = ids[p]
                    fill[b] += 1
                j = d - 1
                while j >= 0:  # odometer over the box, last axis fastest
                    cur[j] += 1
                    if cur[j] <= (top0 if j == 0 else ihi[p, j]):
                        break
                    cur[j] = lo[j]
                    j -= 1
                if j < 0:
                    break


def cell_buckets(points, cells, ids, origin, h, shape) -> tuple[np.ndarray, np.ndarray]:
    """Buckets as CSR: ``starts`` (buckets + 1) and the cells ``ids`` whose bounding box meets each
    bucket, in ascending order of ``ids`` within a bucket (``ids`` must be ascending).

    Threads take slabs of the first grid axis (:func:`_bucket_pass`): the lists are the same
    whatever the thread count.
    """
    d = points.shape[1]
    ilo = np.empty((len(ids), d), np.int64)
    ihi = np.empty((len(ids), d), np.int64)
    cell_boxes(points, cells, ids, origin, h, shape, ilo, ihi)
    n_parts = max(1, min(int(shape[0]), nb.get_num_threads()))
    starts = np.zeros(int(np.prod(shape)) + 1, np.int64)
    members = np.empty(0, np.int32)
    _bucket_pass(ids, ilo, ihi, shape, n_parts, starts, starts[:-1], members, True)
    np.cumsum(starts, out=starts)
    members = np.empty(starts[-1], np.int32)
    _bucket_pass(ids, ilo, ihi, shape, n_parts, starts, starts[:-1].copy(), members, False)
    return starts, members


@nb.njit(**_SEQ)
def _score(packed, c, x, lam) -> float:
    """Smallest barycentric coordinate of ``x`` in cell ``c``; writes all D+1 of them to ``lam``."""
    d = x.shape[0]
    total = 0.0
    low = np.inf
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += packed[c, d + i * d + j] * (x[j] - packed[c, j])
        lam[i + 1] = acc
        total += acc
        low = min(low, acc)
    lam[0] = 1.0 - total
    return min(lam[0], low)


@nb.njit(**_SEQ)
def _score_above(packed, c, x, floor) -> float:
    """:func:`_score` of ``x`` in cell ``c`` if it is above ``floor``, else -inf: the loop stops at the
    first coordinate <= ``floor`` (the same arithmetic, so the same score where it finishes)."""
    d = x.shape[0]
    total = 0.0
    low = np.inf
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += packed[c, d + i * d + j] * (x[j] - packed[c, j])
        if not acc > floor:
            return -np.inf
        total += acc
        low = min(low, acc)
    first = 1.0 - total
    if not first > floor:
        return -np.inf
    return min(first, low)


@nb.njit(**_SEQ)
def _score_above_2d(packed, c, x0, x1, floor) -> float:
    """:func:`_score_above` for D = 2 with the point's coordinates in registers (the same arithmetic)."""
    d0 = x0 - packed[c, 0]
    d1 = x1 - packed[c, 1]
    l1 = (0.0 + packed[c, 2] * d0) + packed[c, 3] * d1
    if not l1 > floor:
        return -np.inf
    l2 = (0.0 + packed[c, 4] * d0) + packed[c, 5] * d1
    if not l2 > floor:
        return -np.inf
    first = 1.0 - ((0.0 + l1) + l2)
    if not first > floor:
        return -np.inf
    return min(first, min(min(np.inf, l1), l2))


@nb.njit(**_SEQ)
def _score_above_3d(packed, c, x0, x1, x2, floor) -> float:
    """:func:`_score_above` for D = 3 with the point's coordinates in registers (the same arithmetic)."""
    d0 = x0 - packed[c, 0]
    d1 = x1 - packed[c, 1]
    d2 = x2 - packed[c, 2]
    l1 = ((0.0 + packed[c, 3] * d0) + packed[c, 4] * d1) + packed[c, 5] * d2
    if not l1 > floor:
        return -np.inf
    l2 = ((0.0 + packed[c, 6] * d0) + packed[c, 7] * d1) + packed[c, 8] * d2
    if not l2 > floor:
        return -np.inf
    l3 = ((0.0 + packed[c, 9] * d0) + packed[c, 10] * d1) + packed[c, 11] * d2
    if not l3 > floor:
        return -np.inf
    first = 1.0 - (((0.0 + l1) + l2) + l3)
    if not first > floor:
        return -np.inf
    return min(first, min(min(min(np.inf, l1), l2), l3))


@nb.njit(**_PAR)
def locate_in_buckets(queries, packed, starts, members, origin, h, shape, below_tol, cell, lam):  # pragma: no cover
    """Containing cell (or -1) and barycentric coordinates of every query (see the module docstring).

    ``below_tol``: the float just below -tol.  A candidate must beat the best score so far (at
    first ``below_tol``, so only scores >= -tol count), so it is dropped at its first coordinate
    that does not: the same winner as scoring every candidate in full.  In 2D and 3D the scoring
    is written out for the dimension (:func:`_score_above_2d`, :func:`_score_above_3d`).
    """
    n, d = queries.shape
    n_chunks = (n + 1023) // 1024
    for chunk in nb.prange(n_chunks):
        for q in range(chunk * 1024, min(n, chunk * 1024 + 1024)):
            b = 0
            for j in range(d):
                b = b * shape[j] + _bin(queries[q, j], origin[j], h, shape[j])
            best = below_tol
            best_c = -1
            x0 = queries[q, 0]
            x1 = queries[q, 1] if d > 1 else 0.0
            x2 = queries[q, 2] if d > 2 else 0.0
            for p in range(starts[b], starts[b + 1]):
                c = members[p]
                if d == 2:
                    s = _score_above_2d(packed, c, x0, x1, best)
                elif d == 3:
                    s = _score_above_3d(packed, c, x0, x1, x2, best)
                else:
                    s = _score_above(packed, c, queries[q], best)
                if s > best:
                    best = s
                    best_c = c
            if best_c >= 0:
                cell[q] = best_c
                _score(packed, best_c, queries[q], lam[q])
            else:
                cell[q] = -1
                lam[q, :] = 0.0


@nb.njit(**_PAR)
def fill_located_rows(cell, lam, cells, indptr, indices, data):  # pragma: no cover - compiled
    """Row q of a located query: the D+1 vertices of its cell and its barycentric coordinates."""
    k = cells.shape[1]
    for q in nb.prange(cell.shape[0]):
        c = cell[q]
        if c >= 0:
            p = indptr[q]
            for i in range(k):
                indices[p + i] = cells[c, i]
                data[p + i] = lam[q, i]


@nb.njit(**_PAR)
def frames_to_rows(x, b0, xt):  # pragma: no cover - compiled
    """``xt[i, (b - b0) * F + f] = x[b, i, f]`` for the frames b0 .. b0 + len(xt[0]) / F: node-major copies.

    Threads take blocks of 128 nodes and copy them frame by frame: contiguous reads, and the
    block's rows of ``xt`` stay in cache while every frame lands in them."""
    n_f = x.shape[2]
    n_frames = xt.shape[1] // n_f
    n = x.shape[1]
    for ib in nb.prange((n + 127) // 128):
        for b in range(n_frames):
            src = x[b0 + b]
            q = b * n_f
            for i in range(ib * 128, min(n, ib * 128 + 128)):
                for f in range(n_f):
                    xt[i, q + f] = src[i, f]


@nb.njit(**_PAR)
def csr_rows(indptr, indices, data, xt, out, b0, block):  # pragma: no cover - compiled
    """``out[b0 + b, r, f] = (W @ xt)[r, b * F + f]``, W in CSR: each value summed in float64 from 0 in
    the stored order of its row and rounded once (scipy's product, to the last bit).

    Threads take blocks of ``block`` rows: a row's D+1 weights combine whole node-major rows of
    ``xt`` (every frame of the group at once, a vectorised loop) into a block buffer, which then
    goes out frame by frame, ``block`` consecutive rows at a time.
    """
    n_rows, n_f = out.shape[1], out.shape[2]
    m = xt.shape[1]
    n_blocks = (n_rows + block - 1) // block
    for ib in nb.prange(n_blocks):
        r0 = ib * block
        r1 = min(r0 + block, n_rows)
        tmp = np.empty((r1 - r0, m), out.dtype)
        for r in range(r0, r1):
            p = indptr[r]
            nnz = indptr[r + 1] - p
            t = tmp[r - r0]
            if nnz == 3:
                a0, a1, a2 = xt[indices[p]], xt[indices[p + 1]], xt[indices[p + 2]]
                w0, w1, w2 = data[p], data[p + 1], data[p + 2]
                for q in range(m):
                    t[q] = ((0.0 + w0 * a0[q]) + w1 * a1[q]) + w2 * a2[q]
            elif nnz == 4:
                a0, a1, a2, a3 = xt[indices[p]], xt[indices[p + 1]], xt[indices[p + 2]], xt[indices[p + 3]]
                w0, w1, w2, w3 = data[p], data[p + 1], data[p + 2], data[p + 3]
                for q in range(m):
                    t[q] = (((0.0 + w0 * a0[q]) + w1 * a1[q]) + w2 * a2[q]) + w3 * a3[q]
            else:
                for q in range(m):
                    acc = 0.0
                    for jj in range(p, p + nnz):
                        acc += data[jj] * xt[indices[jj], q]
                    t[q] = acc
        for b in range(m // n_f):
            frame = out[b0 + b]
            for r in range(r0, r1):
                for f in range(n_f):
                    frame[r, f] = tmp[r - r0, b * n_f + f]
