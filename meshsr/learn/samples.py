"""Training and validation samples in a temporary file, read back a group of batches at a time.

Per node and frame of a split, the features (K), the output gains (F) and the targets (F)
are one float32 row of an anonymous temporary file (``TMPDIR``; gone when the job ends,
killed or not), written a few frames at a time as the features are assembled.  The training
split is written raw (features, local scales, residuals :math:`u_{dst} - I u`), its statistics
summed on the way, then standardised in place
(:class:`~meshsr.learn.normalisation.Normalisation`, elementwise): the rows hold bit for bit
the values of standardising the whole split in memory, and the batches are the same rows in
the same order.

Memory stays bounded whatever S·T: rows are gathered for a group of upcoming batches (about
``PREFETCH_BYTES``) in one pass over the file in ascending order, releasing the mapped pages
every ``PASS_BYTES`` (they stay in the page cache, which is not the job's memory).
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from meshsr.cache.format import release_pages
from meshsr.learn.features import FeatureBuilder
from meshsr.learn.normalisation import Normalisation, RunningMoments

PASS_BYTES = 1 << 25  # of the file gathered before its mapped pages are released
PREFETCH_BYTES = 1 << 26  # rows of upcoming batches gathered at once (two such groups are held)
STANDARDISE_ROWS = 1 << 16  # rows standardised at a time: float64 temporaries stay small


class SampleFile:
    """Rows (frames, N, K + 2F) float32 in a memory-mapped temporary file: features, gains, targets (or, before
    :meth:`standardise`, raw features, local scales, residuals)."""

    def __init__(self, n_frames: int, n_nodes: int, n_features: int, n_fields: int) -> None:
        self.n_features, self.n_fields = n_features, n_fields
        self._file = tempfile.TemporaryFile(prefix="meshsr-samples-")
        shape = (n_frames, n_nodes, n_features + 2 * n_fields)
        self.rows = np.memmap(self._file, dtype=np.float32, mode="w+", shape=shape) if n_frames else np.empty(shape)

    def write(self, at: int, features: np.ndarray, scales: np.ndarray, residuals: np.ndarray) -> None:
        """Frames ``at`` to ``at + len(features)``."""
        k, f = self.n_features, self.n_fields
        block = self.rows[at : at + len(features)]
        block[..., :k], block[..., k : k + f], block[..., k + f :] = features, scales, residuals
        self.release()

    def standardise(self, norm: Normalisation, frames: int = 8) -> None:
        """Raw rows to standardised ones, in place, ``frames`` frames at a time."""
        for start in range(0, len(self.rows), frames):
            block = self.rows[start : start + frames]
            block[:] = standardised(block, norm, self.n_features, self.n_fields)
            self.release()

    def release(self) -> None:
        """Drop the mapped pages from this process (written ones stay in the page cache and the file)."""
        mapped = getattr(self.rows, "_mmap", None)
        if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED)


@dataclass
class SplitSamples:
    """The samples of one split: node-frames (``mlp``) or whole frames (``gnn``), standardised when read."""

    file: SampleFile
    norm: Normalisation
    device: torch.device
    per_frame: bool = False

    @property
    def n_frames(self) -> int:
        return self.file.rows.shape[0]

    @property
    def n_nodes(self) -> int:
        return self.file.rows.shape[1]

    @property
    def n_targets(self) -> int:
        """Number of standardised target values: frames x nodes x fields."""
        return self.n_frames * self.n_nodes * self.file.n_fields

    def samples(self, kind: str) -> SplitSamples:
        """What a batch draws from: node-frame rows (``mlp``) or whole frames (``gnn``)."""
        return SplitSamples(self.file, self.norm, self.device, per_frame=kind != "mlp")

    def __len__(self) -> int:
        return self.n_frames if self.per_frame else self.n_frames * self.n_nodes

    def _flat(self) -> np.ndarray:
        rows = self.file.rows
        return rows if self.per_frame else rows.reshape(-1, rows.shape[-1])

    def take(self, idx: np.ndarray, buffers: Buffers | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, gains and targets of samples ``idx`` (in that order) on the device, in ``buffers`` if given.

        One pass over the file in ascending order, releasing mapped pages every ``PASS_BYTES``.
        """
        flat = self._flat()
        order = np.argsort(idx, kind="stable")
        ordered = idx[order]
        buffers = buffers or Buffers(len(idx), flat.shape[1:], self.file.n_features, self.file.n_fields)
        raw = buffers.rows[: len(idx)]
        per_pass = max(1, PASS_BYTES // (flat[0].nbytes or 1))
        bounds = np.searchsorted(ordered, np.arange(0, len(flat) + per_pass, per_pass))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi > lo:
                raw[order[lo:hi]] = flat[ordered[lo:hi]]
                self.file.release()
        return self._tensors(raw, buffers)

    def frames(self, chunk: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, gains and targets (C, N, ...) of the frames in ``chunk``."""
        raw = np.array(self.file.rows[chunk])
        self.file.release()
        return self._tensors(raw)

    def _tensors(
        self, rows: np.ndarray, buffers: Buffers | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k, f = self.file.n_features, self.file.n_fields
        buffers = buffers or Buffers(len(rows), rows.shape[1:], k, f)
        parts = (rows[..., :k], rows[..., k : k + f], rows[..., k + f :])
        out = tuple(b[: len(rows)] for b in (buffers.features, buffers.gains, buffers.targets))
        for target, part in zip(out, parts, strict=True):
            np.copyto(target, part)
        return tuple(torch.from_numpy(a).to(self.device) for a in out)  # type: ignore[return-value]


class Buffers:
    """Memory for ``capacity`` samples of shape ``shape`` (..., K + 2F) and their features, gains and targets.

    Reused from one group of batches to the next but one (:class:`Prefetched`): fresh memory
    would cost a page fault per page on every group.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], k: int, f: int) -> None:
        self.capacity = capacity
        self.rows = np.empty((capacity, *shape), dtype=np.float32)
        self.features = np.empty((capacity, *shape[:-1], k), dtype=np.float32)
        self.gains = np.empty((capacity, *shape[:-1], f), dtype=np.float32)
        self.targets = np.empty((capacity, *shape[:-1], f), dtype=np.float32)


def standardised(raw: np.ndarray, norm: Normalisation, k: int, f: int) -> np.ndarray:
    """Rows (..., K + 2F) of raw features, local scales and residuals as features, gains and targets."""
    out = np.empty_like(raw, dtype=np.float32)
    rows, flat = raw.reshape(-1, raw.shape[-1]), out.reshape(-1, raw.shape[-1])
    for start in range(0, len(rows), STANDARDISE_ROWS):
        part = rows[start : start + STANDARDISE_ROWS]
        flat[start : start + STANDARDISE_ROWS, :k] = norm.features(part[:, :k])
    flat[:, k : k + f] = norm.gains(rows[:, k : k + f])
    flat[:, k + f :] = norm.targets(rows[:, k + f :])
    return out


def write_split(
    builder: FeatureBuilder,
    source_fields: np.ndarray,
    interpolated: np.ndarray,
    target_fields: np.ndarray,
    parts: list[tuple[int, tuple[int, ...]]],
    norm: Normalisation | None,
    device: torch.device,
) -> tuple[SplitSamples, Normalisation]:
    """The rows of ``parts`` ((simulation, frames) in order) in a sample file; ``norm=None`` fits the statistics.

    The statistics are those of :meth:`Normalisation.fit` over one chunk per simulation, summed
    here a few frames at a time with the same rounding (:class:`RunningMoments`).
    """
    n_frames = sum(len(frames) for _, frames in parts)
    file = SampleFile(n_frames, interpolated.shape[2], builder.n_features, interpolated.shape[3])
    features_moments, residual_moments = RunningMoments(), RunningMoments()
    at = 0
    for sim, frames in parts:
        chunks = builder.frame_chunks(source_fields[sim], interpolated[sim], frames)
        for i, (picked, features, scales) in enumerate(chunks):
            residuals = target_fields[sim][picked] - interpolated[sim][picked]
            file.write(at, features, scales, residuals)
            at += len(picked)
            if norm is None:
                features_moments.add(features, new_group=i == 0)
                residual_moments.add(residuals, new_group=i == 0)
        release_pages(interpolated)  # a memory-mapped cache: what this simulation touched
        release_pages(target_fields)
    if norm is None:
        mean, std, _ = features_moments.result()
        norm = Normalisation(mean, std, residual_moments.result()[2])
    file.standardise(norm)
    return SplitSamples(file, norm, device), norm


class Prefetched:
    """Batches in draw order, their rows gathered ``PREFETCH_BYTES`` at a time (:meth:`SplitSamples.take`).

    ``draw()`` gives the next batch: the global batch's sample indices and this process's share
    of them; batches are drawn ahead, never past ``total`` batches.
    """

    def __init__(self, samples: SplitSamples, draw: Callable[[], tuple[torch.Tensor, torch.Tensor]], total: int):
        self.samples, self.draw, self.left = samples, draw, total
        # Two sets: the batches of one group are still in use while the next group is gathered.
        self._buffers: list[Buffers | None] = [None, None]
        self._queue: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = iter(())

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(global batch rows, features, gains, targets of this process's share)."""
        item = next(self._queue, None)
        if item is None:
            self._queue = self._gather()
            item = next(self._queue)
        return item

    def _gather(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        first_rows, first_share = self.draw()
        per_batch = max(1, len(first_share)) * (self.samples._flat()[0].nbytes or 1)
        count = max(1, min(self.left, PREFETCH_BYTES // per_batch))
        drawn = [(first_rows, first_share)] + [self.draw() for _ in range(count - 1)]
        self.left -= count
        idx = torch.cat([share for _, share in drawn]).numpy()
        self._buffers.reverse()
        buffers = self._buffers[0]
        if buffers is None or buffers.capacity < len(idx):
            file = self.samples.file
            buffers = Buffers(len(idx), self.samples._flat().shape[1:], file.n_features, file.n_fields)
            self._buffers[0] = buffers
        x, gains, targets = self.samples.take(idx, buffers)
        start = 0
        for rows, share in drawn:
            end = start + len(share)
            yield rows, x[start:end], gains[start:end], targets[start:end]
            start = end
