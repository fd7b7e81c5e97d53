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


@nb.njit(inline="always")
def _put(features, r, c, value, mean, inv_std):  # pragma: no cover - compiled
    """``features[r, c]`` = the value rounded to float32, then standardised: (x - mean[c]) / std[c]."""
    raw = np.float64(np.float32(value))
    features[r, c] = np.float32((raw - mean[c]) * inv_std[c])


@nb.njit(parallel=True, cache=True, nogil=True)
def row_features(
    order, frames, nodes, here, before, after, u, quantities, node_index, node_data, sizes, floor, mean, inv_std,
    inv_rho, features, gains,
):  # pragma: no cover - compiled
    """Features (R, K) and gains (R, F) of rows (``frames[r]``, ``nodes[r]``), computed in the sequence ``order``
    (rows of one frame together keep its source quantities in cache); see the module docstring.

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
    for p in nb.prange(order.shape[0]):
        r = order[p]
        g = frames[r]
        n = nodes[r]
        for c in range(n_geo):
            _put(features, r, c, node_data[n, at_geo + c], mean, inv_std)
        for f in range(n_fields):
            base = n_geo + f * per_field
            interp = np.float64(here[r, f])
            squares = 0.0
            for i in range(k):
                uv = np.float64(u[g, node_index[n, i], f])
                squares += uv * uv
            scale = np.sqrt(squares / k) + floor[f]
            gains[r, f] = np.float32(scale * inv_rho[f])
            inv = 1.0 / scale
            _put(features, r, base, interp * inv, mean, inv_std)
            for i in range(k):
                uv = np.float64(u[g, node_index[n, i], f])
                _put(features, r, base + 1 + i, (uv - interp) * inv, mean, inv_std)
            # grad_corr = sum_i lambda_i G u(v_i) . (x - v_i); grad{a}, hess{ab}, smooth{s}: sum_i lambda_i q(v_i)
            grad_corr = 0.0
            for i in range(k):
                v = node_index[n, i]
                dot = 0.0
                for a in range(d):
                    dot += np.float64(quantities[g, v, f, a]) * node_data[n, at_offsets + i * d + a]
                grad_corr += node_data[n, i] * dot
            _put(features, r, base + 1 + k, grad_corr * inv, mean, inv_std)
            hess_corr = 0.0
            for j in range(n_q):
                value = 0.0
                for i in range(k):
                    value += node_data[n, i] * np.float64(quantities[g, node_index[n, i], f, j])
                if d <= j < d + n_c:
                    hess_corr += value * node_data[n, at_moment + j - d]
                _put(features, r, base + 3 + k + j, value * inv, mean, inv_std)
            _put(features, r, base + 2 + k, hess_corr * inv, mean, inv_std)
            for s in range(n_shift):
                value = 0.0
                for i in range(k):
                    e = s * k + i
                    value += node_data[n, at_shift + e] * np.float64(u[g, node_index[n, k + e], f])
                _put(features, r, base + 3 + k + n_q + s, (value - interp) * inv, mean, inv_std)
            last = base + 3 + k + n_q + n_shift
            _put(features, r, last, (np.float64(before[r, f]) - interp) * inv, mean, inv_std)
            _put(features, r, last + 1, (np.float64(after[r, f]) - interp) * inv, mean, inv_std)


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
