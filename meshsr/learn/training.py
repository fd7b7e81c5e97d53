"""Train the residual network of one resolution pair.

Each step draws a batch of samples (``mlp``: node-frames, ``gnn``: whole frames) of the
training split from a seeded permutation; their standardised features and residuals are
assembled on the fly (:mod:`meshsr.learn.samples`) and moved to the training device.  AdamW
with a one-cycle schedule minimises

.. math::  L = \\operatorname{mean}_{b \\in B,\\, f} \\big(g_{b,f}\\, r_\\theta(z_b)_f - y_{b,f}\\big)^2,
    \\qquad y = (u_{dst} - I u) / \\rho_r, \\qquad g = s / \\rho_r,

the network output times the local scale :math:`s` against the residual, both in units
of the residual's training RMS :math:`\\rho_r` per field (:mod:`meshsr.learn.normalisation`).
After every epoch the same loss on the validation data picks the checkpoint that is kept.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from meshsr.atomic import atomic_open
from meshsr.errors import InputError
from meshsr.learn import distributed
from meshsr.learn.batch_stream import (
    BatchStream,
    StreamBatches,
    read_batch_stream,
    write_batch_stream,
)
from meshsr.learn.device import batch_generator, make_deterministic, pick_device
from meshsr.learn.features import FeatureBuilder, field_spread
from meshsr.learn.model import ModelConfig, build_model, infer, mean_adjacency
from meshsr.learn.normalisation import Normalisation
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.learn.precision import Precision
from meshsr.learn.samples import FrameSamples, Prefetched, Rows, TrainingSamples, fit_statistics, frame_samples
from meshsr.learn.settings import FitSettings, RunSettings, sampling_settings
from meshsr.learn.splits import Splits, splits_for
from meshsr.learn.trained_model import TrainedModel
from meshsr.mesh.bundle import peek_shape

log_default = logging.getLogger("meshsr")
WARMUP_SHARE = 0.05  # of the one-cycle schedule's steps (the default 16 x 250 steps: 200)
VALIDATION_FRAMES = 6  # validate on at most this many evenly spaced frames of each validation block


def validation_subsample(frames: tuple[int, ...]) -> tuple[int, ...]:
    """Every k-th of ``frames`` (the first included), k the smallest stride that keeps ``VALIDATION_FRAMES`` or fewer.

    Neighbouring frames are strongly correlated, so the subsample ranks epochs as the whole
    block does at a fraction of the cost: on the example (T = 48, stride 8) every one of the 8
    possible offsets keeps epoch 13, the full validation's choice (docs/training.md).
    """
    return frames[:: max(1, math.ceil(len(frames) / VALIDATION_FRAMES))]


@dataclass
class Checkpoint:
    """The epoch with the lowest validation loss so far and a copy of its weights."""

    epoch: int = 0
    loss: float = math.inf
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, loss: float, network: torch.nn.Module) -> bool:
        """Keep ``network``'s weights if ``loss`` is the lowest so far; True if kept."""
        if not loss < self.loss:
            return False
        self.epoch, self.loss = epoch, loss
        self.state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        return True


def training_samples(
    builder: FeatureBuilder, data: PairData, sims: tuple[int, ...], frames: tuple[int, ...], device: torch.device
) -> tuple[TrainingSamples, Normalisation]:
    """The node-frames of ``frames`` of ``sims`` (:mod:`meshsr.learn.samples`) and the normalisation statistics
    estimated on them."""
    parts = [(sim, tuple(frames)) for sim in sims]
    cache = data.cache
    rows = Rows(builder, data.source_mesh.fields, cache.interpolated, cache.target_fields, parts)
    norm = fit_statistics(rows)
    return TrainingSamples(rows, norm, device), norm


def validation_frames(
    builder: FeatureBuilder,
    data: PairData,
    sims: tuple[int, ...],
    frames: tuple[int, ...],
    norm: Normalisation,
    device: torch.device,
) -> FrameSamples:
    """``frames`` of ``sims``, standardised by ``norm``, in memory."""
    parts = [(sim, tuple(frames)) for sim in sims]
    cache = data.cache
    return frame_samples(builder, data.source_mesh.fields, cache.interpolated, cache.target_fields, parts, norm, device)


class _Batches:
    """Endless seeded batches of row indices: a fresh permutation whenever one runs out.

    The permutation is held as int32 where the rows allow (torch draws the same permutation
    whatever the dtype): at 4 bytes per training row it is, with the source quantities, what
    grows with S·T.
    """

    def __init__(self, n_rows: int, batch: int, generator: torch.Generator) -> None:
        self.n_rows, self.batch, self.generator = n_rows, min(batch, n_rows), generator
        self.dtype = torch.int32 if n_rows < (1 << 31) else torch.int64
        self.perm = torch.randperm(n_rows, generator=generator, dtype=self.dtype)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n_rows:
            self.perm = torch.randperm(self.n_rows, generator=self.generator, dtype=self.dtype)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx


def _loss_on(network: torch.nn.Module, split: FrameSamples, graph: torch.Tensor | None) -> float:
    """Mean squared error on standardised residuals over a whole split, no gradients."""
    read: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def inputs(chunk: slice) -> torch.Tensor:
        read.append(split.frames(chunk))  # features, gains, targets of the chunk's frames
        return read[-1][0]

    total = 0.0
    for _, out in infer(network, inputs, split.n_frames, split.n_nodes, graph):
        _, gains, targets = read.pop()
        total += float(((out * gains - targets) ** 2).sum(dtype=torch.float64))
    return total / split.n_targets


def _log_splits(log: logging.Logger, splits: Splits, n_frames: int) -> None:
    log.info("splits: %s", splits.describe(n_frames))


def prepare_data(
    data: PairData, splits: Splits, use_coordinates: bool, device: torch.device
) -> tuple[FeatureBuilder, TrainingSamples, FrameSamples, Normalisation]:
    """The feature builder, the training samples and the validation frames, standardised by the training split."""
    t = data.shape[1]
    train_frames = splits.train_frames(t)
    std = field_spread(data.cache.interpolated, splits.train, train_frames)
    builder = data.feature_builder(use_coordinates=use_coordinates, field_std=std)
    train, norm = training_samples(builder, data, splits.train, train_frames, device)
    if splits.validation_frames:
        val_sims, val_frames = splits.train, validation_subsample(splits.validation_frames)
    else:
        val_sims, val_frames = splits.validation, validation_subsample(tuple(range(t)))
    val = validation_frames(builder, data, val_sims, val_frames, norm, device)
    return builder, train, val, norm


def model_config(fit: FitSettings, n_inputs: int, n_outputs: int) -> ModelConfig:
    return ModelConfig(
        kind=fit.model,
        n_inputs=n_inputs,
        n_outputs=n_outputs,
        hidden=fit.hidden,
        layers=fit.layers,
        message_passing=fit.message_passing,
    )


def one_cycle(optimiser: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's one-cycle schedule with peak ``lr``; WARMUP_SHARE of the steps warm up, but at least two.

    Below 40 steps torch's warm-up would end before step 1: it divides by zero (20 steps) or skips
    the warm-up. There the warm-up is two steps (lr/25, then lr) before the cosine decay; a run of
    1 or 2 steps just uses lr/25, then lr. From 40 steps on it is torch's schedule unchanged.
    """
    if total_steps >= 3:
        pct_start = max(WARMUP_SHARE, 2 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=total_steps, pct_start=pct_start)
    start = 1 / 25  # OneCycleLR's default div_factor: where its warm-up starts
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: start if step == 0 else 1.0)


def _train_epoch(
    network: torch.nn.Module,
    graph: torch.Tensor | None,
    batches: Prefetched | StreamBatches,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    steps: tqdm,
    ranks: distributed.Ranks,
    precision: Precision,
    device: torch.device,
) -> float:
    """One optimiser step per item of ``steps`` (a progress bar over range(steps_per_epoch)); the mean loss.

    Under DDP each rank computes its share of every batch (:mod:`meshsr.learn.distributed`).
    """
    running = torch.zeros((), dtype=torch.float64, device=device)
    for _ in steps:
        global_rows, *parts = batches.next()
        features, gains, targets = (a.to(device) for a in parts)
        with precision.autocast():
            out = network(features, graph)
        loss = ranks.loss((out * gains - targets) ** 2, global_rows)
        optimiser.zero_grad(set_to_none=True)
        precision.step(loss, optimiser)
        schedule.step()
        running += loss.detach()
    steps.close()
    return ranks.mean(float(running) / len(steps))


def draw_batches(train: TrainingSamples, kind: str, fit: FitSettings, generator: torch.Generator) -> Prefetched:
    """The training run's batches in draw order (``fit.epochs * fit.steps_per_epoch`` of them), assembled on the
    fly: node-frames (``mlp``) or whole frames (``gnn``) from the seeded permutations of ``generator``; under DDP
    this process's share of each."""
    samples = train.samples(kind)
    ranks = distributed.current()
    draws = _Batches(len(samples), fit.batch_size if kind == "mlp" else fit.batch_frames, generator)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        rows = draws.next()
        return rows, ranks.shard(rows)

    return Prefetched(samples, draw, fit.epochs * fit.steps_per_epoch)


def fit_network(
    network: torch.nn.Module,
    graph: torch.Tensor | None,
    batches: Prefetched | StreamBatches,
    val: FrameSamples,
    fit: FitSettings,
    device: torch.device,
    label: str,
    log: logging.Logger = log_default,
    progress: bool = True,
) -> tuple[Checkpoint, dict[str, list]]:
    """Run the epochs on ``batches`` (:func:`draw_batches`, or read: :mod:`meshsr.learn.batch_stream`); the best
    checkpoint (not yet loaded into ``network``) and the loss history."""
    ranks, precision = distributed.current(), Precision(fit.precision, device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    schedule = one_cycle(optimiser, fit.lr, fit.epochs * fit.steps_per_epoch)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "validation_loss": [], "seconds": []}
    best = Checkpoint()
    network.train()
    start = time.perf_counter()
    for epoch in range(1, fit.epochs + 1):
        steps = tqdm(
            range(fit.steps_per_epoch), desc=f"{label} epoch {epoch}/{fit.epochs}", file=sys.stderr,
            disable=not progress, leave=False,
        )
        train_loss = _train_epoch(network, graph, batches, optimiser, schedule, steps, ranks, precision, device)
        val_loss = _loss_on(network, val, graph)
        elapsed = time.perf_counter() - start
        for key, value in zip(history, (epoch, train_loss, val_loss, elapsed), strict=True):
            history[key].append(value)
        marker = " *" if best.offer(epoch, val_loss, network) else ""
        log.info(
            "epoch %d/%d  train loss %.5f  validation loss %.5f  %.1f s%s",
            epoch, fit.epochs, train_loss, val_loss, elapsed, marker,
        )
    return best, history


def train_pair(
    data: PairData,
    fit: FitSettings,
    run: RunSettings | None = None,
    splits: Splits | None = None,
    log: logging.Logger = log_default,
    progress: bool = True,
) -> TrainedModel:
    """Train on the training simulations of ``data``; keep the epoch with the lowest validation loss.

    ``run``: device and threads (default :class:`RunSettings`); ``splits``: made from ``fit`` if not given.
    """
    run = run or RunSettings()
    s, t, n, f = data.shape
    splits = splits or splits_for(fit, s, t)
    ranks = distributed.current()
    device = ranks.device(pick_device(run.device))
    generator = make_deterministic(fit.seed, device, run.threads)
    log.info("pair %s -> %s: S=%d T=%d N=%d F=%d on %s", data.source, data.target, s, t, n, f, device)
    _log_splits(log, splits, t)

    start = time.perf_counter()
    builder, train, val, norm = prepare_data(data, splits, fit.use_coordinates, device)
    log.info(
        "%d features per node (%s); samples prepared in %.1f s",
        builder.n_features, ", ".join(builder.names), time.perf_counter() - start,
    )
    graph = mean_adjacency(data.target_mesh.cells, n, device) if fit.model == "gnn" else None
    batches = draw_batches(train, fit.model, fit, generator)
    description = {
        "source": data.source, "target": data.target, "field_names": data.field_names,
        "feature_names": builder.names, "feature_options": builder.options,
    }
    return _fit(fit, run, device, splits, description, batches, val, norm, graph, log, progress)


def train_from_stream(
    stream: BatchStream, fit: FitSettings, run: RunSettings | None = None, log: logging.Logger = log_default,
    progress: bool = True,
) -> TrainedModel:
    """Train an ``mlp`` on batches written by the ``training_batches`` job (:mod:`meshsr.learn.batch_stream`).

    The same model as :func:`train_pair` on the pair the batches come from: the network starts from
    the same seed and sees the same batches.  Refuses batches drawn with other sampling settings.
    """
    run = run or RunSettings()
    meta = stream.meta
    drawn, wanted = meta["sampling"], sampling_settings(fit.to_dict())
    if drawn != wanted:
        changed = ", ".join(sorted(k for k in wanted if drawn.get(k) != wanted[k]))
        raise InputError(
            None, f"the training batches were drawn with other train settings ({changed}); "
            "rebuild them: snakemake --forcerun training_batches"
        )
    s, t, n, f = meta["shape"]
    ranks = distributed.current()
    device = ranks.device(pick_device(run.device))
    make_deterministic(fit.seed, device, run.threads)
    splits = Splits.from_dict(meta["splits"])
    log.info("pair %s -> %s: S=%d T=%d N=%d F=%d on %s", meta["source"], meta["target"], s, t, n, f, device)
    _log_splits(log, splits, t)
    log.info("%d batches of %d node-frames read from the training batches", stream.n_batches, stream.batch)
    val = replace(stream.val, device=device)
    keys = ("source", "target", "field_names", "feature_names", "feature_options")
    description = {key: meta[key] for key in keys}
    batches = stream.batches(ranks.rank, ranks.world)
    return _fit(fit, run, device, splits, description, batches, val, stream.norm, None, log, progress)


def _fit(
    fit: FitSettings,
    run: RunSettings,
    device: torch.device,
    splits: Splits,
    description: dict,
    batches: Prefetched | StreamBatches,
    val: FrameSamples,
    norm: Normalisation,
    graph: torch.Tensor | None,
    log: logging.Logger,
    progress: bool,
) -> TrainedModel:
    """Build the network (seeded by :func:`make_deterministic` before), run the epochs, keep the best one."""
    ranks = distributed.current()
    n_features, n_fields = len(description["feature_names"]), len(description["field_names"])
    config = model_config(fit, n_features, n_fields)
    network = build_model(config).to(device)
    log.info("model %s: %d parameters", config, sum(p.numel() for p in network.parameters()))

    start = time.perf_counter()
    label = f"{description['source']}->{description['target']}"
    trainee = ranks.wrap(network)  # network itself for one process
    best, history = fit_network(trainee, graph, batches, val, fit, device, label, log, progress)
    if best.state is None:
        raise InputError(
            None, f"config key 'train.lr': training diverged, the validation loss was never finite (lr {fit.lr}); "
            "lower train.lr"
        )
    trainee.load_state_dict(best.state)
    history["best_epoch"] = best.epoch
    seconds = time.perf_counter() - start
    log.info("kept epoch %d (validation loss %.5f); training took %.1f s", best.epoch, best.loss, seconds)
    return TrainedModel(
        config=config,
        network=network.cpu(),
        normalisation=norm,
        feature_names=list(description["feature_names"]),
        feature_options=description["feature_options"],
        field_names=list(description["field_names"]),
        source=description["source"],
        target=description["target"],
        settings=fit.to_dict(),
        splits=splits.to_dict(),
        history=history,
        run={"device": device.type, "threads": run.threads},
    )


def train_job(
    source: str,
    target: str,
    src_path: str | Path | None,
    dst_path: str | Path | None,
    cache_path: str | Path | None,
    out_path: str | Path,
    fit: dict,
    history_path: str | Path | None = None,
    device: str = RunSettings.device,
    threads: int = RunSettings.threads,
    rebuild: str | None = None,
    memo: str | Path | None = None,
    log: logging.Logger = log_default,
    progress: bool = True,
    batches: tuple[str | Path, str | Path] | list | None = None,
) -> TrainedModel:
    """The train rule: read (or, without ``cache_path``, build) the pair, train on ``device``, save.

    ``fit``: the rule's :class:`FitSettings` as plain data.  ``history_path``: also write the
    loss history as CSV (what the loss plot reads).  ``batches``: the (rows, side) files of the
    ``training_batches`` job (:func:`batches_job`); then the pair is not read at all.
    """
    settings = FitSettings.from_dict(fit)
    run = RunSettings(device, threads)
    if batches is not None:
        rows_path, side_path = batches
        log.info("inputs: training batches %s and %s", rows_path, side_path)
        trained = train_from_stream(read_batch_stream(rows_path, side_path), settings, run, log, progress)
    else:
        splits, data = _read_pair(source, target, src_path, dst_path, cache_path, settings, rebuild, memo, log)
        trained = train_pair(data, settings, run, splits, log, progress)
    if not distributed.current().main:  # another DDP rank: rank 0 writes
        return trained
    trained.save(out_path)
    if history_path is not None:
        write_history(trained.history, history_path)
    log.info("wrote %s", ", ".join(str(p) for p in (out_path, history_path) if p is not None))
    return trained


def _read_pair(
    source: str,
    target: str,
    src_path: str | Path | None,
    dst_path: str | Path | None,
    cache_path: str | Path | None,
    fit: FitSettings,
    rebuild: str | None,
    memo: str | Path | None,
    log: logging.Logger,
) -> tuple[Splits | None, PairData]:
    """The pair's data, after refusing an empty training split from the source's header where it has one."""
    if src_path is None or dst_path is None:
        raise ValueError("the pair's mesh bundles are needed without training batches")
    shape = peek_shape(src_path)
    # Refuse an empty training split before reading anything big; without the header, after.
    splits = None if shape is None else splits_for(fit, *shape)
    data = load_pair_data(source, target, src_path, dst_path, cache_path, rebuild, memo)
    in_memory = f"built in memory from {src_path} and {dst_path} (use_cache: false)"
    log.info("inputs: %s", f"cache {cache_path}" if cache_path else in_memory)
    return splits, data


def batches_job(
    source: str,
    target: str,
    src_path: str | Path,
    dst_path: str | Path,
    cache_path: str | Path | None,
    rows_path: str | Path,
    side_path: str | Path,
    fit: dict,
    rebuild: str | None = None,
    memo: str | Path | None = None,
    log: logging.Logger = log_default,
) -> None:
    """The training_batches rule: every batch of an ``mlp`` training run, in draw order, written once
    (:mod:`meshsr.learn.batch_stream`), with the statistics and validation frames the run needs.

    ``fit``: the train settings as plain data; only :data:`~meshsr.learn.settings.SAMPLING_KEYS` are
    read (missing keys take their defaults).  The batches are those :func:`train_pair` would draw.
    """
    settings = FitSettings.from_dict(fit)
    if settings.model != "mlp":
        raise InputError(None, f"config key 'train.model': training batches are written for the mlp model, not "
                         f"{settings.model!r}; the gnn trains from the pair directly")
    splits, data = _read_pair(source, target, src_path, dst_path, cache_path, settings, rebuild, memo, log)
    s, t, n, f = data.shape
    splits = splits or splits_for(settings, s, t)
    _log_splits(log, splits, t)
    start = time.perf_counter()
    builder, train, val, norm = prepare_data(data, splits, settings.use_coordinates, torch.device("cpu"))
    batches = draw_batches(train, settings.model, settings, batch_generator(settings.seed))
    total = settings.epochs * settings.steps_per_epoch

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for _ in range(total):
            _, x, g, y = batches.next()
            yield x.numpy(), g.numpy(), y.numpy()

    meta = {
        "source": source, "target": target, "shape": [s, t, n, f], "splits": splits.to_dict(),
        "field_names": data.field_names, "feature_names": builder.names, "feature_options": builder.options,
        "sampling": sampling_settings(settings.to_dict()),
    }
    batch = min(settings.batch_size, len(train))
    write_batch_stream(rows_path, side_path, blocks(), total, batch, norm, val, meta)
    log.info("wrote %d batches of %d node-frames (%d features) in %.1f s: %s, %s", total, batch,
             builder.n_features, time.perf_counter() - start, rows_path, side_path)


def write_history(history: dict, path: str | Path) -> None:
    """Loss per epoch as CSV: epoch, train_loss, validation_loss, seconds, kept (the chosen epoch)."""
    table = pd.DataFrame({k: history[k] for k in ("epoch", "train_loss", "validation_loss", "seconds")})
    table["kept"] = table["epoch"] == history["best_epoch"]
    with atomic_open(path) as fh:
        table.to_csv(fh, index=False)
