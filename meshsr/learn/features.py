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

Every interpolated quantity :math:`I q(x)` is :math:`\\sum_i \\lambda_i q(v_i)` over the cell's
vertices (the shifted points over their own cells), so the work splits in two: per frame, the
source-node quantities :math:`u`, :math:`G u`, the upper triangle of :math:`H u` and
:math:`u - S^k u` with numpy on the (small) source mesh, in float64, kept as float32
(:meth:`FeatureBuilder.source_quantities`); per row (frame, destination node), the compiled
kernel :func:`meshsr.learn.feature_kernels.row_features`, which forms the sums above in float64
from them, the per-node stencil arrays and the cached float32 :math:`I u` of the frame and its
neighbours (:meth:`FeatureBuilder.rows`).  Whole frames (evaluation, upsampling) and training
batches (:mod:`meshsr.learn.samples`) go through the same kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from meshsr.cache.format import release_pages
from meshsr.errors import InputError
from meshsr.interp.operator import InterpolationOperator
from meshsr.learn.normalisation import Normalisation, moments
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
        columns, weights = padded_rows(matrix, k)  # an extrapolated row: its node, then weight 0 on it
        vertices = columns.astype(np.int64)
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


QUANTITY_DTYPE = np.float32  # the packed source-node quantities (FeatureBuilder.source_quantities)


def padded_rows(matrix, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns (N, width) int32 and values (N, width) float64 of a CSR matrix's rows, each of at most ``width``
    entries, padded with weight 0 on the row's first column (column 0 for an empty row)."""
    counts = np.diff(matrix.indptr)
    if len(counts) and counts.max() > width:
        raise ValueError(f"an operator row has {counts.max()} entries, more than {width}")
    slot = np.arange(width)
    valid = slot[None, :] < counts[:, None]
    pos = matrix.indptr[:-1, None] + np.where(valid, slot[None, :], 0)
    has = counts[:, None] > 0
    columns = np.where(has, matrix.indices[np.minimum(pos, max(len(matrix.indices) - 1, 0))], 0)
    values = np.where(valid, matrix.data[np.minimum(pos, max(len(matrix.data) - 1, 0))], 0.0)
    return columns.astype(np.int32), values.astype(np.float64)


@dataclass
class SourceQuantities:
    """Per frame and source node: the field values (T, N_src, F) and the derived quantities (T, N_src, F, Q)
    the features interpolate (:meth:`FeatureBuilder.source_quantities`)."""

    values: np.ndarray
    derived: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, frames: slice) -> SourceQuantities:
        """The quantities of ``frames`` (views)."""
        return SourceQuantities(self.values[frames], self.derived[frames])


def frame_order(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """Row indices sorted by frame, stably (numpy's radix sort when ``n_frames`` fits 16 bits)."""
    frames = np.asarray(frames)
    return np.argsort(frames.astype(np.int16) if n_frames < (1 << 15) else frames, kind="stable")


class FeatureBuilder:
    """Assembles the float32 features (T, N_dst, K) and local scales (T, N_dst, F) of one simulation.

    It needs only what inference has: the source mesh, the target points, the interpolation
    operator between them and the field names; never the target fields.  The work is split in
    two: :meth:`source_quantities` per frame on the (small) source mesh, and :meth:`rows`, the
    compiled kernel that assembles any set of (frame, destination node) rows from them.
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
        h = mean_edge_length(src_points, src_cells)
        shifted = [
            InterpolationOperator.build(src_points, src_cells, dst_points + h * offset).matrix.tocsr()
            for _, offset in shift_vectors(self.dim)
        ]
        k = self.dim + 1
        padded = [padded_rows(m, k) for m in shifted]
        shift_vertices = np.stack([c for c, _ in padded], axis=1)  # (N, J, k)
        shift_weights = np.stack([w for _, w in padded], axis=1)
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
        interpolate = operator.matrix.astype(np.float64).tocsr()
        columns += [extrapolated, weights, (interpolate @ node_size)[:, None]]
        self.geometry = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype=np.float64)
        # The kernel's per-node records (meshsr.learn.feature_kernels.row_features): indices, then values.
        n = len(dst_points)
        self._node_index = np.ascontiguousarray(
            np.concatenate([self.stencil.vertices, shift_vertices.reshape(n, -1)], axis=1), dtype=np.int32
        )
        self._node_data = np.ascontiguousarray(
            np.concatenate(
                [weights, offsets.reshape(n, -1), self.second_moment_upper, shift_weights.reshape(n, -1),
                 self.geometry],
                axis=1,
            ),
            dtype=np.float64,
        )
        self._sizes = np.array(
            [k, self.dim, self.second_moment_upper.shape[1], shift_vertices.shape[1], self.geometry.shape[1]],
            dtype=np.int64,
        )
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

    @property
    def n_derived(self) -> int:
        """Derived source-node quantities per field: gradient, Hessian upper triangle, unsharp masks."""
        return self.dim + self.dim * (self.dim + 1) // 2 + len(SMOOTHING_STEPS)

    def empty_quantities(self, n_frames: int) -> SourceQuantities:
        """Room for the source quantities of ``n_frames`` frames."""
        n_src, f = len(self.src_points), self.n_fields
        return SourceQuantities(
            np.empty((n_frames, n_src, f), dtype=QUANTITY_DTYPE),
            np.empty((n_frames, n_src, f, self.n_derived), dtype=QUANTITY_DTYPE),
        )

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

    def source_quantities(self, source_fields: np.ndarray, out: SourceQuantities | None = None) -> SourceQuantities:
        """The source-node quantities of ``source_fields`` (T, N_src, F), in ``out`` if given, ``QUANTITY_DTYPE``:
        :math:`u`, and :math:`G u` (D), the upper triangle of :math:`H u` and :math:`u - S^k u` for every k of
        ``SMOOTHING_STEPS``, computed in float64 (each frame on its own).
        """
        u = np.asarray(source_fields, dtype=np.float64)
        t, n_src, f = u.shape
        if (n_src, f) != (len(self.src_points), self.n_fields):
            raise ValueError(f"expected source fields (T, {len(self.src_points)}, {self.n_fields}), got {u.shape}")
        out = self.empty_quantities(t) if out is None else out
        derived = out.derived
        upper = np.triu_indices(self.dim)
        grad = self.recovery.gradient(u)  # (T, N_src, F, D)
        out.values[...] = u
        derived[..., : self.dim] = grad
        at = self.dim
        hess = self.recovery.hessian(grad)[..., upper[0], upper[1]]  # (T, N_src, F, D(D+1)/2)
        derived[..., at : at + hess.shape[-1]] = hess
        at += hess.shape[-1]
        current = u.transpose(1, 0, 2).reshape(n_src, -1)
        original, done = current, 0
        for i, steps in enumerate(SMOOTHING_STEPS):
            for _ in range(steps - done):
                current = self.smoothing @ current
            done = steps
            derived[..., at + i] = (original - current).reshape(n_src, t, f).transpose(1, 0, 2)
        return out

    def rows(
        self,
        quantities: SourceQuantities,
        frames: np.ndarray,
        nodes: np.ndarray,
        here: np.ndarray,
        before: np.ndarray,
        after: np.ndarray,
        norm: Normalisation | None = None,
        out: tuple[np.ndarray, np.ndarray] | None = None,
        layout: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features (R, K) and local scales (R, F), float32, of the rows (``frames[r]``, ``nodes[r]``).

        ``quantities``: :meth:`source_quantities` of the frames that ``frames`` index;
        ``here``, ``before``, ``after`` (R, F): the cached float32 :math:`I u` of each row's frame
        and of the frames before and after it (clamped at the ends).  With ``norm`` the features
        come standardised and the scales as gains (scale / residual RMS): ``norm.features`` and
        ``norm.gains`` of the raw values, to float32 rounding (the kernel multiplies by 1 / std).
        ``out``: arrays to write into.  ``layout``: (order, positions), the ``p``-th row computed is
        row ``order[p]`` and goes to output row ``positions[p]``; by default rows are computed frame by
        frame (:func:`frame_order`), which keeps a frame's source quantities in cache, and written
        in the order given.
        """
        from meshsr.learn.feature_kernels import row_features

        n_rows, f = len(frames), self.n_fields
        features, gains = out if out is not None else (None, None)
        features = np.empty((n_rows, self.n_features), dtype=np.float32) if features is None else features
        gains = np.empty((n_rows, f), dtype=np.float32) if gains is None else gains
        if norm is None:
            mean, std, rho = np.zeros(self.n_features), np.ones(self.n_features), np.ones(f)
        else:
            mean, std, rho = norm.feature_mean, norm.feature_std, norm.target_rms
        frames = np.asarray(frames, dtype=np.int64)
        if layout is None:
            order = frame_order(frames, len(quantities))
            layout = (order, order)
        row_features(
            *layout, frames, np.asarray(nodes, dtype=np.int64),
            *(np.ascontiguousarray(a, dtype=np.float32) for a in (here, before, after)),
            quantities.values, quantities.derived, self._node_index, self._node_data, self._sizes,
            SCALE_FLOOR * self.field_std, np.asarray(mean, dtype=np.float64), 1.0 / np.asarray(std, dtype=np.float64),
            1.0 / np.asarray(rho, dtype=np.float64), features, gains,
        )
        return features, gains

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
        norm: Normalisation | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(frame indices, features (C, N_dst, K), local scales (C, N_dst, F)) of ``frames`` (all if None), ``chunk``
        frames at a time, float32; with ``norm`` standardised features and gains (:meth:`rows`).

        The source quantities of the picked frames are computed at once (the source mesh is the
        small one); :meth:`rows` assembles ``chunk`` frames at a time, so memory stays bounded by
        the chunk whatever the number of frames.  A frame's features do not depend on which
        other frames share its chunk.
        """
        self._check_shapes(np.asarray(source_fields), interpolated)
        t_len, n, f = interpolated.shape
        picked = np.arange(t_len) if frames is None else np.asarray(frames, dtype=np.int64)
        quantities = self.source_quantities(np.asarray(source_fields)[picked])
        nodes = np.tile(np.arange(n), chunk)
        for start in range(0, len(picked), chunk):
            these = picked[start : start + chunk]
            c = len(these)
            position = np.repeat(np.arange(start, start + c), n)

            here, before, after = (
                np.asarray(interpolated[at]).reshape(c * n, f)
                for at in (these, np.maximum(these - 1, 0), np.minimum(these + 1, t_len - 1))
            )
            features, scales = self.rows(quantities, position, nodes[: c * n], here, before, after, norm)
            yield these, features.reshape(c, n, -1), scales.reshape(c, n, f)
