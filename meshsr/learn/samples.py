"""Training samples assembled on the fly, a group of batches at a time; validation frames in memory.

A training sample is a node-frame (``mlp``) or a whole frame (``gnn``) of the training split.
Nothing is written out: per training frame the source-node quantities
(:meth:`~meshsr.learn.features.FeatureBuilder.source_quantities`, float32, T·N_src·F·(1 + Q)
values per simulation) are computed once and kept; they are, with the seeded permutation of the
rows that draws the batches (:mod:`meshsr.learn.training`), the only arrays that grow with S·T.  The
rows of each batch get their features from the compiled kernel
(:meth:`~meshsr.learn.features.FeatureBuilder.rows`), standardised in the same pass, their gains
(local scale / :math:`\\rho_r`) and targets (:math:`(u_{dst} - I u) / \\rho_r`) from the cached
float32 values, which are gathered from the (memory-mapped) pair cache one simulation at a time,
releasing its mapped pages after each: the cache's pages in the job's memory stay bounded by a
simulation.  Batches are drawn ahead and assembled ``GROUP_ROWS`` rows at a time
(:class:`Prefetched`), so the per-step cost is a slice; within a batch, rows are computed and
stored by blocks of destination nodes and frames (:func:`layout`), which the loss sees only in the
order of its floating-point sums.

The normalisation statistics (:class:`~meshsr.learn.normalisation.Normalisation`) are estimated
from a seeded sample of at most ``STATISTICS_ROWS`` training rows (all of them when there are
fewer), so their cost does not grow with S·T either.  The validation frames are few
(:func:`meshsr.learn.training.validation_subsample`): their features are built once and kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from meshsr.cache.format import release_pages
from meshsr.learn.features import FeatureBuilder, frame_order
from meshsr.learn.normalisation import Normalisation, RunningMoments

STATISTICS_ROWS = 1 << 18  # training rows sampled for the normalisation statistics
STATISTICS_SEED = 0  # of that sample: the statistics depend on the data only, not on train.seed
STATISTICS_CHUNK = 1 << 15  # rows assembled at a time for the statistics
GROUP_ROWS = 1 << 17  # rows of upcoming batches assembled at once (two such groups are held)
NODE_BLOCK = 512  # destination nodes whose rows are assembled together (samples.layout)


class Rows:
    """The node-frames of ``parts`` ((simulation, frames) in order) of a pair: row ``g * N + n`` is node ``n`` of
    the ``g``-th (simulation, frame) of ``parts``, whose source quantities are ``quantities[g]``."""

    def __init__(
        self,
        builder: FeatureBuilder,
        source_fields: np.ndarray,
        interpolated: np.ndarray,
        target_fields: np.ndarray,
        parts: list[tuple[int, tuple[int, ...]]],
    ) -> None:
        self.builder, self.interpolated, self.target_fields = builder, interpolated, target_fields
        self.sims = np.array([sim for sim, frames in parts for _ in frames], dtype=np.int64)
        self.times = np.array([t for _, frames in parts for t in frames], dtype=np.int64)
        _, self.n_times, self.n_nodes, self.n_fields = interpolated.shape
        self.quantities = builder.empty_quantities(len(self.sims))
        at = 0
        for sim, frames in parts:
            fields = np.asarray(source_fields[sim])[list(frames)]
            builder.source_quantities(fields, out=self.quantities[at : at + len(frames)])
            at += len(frames)

    @property
    def n_frames(self) -> int:
        return len(self.sims)

    def __len__(self) -> int:
        return self.n_frames * self.n_nodes

    def cached(self, frames: np.ndarray, nodes: np.ndarray, by_frame: np.ndarray) -> np.ndarray:
        """(4, R, F) float32: the cached :math:`I u` of each row's frame, of the frames before and after it
        (clamped) and the target field, read frame by frame (hence one simulation at a time), releasing the
        cache's mapped pages after each simulation.  ``by_frame``: :func:`frame_order` of ``frames``."""
        from meshsr.learn.feature_kernels import gather_cached

        out = np.empty((4, len(frames), self.n_fields), dtype=np.float32)
        sims = self.sims[frames[by_frame]]
        starts = np.flatnonzero(np.r_[True, sims[1:] != sims[:-1]]) if len(by_frame) else np.zeros(0, np.int64)
        times = self.times[frames]
        for lo, hi in zip(starts, np.r_[starts[1:], len(by_frame)], strict=True):
            sim = int(sims[lo])
            interp, target = np.asarray(self.interpolated[sim]), np.asarray(self.target_fields[sim])
            gather_cached(by_frame[lo:hi], times, nodes, interp, target, out)
            release_pages(self.interpolated)
            release_pages(self.target_fields)
        return out

    def assemble(
        self, idx: np.ndarray, norm: Normalisation | None, out: Buffers | None = None, segments: list[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features (R, K), gains (R, F) and targets (R, F) of rows ``idx``, float32, in ``out`` if given, laid out
        by :func:`layout` (each of ``segments``, consecutive runs of ``idx``, in its place, by node block and frame).

        With ``norm``: standardised (``norm.features``, ``norm.gains`` and ``norm.targets`` of the raw
        values, to float32 rounding); without: raw features, local scales and residuals :math:`u_{dst} - I u`.
        """
        idx = np.asarray(idx, dtype=np.int64)
        frames, nodes = np.divmod(idx, self.n_nodes)
        by_frame = frame_order(frames, self.n_frames)
        order, positions = layout(frames, nodes, self.n_frames, segments, by_frame)
        here, before, after, target = self.cached(frames, nodes, by_frame)
        size = len(idx)
        parts = None if out is None else (out.features[:size], out.gains[:size])
        features, gains = self.builder.rows(
            self.quantities, frames, nodes, here, before, after, norm, parts, (order, positions)
        )
        residual = target - here
        targets = np.empty_like(residual) if out is None else out.targets[:size]
        targets[positions] = residual[order] if norm is None else norm.targets(residual[order])
        return features, gains, targets


def layout(
    frames: np.ndarray,
    nodes: np.ndarray,
    n_frames: int,
    segments: list[int] | None = None,
    by_frame: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(order, positions) of rows (``frames``, ``nodes``): the ``p``-th row computed is row ``order[p]`` and is
    written to ``positions[p]``.  Rows are computed by blocks of ``NODE_BLOCK`` destination nodes and frame by
    frame within a block (stable radix sorts), so that both the nodes' records and the frames' source
    quantities stay in cache; each segment (``segments``: the lengths of consecutive runs of rows, one if
    None) keeps its place, its rows in that order, so that writes run in sequence.

    A batch's rows in another order change its loss only by the order of the floating-point sums.
    ``by_frame``: :func:`frame_order` of ``frames``, if known.
    """
    order = frame_order(frames, n_frames) if by_frame is None else by_frame
    blocks = nodes[order] // NODE_BLOCK
    order = order[np.argsort(blocks.astype(np.int16) if blocks.max(initial=0) < (1 << 15) else blocks, kind="stable")]
    if segments is None or len(segments) <= 1:
        return order, np.arange(len(order))
    segment = np.repeat(np.arange(len(segments)), segments)[order]
    regrouped = np.argsort(segment.astype(np.int16) if len(segments) < (1 << 15) else segment, kind="stable")
    positions = np.empty(len(order), dtype=np.int64)
    positions[regrouped] = np.arange(len(order))
    return order, positions


def fit_statistics(rows: Rows, limit: int = STATISTICS_ROWS, seed: int = STATISTICS_SEED) -> Normalisation:
    """Feature mean and standard deviation and the residual RMS over a seeded sample of at most ``limit`` rows
    (all rows when there are no more), sampled without replacement and read in ascending order."""
    n = len(rows)
    if n <= limit:
        picked = np.arange(n)
    else:
        picked = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    features, residuals = RunningMoments(), RunningMoments()
    for start in range(0, len(picked), STATISTICS_CHUNK):
        x, _, residual = rows.assemble(picked[start : start + STATISTICS_CHUNK], None)
        features.add(x, new_group=start == 0)
        residuals.add(residual, new_group=start == 0)
    mean, std, _ = features.result()
    return Normalisation(mean, std, residuals.result()[2])


class Buffers:
    """Memory for ``capacity`` rows' features, gains and targets, reused from one group of batches to the next but
    one (:class:`Prefetched`): fresh memory would cost a page fault per page on every group."""

    def __init__(self, capacity: int, k: int, f: int) -> None:
        self.capacity = capacity
        self.features = np.empty((capacity, k), dtype=np.float32)
        self.gains = np.empty((capacity, f), dtype=np.float32)
        self.targets = np.empty((capacity, f), dtype=np.float32)


@dataclass
class TrainingSamples:
    """The training split's samples: node-frames (``mlp``) or whole frames (``gnn``), assembled when taken."""

    rows: Rows
    norm: Normalisation
    device: torch.device
    per_frame: bool = False

    def samples(self, kind: str) -> TrainingSamples:
        """What a batch draws from: node-frame rows (``mlp``) or whole frames (``gnn``)."""
        return TrainingSamples(self.rows, self.norm, self.device, per_frame=kind != "mlp")

    def __len__(self) -> int:
        return self.rows.n_frames if self.per_frame else len(self.rows)

    @property
    def rows_per_sample(self) -> int:
        return self.rows.n_nodes if self.per_frame else 1

    def row_indices(self, idx: np.ndarray) -> np.ndarray:
        """The rows of samples ``idx``: themselves, or every node of each frame."""
        idx = np.asarray(idx, dtype=np.int64)
        if not self.per_frame:
            return idx
        n = self.rows.n_nodes
        return (idx[:, None] * n + np.arange(n)).ravel()

    def take(
        self, idx: np.ndarray, buffers: Buffers | None = None, batches: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, gains and targets of samples ``idx`` on the device, in ``buffers`` if given: (B, K) etc. for
        node-frames, (B, N, K) etc. for frames.  ``batches``: the lengths of the consecutive batches in ``idx``
        (one if None); each batch's node-frames come frame by frame (:func:`layout`), whole frames in order.
        """
        rows = self.row_indices(idx)
        if self.per_frame:
            segments = [self.rows.n_nodes] * len(idx)
        else:
            segments = [len(idx)] if batches is None else batches
        features, gains, targets = self.rows.assemble(rows, self.norm, buffers, segments)
        shape = (len(idx), self.rows.n_nodes) if self.per_frame else (len(idx),)
        parts = (a.reshape(*shape, a.shape[-1]) for a in (features, gains, targets))
        return tuple(torch.from_numpy(a).to(self.device) for a in parts)  # type: ignore[return-value]


Batch = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]  # global batch size, features, gains, targets


class Grouped:
    """Batches handed out one at a time (:meth:`next`) from groups that :meth:`_group` makes as they run out."""

    def __init__(self) -> None:
        self._queue: Iterator[Batch] = iter(())

    def next(self) -> Batch:
        """(samples in the global batch, features, gains, targets of this process's share)."""
        item = next(self._queue, None)
        if item is None:
            self._queue = self._group()
            item = next(self._queue)
        return item

    def _group(self) -> Iterator[Batch]:
        raise NotImplementedError


class Prefetched(Grouped):
    """Batches in draw order, assembled ``GROUP_ROWS`` rows at a time (:meth:`TrainingSamples.take`).

    ``draw()`` gives the next batch: the global batch's sample indices and this process's share
    of them; batches are drawn ahead, never past ``total`` batches.  :class:`~meshsr.learn.batch_stream.StreamBatches`
    gives the same batches read from a file.
    """

    def __init__(self, samples: TrainingSamples, draw: Callable[[], tuple[torch.Tensor, torch.Tensor]], total: int):
        super().__init__()
        self.samples, self.draw, self.left = samples, draw, total
        # Two sets: the batches of one group are still referenced while the next group is assembled.
        self._buffers: list[Buffers | None] = [None, None]

    def _group(self) -> Iterator[Batch]:
        first_rows, first_share = self.draw()
        per_batch = max(1, len(first_share)) * self.samples.rows_per_sample
        count = max(1, min(self.left, GROUP_ROWS // per_batch))
        drawn = [(first_rows, first_share)] + [self.draw() for _ in range(count - 1)]
        self.left -= count
        idx = torch.cat([share for _, share in drawn]).numpy()
        self._buffers.reverse()
        buffers = self._buffers[0]
        needed = len(idx) * self.samples.rows_per_sample
        if buffers is None or buffers.capacity < needed:
            rows = self.samples.rows
            buffers = Buffers(needed, rows.builder.n_features, rows.n_fields)
            self._buffers[0] = buffers
        x, gains, targets = self.samples.take(idx, buffers, [len(share) for _, share in drawn])
        start = 0
        for rows, share in drawn:
            end = start + len(share)
            yield len(rows), x[start:end], gains[start:end], targets[start:end]
            start = end


@dataclass
class FrameSamples:
    """Standardised features, gains and targets (V, N, ...) of a few whole frames, in memory (validation)."""

    features: np.ndarray
    gains: np.ndarray
    targets: np.ndarray
    device: torch.device

    @property
    def n_frames(self) -> int:
        return self.features.shape[0]

    @property
    def n_nodes(self) -> int:
        return self.features.shape[1]

    @property
    def n_targets(self) -> int:
        """Number of standardised target values: frames x nodes x fields."""
        return self.targets.size

    def frames(self, chunk: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, gains and targets (C, N, ...) of the frames in ``chunk``."""
        parts = (self.features[chunk], self.gains[chunk], self.targets[chunk])
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in parts)  # type: ignore


def frame_samples(
    builder: FeatureBuilder,
    source_fields: np.ndarray,
    interpolated: np.ndarray,
    target_fields: np.ndarray,
    parts: list[tuple[int, tuple[int, ...]]],
    norm: Normalisation,
    device: torch.device | str,
) -> FrameSamples:
    """The frames of ``parts`` ((simulation, frames) in order), standardised by ``norm``, in memory."""
    n_frames = sum(len(frames) for _, frames in parts)
    _, _, n, f = interpolated.shape
    features = np.empty((n_frames, n, builder.n_features), dtype=np.float32)
    gains = np.empty((n_frames, n, f), dtype=np.float32)
    targets = np.empty((n_frames, n, f), dtype=np.float32)
    at = 0
    for sim, frames in parts:
        for picked, x, g in builder.frame_chunks(source_fields[sim], interpolated[sim], frames, norm=norm):
            end = at + len(picked)
            features[at:end], gains[at:end] = x, g
            targets[at:end] = norm.targets(target_fields[sim][picked] - interpolated[sim][picked])
            at = end
        release_pages(interpolated)
        release_pages(target_fields)
    return FrameSamples(features, gains, targets, torch.device(device))
