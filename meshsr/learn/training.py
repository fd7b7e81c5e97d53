"""Train the residual network of one resolution pair.

The training split's features and standardised residuals live in memory as tensors on
the training device; each step draws a batch of rows (``mlp``: node samples, ``gnn``:
whole frames) from a seeded permutation.  Adam with a one-cycle schedule minimises

.. math::  L = \\frac{1}{|B| F} \\sum_{b \\in B} \\sum_f (r_\\theta(z_b)_f - y_{b,f})^2

on standardised residuals :math:`y`; after every epoch the same loss on the validation
simulations picks the checkpoint that is kept.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from meshsr.atomic import atomic_open
from meshsr.errors import InputError
from meshsr.learn.device import make_deterministic, pick_device
from meshsr.learn.features import FeatureBuilder
from meshsr.learn.model import ModelConfig, build_model, mean_adjacency
from meshsr.learn.normalisation import Normalisation
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.learn.splits import Splits, make_splits
from meshsr.mesh.bundle import peek_shape
from meshsr.learn.settings import TrainSettings, check_pairs
from meshsr.learn.trained_model import TrainedModel

log_default = logging.getLogger("meshsr")


@dataclass
class SplitTensors:
    """Standardised features (frames, N, K), targets and output gains (frames, N, F) of some simulations."""

    features: torch.Tensor
    targets: torch.Tensor
    gains: torch.Tensor


def residual(data: PairData, sim: int) -> np.ndarray:
    """Target minus interpolation, (T, N, F) float32."""
    return data.cache.target_fields[sim] - data.cache.interpolated[sim]


def build_tensors(
    builder: FeatureBuilder,
    data: PairData,
    sims: tuple[int, ...],
    frames: tuple[int, ...],
    norm: Normalisation | None,
    device: torch.device,
) -> tuple[SplitTensors, Normalisation]:
    """Features of ``frames`` of ``sims`` in memory; ``norm=None`` fits the statistics on them (the training split)."""
    f = data.shape[3]
    t = len(frames)
    picked = list(frames)
    raw = np.empty((len(sims) * t, data.shape[2], builder.n_features), dtype=np.float32)
    scales = np.empty((len(sims) * t, data.shape[2], f), dtype=np.float32)
    every = picked == list(range(data.shape[1]))
    for i, sim in enumerate(sims):
        features, scale = builder.simulation(sim)
        raw[i * t : (i + 1) * t] = features if every else features[picked]
        scales[i * t : (i + 1) * t] = scale if every else scale[picked]
        del features
    residuals = [residual(data, sim) if every else residual(data, sim)[picked] for sim in sims]
    if norm is None:
        norm = Normalisation.fit((raw[i * t : (i + 1) * t] for i in range(len(sims))), residuals)
    for start in range(0, len(raw), t):  # in place, a simulation at a time: float64 temporaries stay small
        raw[start : start + t] = norm.features(raw[start : start + t])
    x = torch.from_numpy(raw)
    y = torch.from_numpy(np.concatenate([norm.targets(r) for r in residuals]))
    gains = torch.from_numpy(norm.gains(scales))
    return SplitTensors(x.to(device), y.to(device), gains.to(device)), norm


class _Batches:
    """Endless seeded batches of row indices: a fresh permutation whenever one runs out."""

    def __init__(self, n_rows: int, batch: int, generator: torch.Generator) -> None:
        self.n_rows, self.batch, self.generator = n_rows, min(batch, n_rows), generator
        self.perm = torch.randperm(n_rows, generator=generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n_rows:
            self.perm = torch.randperm(self.n_rows, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx


def _loss_on(network: torch.nn.Module, split: SplitTensors, kind: str, graph, chunk_nodes: int = 1 << 18) -> float:
    """Mean squared error on standardised residuals over a whole split, no gradients."""
    network.eval()
    frames, n, k = split.features.shape
    per_chunk = max(1, chunk_nodes // n)
    total = 0.0
    with torch.no_grad():
        for start in range(0, frames, per_chunk):
            x = split.features[start : start + per_chunk]
            y = split.targets[start : start + per_chunk]
            out = network(x.reshape(-1, k)).reshape(y.shape) if kind == "mlp" else network(x, graph)
            out = out * split.gains[start : start + per_chunk]
            total += float(((out - y) ** 2).sum(dtype=torch.float64))
    network.train()
    return total / split.targets.numel()


def train_pair(
    data: PairData,
    settings: TrainSettings,
    log: logging.Logger = log_default,
    progress: bool = True,
) -> TrainedModel:
    """Train on the training simulations of ``data``; keep the epoch with the lowest validation loss."""
    s, t, n, f = data.shape
    splits: Splits = make_splits(s, t, settings.test_simulations, settings.validation_simulations)
    device = pick_device(settings.device)
    generator = make_deterministic(settings.seed, device, settings.threads)
    log.info("pair %s -> %s: S=%d T=%d N=%d F=%d on %s", data.source, data.target, s, t, n, f, device)
    if splits.validation_frames:
        log.info(
            "splits: train %s (frames %d-%d), validation frames %d-%d of the training simulations, test %s",
            list(splits.train), 0, splits.validation_frames[0] - 1, splits.validation_frames[0], t - 1, list(splits.test),
        )
    else:
        log.info("splits: train %s, validation %s, test %s", list(splits.train), list(splits.validation), list(splits.test))

    start = time.perf_counter()
    builder = FeatureBuilder.for_training(data, splits.train, splits.train_frames(t), settings.use_coordinates)
    train, norm = build_tensors(builder, data, splits.train, splits.train_frames(t), None, device)
    if splits.validation_frames:
        val, _ = build_tensors(builder, data, splits.train, splits.validation_frames, norm, device)
    else:
        val, _ = build_tensors(builder, data, splits.validation, tuple(range(t)), norm, device)
    log.info("%d features per node (%s); tensors built in %.1f s", builder.n_features, ", ".join(builder.names), time.perf_counter() - start)

    config = ModelConfig(
        kind=settings.model,
        n_inputs=builder.n_features,
        n_outputs=f,
        hidden=settings.hidden,
        layers=settings.layers,
        message_passing=settings.message_passing,
    )
    network = build_model(config).to(device)
    graph = mean_adjacency(data.target_mesh.cells, n, device) if config.kind == "gnn" else None
    log.info("model %s: %d parameters", config, sum(p.numel() for p in network.parameters()))

    total_steps = settings.epochs * settings.steps_per_epoch
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=settings.lr, total_steps=total_steps, pct_start=0.05)
    if config.kind == "mlp":
        x_rows = train.features.reshape(-1, builder.n_features)
        y_rows = train.targets.reshape(-1, f)
        g_rows = train.gains.reshape(-1, f)
        batches = _Batches(len(x_rows), settings.batch_size, generator)
    else:
        x_rows, y_rows, g_rows = train.features, train.targets, train.gains
        batches = _Batches(len(x_rows), settings.batch_frames, generator)

    history: dict[str, list] = {"epoch": [], "train_loss": [], "validation_loss": [], "seconds": []}
    best = (float("inf"), 0, None)
    network.train()
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        running = torch.zeros((), dtype=torch.float64, device=device)
        bar = tqdm(range(settings.steps_per_epoch), desc=f"{data.source}->{data.target} epoch {epoch}/{settings.epochs}", file=sys.stderr, disable=not progress, leave=False)
        for _ in bar:
            idx = batches.next().to(device)
            out = network(x_rows[idx], graph) * g_rows[idx]
            loss = torch.mean((out - y_rows[idx]) ** 2)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += loss.detach()
        bar.close()
        train_loss = float(running) / settings.steps_per_epoch
        val_loss = _loss_on(network, val, config.kind, graph)
        elapsed = time.perf_counter() - start
        for key, value in zip(history, (epoch, train_loss, val_loss, elapsed)):
            history[key].append(value)
        marker = ""
        if val_loss < best[0]:
            best = (val_loss, epoch, {k: v.detach().clone() for k, v in network.state_dict().items()})
            marker = " *"
        log.info("epoch %d/%d  train loss %.5f  validation loss %.5f  %.1f s%s", epoch, settings.epochs, train_loss, val_loss, elapsed, marker)

    network.load_state_dict(best[2])
    history["best_epoch"] = best[1]
    log.info("kept epoch %d (validation loss %.5f); training took %.1f s", best[1], best[0], time.perf_counter() - start)
    return TrainedModel(
        config=config,
        network=network.cpu(),
        normalisation=norm,
        feature_names=builder.names,
        feature_options=builder.options,
        field_names=data.field_names,
        source=data.source,
        target=data.target,
        settings=settings.to_dict(),
        splits=splits.to_dict(),
        history=history,
    )


def train_job(
    source: str,
    target: str,
    src_path: str | Path,
    dst_path: str | Path,
    cache_path: str | Path | None,
    out_path: str | Path,
    settings: dict,
    resolutions: list[str],
    history_path: str | Path | None = None,
    rebuild: str | None = None,
    memo: str | Path | None = None,
    threads: int | None = None,
    log: logging.Logger = log_default,
    progress: bool = True,
) -> TrainedModel:
    """The train rule: check the settings, read (or, without ``cache_path``, build) the pair, train, save.

    ``history_path``: also write the loss history as CSV (what the loss plot reads).
    """
    parsed = TrainSettings.from_config(settings)
    if threads is not None:
        parsed = replace(parsed, threads=threads)
    check_pairs([(source, target)], list(resolutions))
    shape = peek_shape(src_path)
    if shape is not None:  # refuse an empty training split before reading anything big
        make_splits(*shape, parsed.test_simulations, parsed.validation_simulations)
    data = load_pair_data(source, target, src_path, dst_path, cache_path, rebuild, memo)
    log.info("inputs: %s", f"cache {cache_path}" if cache_path else f"built in memory from {src_path} and {dst_path} (use_cache: false)")
    trained = train_pair(data, parsed, log, progress)
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
