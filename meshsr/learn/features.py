"""Per-destination-node input features of one frame, from the source solution and the interpolation.

For a destination node :math:`x` in source cell :math:`[v_0, \\dots, v_D]` with
barycentric weights :math:`\\lambda_i` (the row of the cached operator :math:`W`,
reordered so that :math:`\\lambda_0 \\ge \\lambda_1 \\ge \\dots`), per field :math:`u`:

* ``interp``: :math:`I u(x) = \\sum_i \\lambda_i u(v_i)` (the cached interpolation);
* ``vertex{i}``: :math:`u(v_i) - I u(x)`;
* ``grad_corr``: :math:`\\sum_i \\lambda_i\\, G u(v_i) \\cdot (x - v_i)` with the recovered
  gradient :math:`G u` (:mod:`meshsr.mesh.recovery`); :math:`I u + \\tfrac12` of it is exact
  for quadratics when :math:`G u` is;
* ``hess_corr``: :math:`\\sum_i \\lambda_i (x - v_i)^\\top (I H u)(x) (x - v_i)`, twice the
  P1 interpolation error of a quadratic with the interpolated recovered Hessian;
* ``grad{a}``, ``hess{ab}``: :math:`(I G u)(x)` and the upper triangle of :math:`(I H u)(x)`;
* ``smooth{k}``: :math:`I (u - S^k u)(x)` for :math:`k \\in` ``SMOOTHING_STEPS``, where
  :math:`S` averages a source node with its mesh neighbours: unsharp masks at growing
  scales, which see the coarse solution's smearing beyond the containing cell;
* ``shift{a}{+-}{k}``: :math:`I u(x \\pm k \\bar h e_a) - I u(x)` for :math:`k \\in`
  ``SHIFTS`` and every axis :math:`a` (:math:`\\bar h` the mean source edge length,
  points outside the source mesh take the nearest node): a small oriented stencil of
  the interpolated field, which sees upstream and downstream of the node;
* ``prev``, ``next``: :math:`I u` of frames :math:`t \\mp 1` (clamped at the ends) minus
  :math:`I u` of frame :math:`t`.

Every per-field feature is linear in :math:`u`; they are divided by the local scale

.. math::  s(x) = \\Big(\\tfrac{1}{D+1} \\sum_i u(v_i)^2\\Big)^{1/2} + \\epsilon\\, \\sigma_u,

(:math:`\\sigma_u` the field's standard deviation over the training simulations), so
that the model that multiplies its output by :math:`s` is equivariant to the amplitude
of each field, as the linear PDEs behind the data are.  Per node come the coordinates
(optional), the ``extrapolated`` flag, the sorted weights :math:`\\lambda_i` and the
source cell size :math:`|K|^{1/D}`.  Extrapolated rows (one entry, the nearest source
node) are padded: weight 1 on that node, 0 on D copies of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from meshsr.cache.format import release_pages
from meshsr.errors import InputError
from meshsr.interp.operator import InterpolationOperator
from meshsr.learn.normalisation import moments
from meshsr.mesh.geometry import cell_sizes, mean_edge_length, neighbour_average
from meshsr.mesh.recovery import GradientRecovery

SMOOTHING_STEPS = (1, 2, 4, 8)
SHIFTS = (0.5, 1.0, 2.0)
SCALE_FLOOR = 1e-2  # epsilon in s(x), relative to the field's training standard deviation


@dataclass
class Stencil:
    """Per destination node: source vertices (N, D+1) sorted by weight, weights and offsets x - v_i."""

    vertices: np.ndarray
    weights: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_operator(cls, operator: InterpolationOperator, src_points: np.ndarray, dst_points: np.ndarray) -> Stencil:
        """Read the containing cell back from the CSR rows: D+1 entries (located) or 1 (extrapolated)."""
        matrix = operator.matrix
        n, d = dst_points.shape
        k = d + 1
        counts = np.diff(matrix.indptr)
        expected = np.where(operator.extrapolated, 1, k)
        if not np.array_equal(counts, expected):
            bad = int(np.flatnonzero(counts != expected)[0])
            raise InputError(
                None,
                f"operator row {bad} has {counts[bad]} entries, but located rows need {k} (cell vertices) "
                "and extrapolated rows 1; rebuild the pair cache",
            )
        vertices = np.empty((n, k), dtype=np.int64)
        weights = np.zeros((n, k), dtype=np.float64)
        starts = matrix.indptr[:-1]
        located = ~operator.extrapolated
        pos = starts[located][:, None] + np.arange(k)
        vertices[located] = matrix.indices[pos]
        weights[located] = matrix.data[pos]
        vertices[~located] = matrix.indices[starts[~located]][:, None]
        weights[~located, 0] = matrix.data[starts[~located]]
        order = np.argsort(-weights, axis=1, kind="stable")
        vertices = np.take_along_axis(vertices, order, axis=1)
        weights = np.take_along_axis(weights, order, axis=1)
        offsets = dst_points[:, None, :] - src_points[vertices]
        return cls(vertices=vertices, weights=weights, offsets=offsets)


def shift_vectors(dim: int) -> list[tuple[str, np.ndarray]]:
    """Names and unit offsets (in units of the mean source edge length) of the ``shift`` features."""
    out = []
    for k in SHIFTS:
        for a in range(dim):
            for sign in (1, -1):
                offset = np.zeros(dim)
                offset[a] = sign * k
                out.append((f"shift{a}{'+' if sign > 0 else '-'}{k:g}", offset))
    return out


def field_feature_names(dim: int) -> list[str]:
    k = dim + 1
    return [
        "interp",
        *(f"vertex{i}" for i in range(k)),
        "grad_corr",
        "hess_corr",
        *(f"grad{a}" for a in range(dim)),
        *(f"hess{a}{b}" for a in range(dim) for b in range(a, dim)),
        *(f"smooth{s}" for s in SMOOTHING_STEPS),
        *(name for name, _ in shift_vectors(dim)),
        "prev",
        "next",
    ]


def field_spread(interpolated: np.ndarray, sims: tuple[int, ...], frames: tuple[int, ...] | None = None) -> np.ndarray:
    """Per-field standard deviation :math:`\\sigma_u` of ``interpolated`` (S, T, N, F) over ``sims`` and
    ``frames`` (all if None): the scale floor of a builder for the training split."""
    picked = list(range(interpolated.shape[1]) if frames is None else frames)

    def chunks():
        for sim in sims:
            yield interpolated[sim][picked]
            release_pages(interpolated)  # a memory-mapped cache: keep only a simulation's pages at a time

    _, std, _ = moments(chunks())
    return std


class FeatureBuilder:
    """Assembles the float32 features (T, N_dst, K) and local scales (T, N_dst, F) of one simulation.

    It needs only what inference has: the source mesh, the target points, the interpolation
    operator between them and the field names; never the target fields.
    """

    def __init__(
        self,
        src_points: np.ndarray,
        src_cells: np.ndarray,
        dst_points: np.ndarray,
        operator: InterpolationOperator,
        field_names: list[str],
        use_coordinates: bool = True,
        field_std: np.ndarray | None = None,
    ) -> None:
        """``field_std``: per-field standard deviation of the training split (sets the scale floor)."""
        self.dim = dst_points.shape[1]
        self.use_coordinates = use_coordinates
        self.stencil = Stencil.from_operator(operator, src_points, dst_points)
        self.recovery = GradientRecovery.build(src_points, src_cells)
        self.smoothing = neighbour_average(src_cells, len(src_points))
        self.interpolate = operator.matrix.astype(np.float64).tocsr()
        h = mean_edge_length(src_points, src_cells)
        self.shifted = [
            InterpolationOperator.build(src_points, src_cells, dst_points + h * offset).matrix.tocsr()
            for _, offset in shift_vectors(self.dim)
        ]
        offsets, weights = self.stencil.offsets, self.stencil.weights
        # Q = sum_i lambda_i d_i d_i^T, so hess_corr = <Q, I H u>, written over H's upper triangle.
        q = np.einsum("nk,nka,nkb->nab", weights, offsets, offsets)
        upper = np.triu_indices(self.dim)
        self.second_moment_upper = q[:, upper[0], upper[1]] * np.where(upper[0] == upper[1], 1.0, 2.0)
        self.dst_points = dst_points
        self.src_points = src_points
        node_size = self.recovery.average @ cell_sizes(src_points, src_cells)
        columns = [dst_points] if use_coordinates else []
        extrapolated = np.asarray(operator.extrapolated).astype(np.float64)[:, None]
        columns += [extrapolated, weights, (self.interpolate @ node_size)[:, None]]
        self.geometry = np.concatenate(columns, axis=1)
        per_field = field_feature_names(self.dim)
        self.names = [
            *((f"x{i}" for i in range(self.dim)) if use_coordinates else ()),
            "extrapolated",
            *(f"weight{i}" for i in range(self.dim + 1)),
            "cell_size",
            *(f"{name}:{feature}" for name in field_names for feature in per_field),
        ]
        self.per_field = len(per_field)
        self.n_fields = len(field_names)
        self.field_std = np.ones(self.n_fields) if field_std is None else np.asarray(field_std, dtype=np.float64)
        if self.field_std.shape != (self.n_fields,):
            raise ValueError(f"field_std must have {self.n_fields} entries")

    @property
    def options(self) -> dict:
        """What :meth:`__init__` needs besides the meshes, operator and field names, as plain data."""
        return {"use_coordinates": self.use_coordinates, "field_std": [float(x) for x in self.field_std]}

    @property
    def n_features(self) -> int:
        return len(self.names)

    def _check_shapes(self, u: np.ndarray, interp: np.ndarray) -> None:
        expected_u = (len(self.src_points), self.n_fields)
        expected_i = (len(self.dst_points), self.n_fields)
        if u.ndim != 3 or u.shape[1:] != expected_u or interp.ndim != 3 or interp.shape[1:] != expected_i:
            raise ValueError(
                f"expected source fields (T, {expected_u[0]}, {expected_u[1]}) and interpolated fields "
                f"(T, {expected_i[0]}, {expected_i[1]}), got {u.shape} and {interp.shape}"
            )
        if len(u) != len(interp):
            raise ValueError(f"source fields have {len(u)} frames, interpolated fields {len(interp)}")

    def _interp_nodal(self, nodal: np.ndarray) -> np.ndarray:
        """Apply W to (T, N_src, ...) -> (T, N_dst, ...)."""
        t, n_src = nodal.shape[:2]
        rest = nodal.shape[2:]
        flat = nodal.reshape(t, n_src, -1).transpose(1, 0, 2).reshape(n_src, -1)
        out = self.interpolate @ flat
        return out.reshape(-1, t, flat.shape[1] // t).transpose(1, 0, 2).reshape(t, -1, *rest)

    def _unsharp(self, u: np.ndarray) -> np.ndarray:
        """:math:`u - S^k u` for every k of ``SMOOTHING_STEPS`` at the source nodes, (T, N_src, F, len)."""
        t, n_src, f = u.shape
        current = u.transpose(1, 0, 2).reshape(n_src, -1)
        original, out, done = current, [], 0
        for steps in SMOOTHING_STEPS:
            for _ in range(steps - done):
                current = self.smoothing @ current
            done = steps
            out.append((original - current).reshape(n_src, t, f).transpose(1, 0, 2))
        return np.stack(out, axis=-1)

    def _shifted(self, u: np.ndarray) -> np.ndarray:
        """:math:`I u` at the shifted points, (len(shifted), T, N_dst, F)."""
        t, n_src, f = u.shape
        flat = u.transpose(1, 0, 2).reshape(n_src, -1)
        return np.stack([(m @ flat).reshape(-1, t, f).transpose(1, 0, 2) for m in self.shifted])

    def simulation(
        self, source_fields: np.ndarray, interpolated: np.ndarray, chunk: int = 8
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features float32 (T, N_dst, K) and local scales float32 (T, N_dst, F) of one simulation.

        ``source_fields`` (T, N_src, F) at the source nodes and ``interpolated`` (T, N_dst, F),
        their interpolation by the operator (the pair cache's array); :meth:`frame_chunks` assembled.
        """
        t_len, n, f = interpolated.shape
        out = np.empty((t_len, n, self.n_features), dtype=np.float32)
        scales = np.empty((t_len, n, f), dtype=np.float32)
        for frames, features, scale in self.frame_chunks(source_fields, interpolated, chunk=chunk):
            out[frames], scales[frames] = features, scale
        return out, scales

    def frame_chunks(
        self,
        source_fields: np.ndarray,
        interpolated: np.ndarray,
        frames: tuple[int, ...] | list[int] | None = None,
        chunk: int = 8,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(frame indices, features (C, N_dst, K), local scales (C, N_dst, F)) of ``frames`` (all if None), ``chunk``
        frames at a time, float32.

        Source-mesh derivatives are computed for all frames at once (the source mesh is the small
        one); the destination-size work runs ``chunk`` frames at a time, so memory stays bounded
        by the chunk whatever the number of frames.  A frame's features do not depend on which
        other frames share its chunk.
        """
        u = np.asarray(source_fields, dtype=np.float64)
        interp_all = interpolated  # float32, as cached
        self._check_shapes(u, interp_all)
        t_len, n, f = interp_all.shape
        picked = np.arange(t_len) if frames is None else np.asarray(frames, dtype=np.int64)
        upper = np.triu_indices(self.dim)
        grad = self.recovery.gradient(u)  # (T, N_src, F, D)
        hess = self.recovery.hessian(grad)[..., upper[0], upper[1]]  # (T, N_src, F, D(D+1)/2)
        g_dot_v = np.einsum("tsfd,sd->tsf", grad, self.src_points)
        unsharp = self._unsharp(u)
        g = self.geometry.shape[1]
        for start in range(0, len(picked), chunk):
            frames = picked[start : start + chunk]
            out = np.empty((len(frames), n, self.n_features), dtype=np.float32)
            out[:, :, :g] = self.geometry[None]
            interp = interp_all[frames].astype(np.float64)  # (C, N, F)
            grad_x = self._interp_nodal(grad[frames])  # (C, N, F, D)
            hess_x = self._interp_nodal(hess[frames])  # (C, N, F, D(D+1)/2)
            # sum_i lambda_i g_i . (x - v_i) = x . (I g)(x) - I(g . v)(x), both by the operator.
            grad_corr = np.einsum("tnfd,nd->tnf", grad_x, self.dst_points) - self._interp_nodal(g_dot_v[frames])
            hess_corr = np.einsum("tnfc,nc->tnf", hess_x, self.second_moment_upper)
            at_vertices = u[frames][:, self.stencil.vertices]  # (C, N, k, F)
            # Feature-major (per_field, C, N, F): each piece is one block, the division runs on
            # contiguous memory, and one strided pass writes the (C, N, F x per_field) layout.
            per_field = np.concatenate(
                [
                    interp[None],
                    (at_vertices - interp[:, :, None, :]).transpose(2, 0, 1, 3),
                    grad_corr[None],
                    hess_corr[None],
                    np.moveaxis(grad_x, -1, 0),
                    np.moveaxis(hess_x, -1, 0),
                    np.moveaxis(self._interp_nodal(unsharp[frames]), -1, 0),
                    self._shifted(u[frames]) - interp[None],
                    (interp_all[np.maximum(frames - 1, 0)] - interp)[None],
                    (interp_all[np.minimum(frames + 1, t_len - 1)] - interp)[None],
                ]
            )
            scale = np.sqrt(np.mean(at_vertices**2, axis=2)) + SCALE_FLOOR * self.field_std  # (C, N, F)
            per_field /= scale[None]
            columns = out[:, :, g:].reshape(len(frames), n, f, self.per_field)  # a view: splits the last axis
            columns[...] = per_field.transpose(1, 2, 3, 0)
            yield frames, out, scale.astype(np.float32)
