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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from meshsr.atomic import atomic_open
from meshsr.errors import InputError
from meshsr.learn import distributed
from meshsr.learn.device import make_deterministic, pick_device
from meshsr.learn.features import FeatureBuilder, field_spread
from meshsr.learn.model import ModelConfig, build_model, infer, mean_adjacency
from meshsr.learn.normalisation import Normalisation
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.learn.precision import Precision
from meshsr.learn.samples import FrameSamples, Prefetched, Rows, TrainingSamples, fit_statistics, frame_samples
from meshsr.learn.settings import FitSettings, RunSettings
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
    batches: Prefetched,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    steps: tqdm,
    ranks: distributed.Ranks,
    precision: Precision,
) -> float:
    """One optimiser step per item of ``steps`` (a progress bar over range(steps_per_epoch)); the mean loss.

    Under DDP each rank computes its share of every batch (:mod:`meshsr.learn.distributed`).
    """
    running = torch.zeros((), dtype=torch.float64, device=batches.samples.device)
    for _ in steps:
        rows, features, gains, targets = batches.next()
        with precision.autocast():
            out = network(features, graph)
        loss = ranks.loss((out * gains - targets) ** 2, len(rows))
        optimiser.zero_grad(set_to_none=True)
        precision.step(loss, optimiser)
        schedule.step()
        running += loss.detach()
    steps.close()
    return ranks.mean(float(running) / len(steps))


def fit_network(
    network: torch.nn.Module,
    kind: str,
    graph: torch.Tensor | None,
    train: TrainingSamples,
    val: FrameSamples,
    fit: FitSettings,
    generator: torch.Generator,
    label: str,
    log: logging.Logger = log_default,
    progress: bool = True,
) -> tuple[Checkpoint, dict[str, list]]:
    """Run the epochs; the best checkpoint (not yet loaded into ``network``) and the loss history."""
    samples = train.samples(kind)
    ranks, precision = distributed.current(), Precision(fit.precision, train.device)
    draws = _Batches(len(samples), fit.batch_size if kind == "mlp" else fit.batch_frames, generator)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        rows = draws.next()
        return rows, ranks.shard(rows)

    batches = Prefetched(samples, draw, fit.epochs * fit.steps_per_epoch)
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
        train_loss = _train_epoch(network, graph, batches, optimiser, schedule, steps, ranks, precision)
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
    config = model_config(fit, builder.n_features, f)
    network = build_model(config).to(device)
    graph = mean_adjacency(data.target_mesh.cells, n, device) if config.kind == "gnn" else None
    log.info("model %s: %d parameters", config, sum(p.numel() for p in network.parameters()))

    start = time.perf_counter()
    label = f"{data.source}->{data.target}"
    trainee = ranks.wrap(network)  # network itself for one process
    best, history = fit_network(trainee, config.kind, graph, train, val, fit, generator, label, log, progress)
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
        feature_names=builder.names,
        feature_options=builder.options,
        field_names=data.field_names,
        source=data.source,
        target=data.target,
        settings=fit.to_dict(),
        splits=splits.to_dict(),
        history=history,
        run={"device": device.type, "threads": run.threads},
    )


def train_job(
    source: str,
    target: str,
    src_path: str | Path,
    dst_path: str | Path,
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
) -> TrainedModel:
    """The train rule: read (or, without ``cache_path``, build) the pair, train on ``device``, save.

    ``fit``: the rule's :class:`FitSettings` as plain data.  ``history_path``: also write the
    loss history as CSV (what the loss plot reads).
    """
    settings = FitSettings.from_dict(fit)
    shape = peek_shape(src_path)
    # Refuse an empty training split before reading anything big; without the header, after.
    splits = None if shape is None else splits_for(settings, *shape)
    data = load_pair_data(source, target, src_path, dst_path, cache_path, rebuild, memo)
    in_memory = f"built in memory from {src_path} and {dst_path} (use_cache: false)"
    log.info("inputs: %s", f"cache {cache_path}" if cache_path else in_memory)
    trained = train_pair(data, settings, RunSettings(device, threads), splits, log, progress)
    if not distributed.current().main:  # another DDP rank: rank 0 writes
        return trained
    trained.save(out_path)
    if history_path is not None:
        write_history(trained.history, history_path)
    log.info("wrote %s", ", ".join(str(p) for p in (out_path, history_path) if p is not None))
    return trained


def write_history(history: dict, path: str | Path) -> None:
    """Loss per epoch as CSV: epoch, train_loss, validation_loss, seconds, kept (the chosen epoch)."""
    table = pd.DataFrame({k: history[k] for k in ("epoch", "train_loss", "validation_loss", "seconds")})
    table["kept"] = table["epoch"] == history["best_epoch"]
    with atomic_open(path) as fh:
        table.to_csv(fh, index=False)
