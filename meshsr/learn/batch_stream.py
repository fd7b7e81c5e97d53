"""A training job's batches, written once in the order it draws them, so that training only reads them.

The ``training_batches`` job (:func:`meshsr.learn.training.batches_job`) assembles every batch of an
``mlp`` training run exactly as training would on the fly (:class:`~meshsr.learn.samples.Prefetched`:
the same seeded permutation, the same rows in the same places) and writes two files:

* ``rows`` (``.npy``), float32 (B_n, B·(K + 2F)): per batch, in draw order, the standardised
  features (B, K), then the gains (B, F), then the targets (B, F), each block contiguous;
* ``side`` (``.npz``, plain arrays): the normalisation statistics, the validation frames
  (:class:`~meshsr.learn.samples.FrameSamples`) and ``meta`` (JSON: the pair, its shape, the splits,
  the feature names and options and the sampling settings the batches were drawn with).

The training job reads ``rows`` a group of batches at a time into reused buffers and hands each
batch's blocks to the network as views, so its memory does not grow with the file.  The rows
depend only on the data and the fit settings' :data:`~meshsr.learn.settings.SAMPLING_KEYS`: a
change of the architecture, learning rate or precision retrains from the same batches.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meshsr.atomic import atomic_path, atomic_savez, write_error
from meshsr.errors import InputError
from meshsr.learn.normalisation import Normalisation
from meshsr.learn.samples import Batch, FrameSamples, Grouped

STREAM_VERSION = 1
GROUP_ROWS = 1 << 17  # rows read from the file at a time (as samples.GROUP_ROWS are assembled at a time)


@dataclass
class BatchStream:
    """A written batch stream: the ``rows`` file (its float32 data of ``shape`` from byte ``offset``), the
    statistics, the validation frames and ``meta``."""

    path: Path
    offset: int
    shape: tuple[int, int]
    norm: Normalisation
    val: FrameSamples
    meta: dict[str, Any]

    @property
    def batch(self) -> int:
        return int(self.meta["batch"])

    @property
    def n_batches(self) -> int:
        return self.shape[0]

    def batches(self, rank: int = 0, world: int = 1) -> StreamBatches:
        """The batches in draw order, this process's rows ``[rank::world]`` of each (DDP)."""
        return StreamBatches(self, rank, world)


class StreamBatches(Grouped):
    """:class:`~meshsr.learn.samples.Prefetched`'s interface over a :class:`BatchStream`: the file is read
    ``GROUP_ROWS`` rows at a time into one of two reused buffers (the batches of one group are still
    referenced while the next is read), and each batch's blocks are handed out as views of it, tensors on
    the CPU.

    Plain reads into warm memory: no page faults per group, as a memory map released after each group
    would pay, and the memory held is two groups whatever the file's size.
    """

    def __init__(self, stream: BatchStream, rank: int, world: int) -> None:
        super().__init__()
        self.stream, self.rank, self.world = stream, rank, world
        self.at = 0
        self.per_group = max(1, GROUP_ROWS // stream.batch)
        self._buffers: list[np.ndarray | None] = [None, None]
        b, k, f = stream.batch, int(stream.meta["n_features"]), len(stream.meta["field_names"])
        self._blocks = ((0, b * k, k), (b * k, b * (k + f), f), (b * (k + f), b * (k + 2 * f), f))  # start, end, width

    def _group(self) -> Iterator[Batch]:
        stream = self.stream
        count = min(self.per_group, stream.n_batches - self.at)
        if count <= 0:
            raise InputError(None, f"the training batches hold {stream.n_batches} batches, and training asked for more")
        width = stream.shape[1]
        self._buffers.reverse()
        buffer = self._buffers[0]
        if buffer is None:
            buffer = self._buffers[0] = np.empty((self.per_group, width), dtype=np.float32)
        view = memoryview(buffer[:count]).cast("B")
        with open(stream.path, "rb") as fh:
            fh.seek(stream.offset + self.at * width * 4)
            if fh.readinto(view) != view.nbytes:
                raise InputError(stream.path, "training batches are truncated; rebuild them: snakemake --forcerun "
                                 "training_batches")
        self.at += count
        for flat in buffer[:count]:
            x, g, t = (
                torch.from_numpy(flat[start:end].reshape(-1, width)[self.rank :: self.world])
                for start, end, width in self._blocks
            )
            yield stream.batch, x, g, t


def write_batch_stream(
    rows_path: str | Path,
    side_path: str | Path,
    batches: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_batches: int,
    batch: int,
    norm: Normalisation,
    val: FrameSamples,
    meta: dict[str, Any],
) -> None:
    """Write ``n_batches`` batches of ``batch`` rows (features, gains, targets; float32) and the side file,
    atomically."""
    k, f = val.features.shape[-1], val.gains.shape[-1]
    width = batch * (k + 2 * f)
    meta = {**meta, "version": STREAM_VERSION, "batch": batch, "n_batches": n_batches, "n_features": k}
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n_batches, width)}
    remedy = "lower train.epochs, steps_per_epoch or batch_size (the batches are removed after training)"
    try:
        with atomic_path(rows_path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            written = 0
            for x, g, t in batches:
                if x.shape != (batch, k) or g.shape != (batch, f) or t.shape != (batch, f):
                    raise ValueError(f"batch {written} has shapes {x.shape}, {g.shape}, {t.shape}")
                for block in (x, g, t):
                    fh.write(np.ascontiguousarray(block, dtype=np.float32).data)
                written += 1
            if written != n_batches:
                raise ValueError(f"{written} batches written, {n_batches} announced")
        atomic_savez(
            side_path, **norm.to_state(), val_features=val.features, val_gains=val.gains, val_targets=val.targets,
            meta=np.array(json.dumps(meta, sort_keys=True)),
        )
    except OSError as exc:
        error = write_error(exc, rows_path, "the training batches", remedy, needed=n_batches * width * 4)
        if error is None:
            raise
        raise error from None


def read_batch_stream(rows_path: str | Path, side_path: str | Path) -> BatchStream:
    """Read ``side_path`` and the header of ``rows_path`` (:func:`write_batch_stream`; the rows are read as
    training takes them, :class:`StreamBatches`); one :class:`InputError` naming the file if either is
    unreadable or they do not fit together.  The validation frames are on the CPU."""
    rows_path, side_path = Path(rows_path), Path(side_path)
    rebuild = "rebuild it: snakemake --forcerun training_batches"
    try:
        with np.load(side_path, allow_pickle=False) as side:
            arrays = {key: side[key] for key in side.files}
        meta = json.loads(str(arrays.pop("meta")))
        norm = Normalisation.from_state(arrays)
        val = FrameSamples(arrays["val_features"], arrays["val_gains"], arrays["val_targets"], torch.device("cpu"))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(side_path, f"unreadable training batches side file ({exc}); {rebuild}") from None
    if meta.get("version") != STREAM_VERSION:
        raise InputError(side_path, f"training batches of version {meta.get('version')!r}, this meshsr reads "
                         f"{STREAM_VERSION}; {rebuild}")
    k, f = int(meta["n_features"]), len(meta["field_names"])
    expected = (int(meta["n_batches"]), int(meta["batch"]) * (k + 2 * f))
    try:
        with open(rows_path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
            size = os.fstat(fh.fileno()).st_size
    except (OSError, ValueError) as exc:
        raise InputError(rows_path, f"unreadable training batches ({exc}); {rebuild}") from None
    if dtype != np.float32 or fortran or shape != expected:
        raise InputError(rows_path, f"training batches are {dtype} {shape}, but {side_path} describes "
                         f"float32 {expected}; {rebuild}")
    if size != offset + math.prod(shape) * 4:
        raise InputError(rows_path, f"training batches hold {size - offset} bytes of data, their header "
                         f"{math.prod(shape) * 4}; {rebuild}")
    return BatchStream(rows_path, offset, shape, norm, val, meta)
