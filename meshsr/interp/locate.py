"""Point location in a simplicial mesh: containing cell and barycentric coordinates.

Cells are binned by bounding box into a uniform grid of about one cell per bucket; each
query is tested only against the cells of its own bucket, all in vectorised numpy.
"""

from __future__ import annotations

import numpy as np

from meshsr.mesh.geometry import affine_maps


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
    maps = affine_maps(points, cells)
    verts, inv, good = maps.vertices, maps.inverse, maps.nondegenerate
    lo, hi = verts.min(axis=1), verts.max(axis=1)
    good_ids = np.flatnonzero(good)
    if len(good_ids) == 0 or n_q == 0:
        return cell, lam_out

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
