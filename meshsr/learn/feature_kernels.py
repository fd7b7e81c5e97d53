r"""The compiled per-row feature kernel behind :class:`meshsr.learn.features.FeatureBuilder`.

A row is one destination node :math:`n` in one frame of one simulation.  The kernel reads

* per frame :math:`g` of the rows, the source-node quantities (float32): the values
  ``u[g, v, f]`` and ``quantities[g, v, f, :]``, the recovered gradient :math:`G u` (D), the
  upper triangle of the recovered Hessian (D(D+1)/2) and the unsharp masks :math:`u - S^k u`
  (``SMOOTHING_STEPS``);
* per destination node, one record of indices (the containing cell's vertices, then the cell
  of each shifted point, padded to D+1) and one of float64 values (the cell's weights, the
  offsets :math:`x - v_i`, the second moment :math:`\sum_i \lambda_i d_i d_i^\top` (upper
  triangle, off-diagonals doubled), the shifted points' weights, the geometry columns);
* per row, the cached float32 :math:`I u` of its frame and of the frames before and after it;

and writes the row's features (float32, the layout of ``FeatureBuilder.names``) and local scales.
Each value is computed in float64, divided by the local scale, rounded to float32 and then
standardised, :math:`(x - \mu) \cdot (1/\sigma)` in float64 and rounded to float32
(:math:`\mu = 0, \sigma = 1` leaves the raw float32 value; otherwise
:class:`~meshsr.learn.normalisation.Normalisation`'s result to float32 rounding), so one pass
writes a training batch.

Imported only where features are built, so importing :mod:`meshsr.learn` compiles nothing;
compiled once per argument types and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from meshsr.interp.kernels import follow_omp_threads

follow_omp_threads()


CHUNK_ROWS = 256  # rows per parallel task: each has its own scratch row


@nb.njit(parallel=True, cache=True, nogil=True)
def row_features(
    order, positions, frames, nodes, here, before, after, u, quantities, node_index, node_data, sizes, floor, mean,
    inv_std, inv_rho, features, gains,
):  # pragma: no cover - compiled
    """Features (R, K) and gains (R, F) of rows (``frames[r]``, ``nodes[r]``), the ``p``-th computed being row
    ``order[p]``, written to ``features[positions[p]]`` and ``gains[positions[p]]``; see the module docstring.
    Rows of one frame computed together keep its source quantities in cache, and output written in sequence
    keeps the stores in cache.

    ``here``, ``before``, ``after`` (R, F) float32: the cached :math:`I u` of the row's frame and its
    neighbours.  ``u`` (G, N_src, F) and ``quantities`` (G, N_src, F, Q) float32: the source values and
    the other source quantities (gradient, Hessian upper triangle, unsharp masks).  Per destination
    node, ``node_index`` (N, k + J k) int32: the cell's vertices, then each shifted point's; ``node_data``
    (N, k + k D + C + J k + n_geo) float64: weights, offsets x - v_i, second moment, the shifted points'
    weights, geometry columns.  ``sizes``: (k, D, C, J, n_geo).  ``floor`` (F,): the scale floor;
    ``mean``, ``inv_std`` (K,), ``inv_rho`` (F,): the standardisation (gains are scale / rho).
    """
    k, d, n_c, n_shift, n_geo = sizes[0], sizes[1], sizes[2], sizes[3], sizes[4]
    n_fields = u.shape[2]
    n_q = quantities.shape[3]
    per_field = k + n_q + n_shift + 5
    at_offsets = k
    at_moment = k + k * d
    at_shift = at_moment + n_c
    at_geo = at_shift + n_shift * k
    n_rows = order.shape[0]
    n_features = features.shape[1]
    n_chunks = (n_rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    for chunk in nb.prange(n_chunks):
        # scratch: the row's raw values (written out standardised at the end) and per-field sums;
        # loops run over the fields innermost, so each index and weight is read once per row
        values = np.empty(n_features)
        interp = np.empty(n_fields)
        inv = np.empty(n_fields)
        grad_corr = np.empty(n_fields)
        sums = np.empty((n_fields, n_q))
        for p in range(chunk * CHUNK_ROWS, min(n_rows, (chunk + 1) * CHUNK_ROWS)):
            r = order[p]
            w = positions[p]
            g = frames[r]
            n = nodes[r]
            for c in range(n_geo):
                values[c] = node_data[n, at_geo + c]
            for f in range(n_fields):
                squares = 0.0
                for i in range(k):
                    uv = np.float64(u[g, node_index[n, i], f])
                    squares += uv * uv
                scale = np.sqrt(squares / k) + floor[f]
                gains[w, f] = np.float32(scale * inv_rho[f])
                interp[f] = np.float64(here[r, f])
                inv[f] = 1.0 / scale
                values[n_geo + f * per_field] = interp[f] * inv[f]
                grad_corr[f] = 0.0
                for j in range(n_q):
                    sums[f, j] = 0.0
            # vertex{i}; grad_corr = sum_i lambda_i G u(v_i) . (x - v_i);
            # grad{a}, hess{ab}, smooth{s}: sum_i lambda_i q(v_i)
            for i in range(k):
                v = node_index[n, i]
                lam = node_data[n, i]
                for f in range(n_fields):
                    base = n_geo + f * per_field
                    values[base + 1 + i] = (np.float64(u[g, v, f]) - interp[f]) * inv[f]
                    dot = 0.0
                    for a in range(d):
                        dot += np.float64(quantities[g, v, f, a]) * node_data[n, at_offsets + i * d + a]
                    grad_corr[f] += lam * dot
                    for j in range(n_q):
                        sums[f, j] += lam * np.float64(quantities[g, v, f, j])
            for f in range(n_fields):
                base = n_geo + f * per_field
                values[base + 1 + k] = grad_corr[f] * inv[f]
                hess_corr = 0.0
                for c in range(n_c):
                    hess_corr += sums[f, d + c] * node_data[n, at_moment + c]
                values[base + 2 + k] = hess_corr * inv[f]
                for j in range(n_q):
                    values[base + 3 + k + j] = sums[f, j] * inv[f]
            # shift{a}{+-}{k}: I u at the shifted point minus I u
            for s in range(n_shift):
                for f in range(n_fields):
                    sums[f, 0] = 0.0
                for i in range(k):
                    e = s * k + i
                    v = node_index[n, k + e]
                    weight = node_data[n, at_shift + e]
                    for f in range(n_fields):
                        sums[f, 0] += weight * np.float64(u[g, v, f])
                for f in range(n_fields):
                    base = n_geo + f * per_field
                    values[base + 3 + k + n_q + s] = (sums[f, 0] - interp[f]) * inv[f]
            for f in range(n_fields):
                last = n_geo + f * per_field + 3 + k + n_q + n_shift
                values[last] = (np.float64(before[r, f]) - interp[f]) * inv[f]
                values[last + 1] = (np.float64(after[r, f]) - interp[f]) * inv[f]
            for c in range(n_features):
                features[w, c] = np.float32((np.float64(np.float32(values[c])) - mean[c]) * inv_std[c])


@nb.njit(parallel=True, cache=True, nogil=True)
def gather_cached(order, times, nodes, interpolated, target, out):  # pragma: no cover - compiled
    """For rows ``order`` (frame ``times[r]``, node ``nodes[r]`` of one simulation's ``interpolated`` and
    ``target`` (T, N, F)): ``out[0..3, r]`` = :math:`I u` of the frame, of the frames before and after it
    (clamped at the ends) and the target field."""
    last = interpolated.shape[0] - 1
    for p in nb.prange(order.shape[0]):
        r = order[p]
        t = times[r]
        n = nodes[r]
        for f in range(interpolated.shape[2]):
            out[0, r, f] = interpolated[t, n, f]
            out[1, r, f] = interpolated[max(t - 1, 0), n, f]
            out[2, r, f] = interpolated[min(t + 1, last), n, f]
            out[3, r, f] = target[t, n, f]
