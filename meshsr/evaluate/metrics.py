"""Errors of plain interpolation and of the trained model, per split, simulation, field and frame.

For a set of frames and nodes :math:`\\Omega` (one simulation, or a whole split) and one
field, with prediction :math:`\\hat u` and destination truth :math:`u`,

.. math::

    \\mathrm{rel}_{L^2} = \\frac{\\|\\hat u - u\\|_{2,\\Omega}}{\\|u\\|_{2,\\Omega}},
    \\qquad \\mathrm{RMSE} = \\sqrt{\\tfrac{1}{|\\Omega|} \\textstyle\\sum_\\Omega (\\hat u - u)^2}.

The split summary pools all of a split's frames and nodes before dividing; its
"improvement" is the field-averaged interpolation error over the field-averaged model error.

A frame whose truth has zero norm (all zero, such as a run starting from rest) has no
relative error: its ``rel_l2_*`` are NaN, ``zero_truth`` flags it, and ``l2_*`` give the
absolute errors :math:`\\|\\hat u - u\\|_2` over its nodes (every frame has them).  Pooled
errors keep such frames' squared errors in the numerator and are NaN only when every frame
of the set is zero.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meshsr.atomic import atomic_open, atomic_savez
from meshsr.errors import InputError
from meshsr.learn.device import pick_device
from meshsr.learn.features import FeatureBuilder
from meshsr.learn.model import mean_adjacency
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.learn.settings import RunSettings
from meshsr.learn.splits import SPLITS, Splits, frame_range
from meshsr.learn.trained_model import TrainedModel, retrain_command

log_default = logging.getLogger("meshsr")
METRIC_COLUMNS = [
    "split", "simulation", "frames", "field", "rel_l2_interp", "rel_l2_model", "rmse_interp", "rmse_model",
    "improvement",
]
SUMMARY_COLUMNS = ["split", "field", "rel_l2_interp", "rel_l2_model", "improvement"]


@dataclass
class Evaluation:
    metrics: pd.DataFrame  # one row per split, simulation, field
    frames: pd.DataFrame  # one row per split, simulation, frame, field
    summary: pd.DataFrame  # one row per split and field, plus the field mean
    panel: dict[str, np.ndarray]  # every frame (T, N, F) of one held-out simulation; the plot picks one
    splits: str = ""  # which simulations and frames each split holds (Splits.describe)
    held_out: str = ""  # the test data in a few words ("simulation(s) 5", "frames 38-47 of simulation 0")


def check_model_matches(trained: TrainedModel, data: PairData, builder: FeatureBuilder, path: str | Path) -> None:
    """A model trained on another pair, field set or feature set cannot be applied to this pair."""
    retrain = f"retrain it with: {retrain_command(path)}"
    if (trained.source, trained.target) != (data.source, data.target):
        pairs = f"{trained.source} -> {trained.target}, not {data.source} -> {data.target}"
        raise InputError(path, f"model was trained for {pairs}; {retrain}")
    if trained.feature_names != builder.names:
        raise InputError(path, f"model was trained on other input features than this pair provides; {retrain}")
    if trained.field_names != data.field_names:
        fields = f"model predicts fields {trained.field_names}, the pair has {data.field_names}"
        raise InputError(path, f"{fields}; {retrain}")


def model_splits(trained: TrainedModel, n_simulations: int, path: str | Path) -> Splits:
    """The splits recorded in the model file; they must cover this pair's simulations."""
    splits = Splits.from_dict(trained.splits)
    if sorted(splits.train + splits.validation + splits.test) != list(range(n_simulations)):
        problem = f"model's splits {trained.splits} do not cover the {n_simulations} simulations of this pair"
        raise InputError(path, f"{problem}; retrain it with: {retrain_command(path)}")
    return splits


ZERO_NORM = 1e-12  # a frame's truth is "zero" when its norm is at most this times the simulation's largest


def _sums(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and field: sum of squared errors and of squared truth, (T, F) float64."""
    diff = prediction.astype(np.float64) - truth
    return np.einsum("tnf,tnf->tf", diff, diff), np.einsum("tnf,tnf->tf", truth, truth)


def zero_truth(norm2: np.ndarray) -> np.ndarray:
    """(T, F) bool: frames whose truth norm is zero, or at most ``ZERO_NORM`` times the largest of its field.

    Their relative error is undefined (0/0, or rounding noise divided by ~0, e.g. a run
    starting from rest): it is reported as NaN and flagged, with the absolute L2 error beside it.
    """
    return norm2 <= ZERO_NORM**2 * norm2.max(axis=0, keepdims=True)


def pooled_relative(err2: np.ndarray, norm2: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """sqrt(sum err2 / sum norm2) over axis 0 where some frame in the sum has a nonzero truth, else NaN."""
    err2, norm2 = np.sum(err2, axis=0), np.sum(norm2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.any(defined, axis=0), np.sqrt(err2 / np.where(norm2 > 0, norm2, 1.0)), np.nan)


def improvement(rel_interp: float, rel_model: float) -> float:
    """How many times lower the model's error is; NaN when either is undefined, inf for an exact model."""
    if np.isnan(rel_interp) or np.isnan(rel_model):
        return float("nan")
    return float(rel_interp / rel_model) if rel_model > 0 else float("inf")


@dataclass
class _Simulation:
    """One simulation's arrays (T, N, F), its sums per frame and field (:func:`_sums`) and its splits' frames."""

    sim: int
    parts: list[tuple[str, tuple[int, ...]]]  # (split, frames), Splits.parts
    interp: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray  # float64
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.err_interp, self.norm2 = _sums(self.interp, self.truth)
        self.err_model, _ = _sums(self.prediction, self.truth)
        self.zero = zero_truth(self.norm2)

    def metric_rows(self, field_names: list[str]) -> list[dict]:
        n, rows = self.truth.shape[1], []
        for split, frames in self.parts:
            idx = list(frames)
            defined = ~self.zero[idx]
            ri = pooled_relative(self.err_interp[idx], self.norm2[idx], defined)
            rm = pooled_relative(self.err_model[idx], self.norm2[idx], defined)
            for j, name in enumerate(field_names):
                rows.append(
                    {
                        "split": split,
                        "simulation": self.sim,
                        "frames": frame_range(frames),
                        "field": name,
                        "rel_l2_interp": float(ri[j]),
                        "rel_l2_model": float(rm[j]),
                        "rmse_interp": float(np.sqrt(self.err_interp[idx, j].sum() / (len(idx) * n))),
                        "rmse_model": float(np.sqrt(self.err_model[idx, j].sum() / (len(idx) * n))),
                        "improvement": improvement(ri[j], rm[j]),
                    }
                )
        return rows

    def frame_rows(self, field_names: list[str]) -> list[dict]:
        nan = float("nan")
        split_of = {t: split for split, frames in self.parts for t in frames}
        rows = []
        for j, name in enumerate(field_names):
            for t in range(len(self.truth)):
                zero, norm2 = bool(self.zero[t, j]), self.norm2[t, j]
                row = {"split": split_of[t], "simulation": self.sim, "frame": t}
                row |= {} if self.times is None else {"time": float(self.times[t])}
                row |= {
                    "field": name,
                    "rel_l2_interp": nan if zero else float(np.sqrt(self.err_interp[t, j] / norm2)),
                    "rel_l2_model": nan if zero else float(np.sqrt(self.err_model[t, j] / norm2)),
                    "l2_interp": float(np.sqrt(self.err_interp[t, j])),
                    "l2_model": float(np.sqrt(self.err_model[t, j])),
                    "zero_truth": zero,
                }
                rows.append(row)
        return rows

    def pooled(self) -> dict[str, np.ndarray]:
        """split -> (4, F): squared errors of interpolation and model, squared truth, nonzero frames; summed."""
        out = {}
        for split, frames in self.parts:
            idx = list(frames)
            sums = [self.err_interp[idx], self.err_model[idx], self.norm2[idx], ~self.zero[idx]]
            out[split] = np.stack([np.sum(a, axis=0) for a in sums])
        return out

    def panel(self, field_names: list[str]) -> dict[str, np.ndarray]:
        return {
            "interp": self.interp,
            "prediction": self.prediction,
            "truth": self.truth.astype(np.float32),
            "simulation": np.array(self.sim),
            "field_names": np.array(field_names, dtype=str),
        }


def evaluate_pair(
    data: PairData,
    trained: TrainedModel,
    model_path: str | Path = "model",
    device: str = "cpu",
    log: logging.Logger = log_default,
) -> Evaluation:
    """Predict every simulation on ``device``, tabulate both methods' errors, keep one held-out simulation.

    ``device`` is this job's run-time setting, whatever device the model was trained on.
    """
    splits = model_splits(trained, data.shape[0], model_path)
    torch_device = pick_device(device)
    trained.network.to(torch_device)
    builder = data.feature_builder(**trained.feature_options)
    check_model_matches(trained, data, builder, model_path)
    gnn = trained.config.kind == "gnn"
    graph = mean_adjacency(data.target_mesh.cells, data.shape[2], torch_device) if gnn else None
    panel_sim = (splits.test or splits.validation or splits.train)[0]
    names, n_frames = data.field_names, data.shape[1]
    described = splits.describe(n_frames)
    log.info("splits: %s", described)
    rows, frame_rows, pooled, panel = [], [], {}, {}
    for sim in range(data.shape[0]):
        interp = data.cache.interpolated[sim]
        features, scales = data.features(builder, sim)
        prediction = trained.predict(features, scales, interp, graph, torch_device)
        truth = data.cache.target_fields[sim].astype(np.float64)
        one = _Simulation(sim, splits.parts(sim, n_frames), interp, prediction, truth, data.target_mesh.times)
        rows += one.metric_rows(names)
        frame_rows += one.frame_rows(names)
        for split, sums in one.pooled().items():
            pooled[split] = pooled.get(split, 0) + sums
        if sim == panel_sim:
            panel = one.panel(names)
    summary = _summary(pooled, names)
    _log_test_split(summary, log)
    metrics, frames = pd.DataFrame(rows, columns=METRIC_COLUMNS), pd.DataFrame(frame_rows)
    return Evaluation(metrics, frames, summary, panel, described, _held_out(splits))


def _held_out(splits: Splits) -> str:
    if splits.by_frames:
        return f"frames {frame_range(splits.test_frames)} of simulation {splits.train[0]}"
    return f"simulation(s) {', '.join(str(s) for s in splits.test)}" if splits.test else "none"


HEADLINE_COLUMNS = ["pair", "held out", "field", "interpolation rel. L2 [%]", "model rel. L2 [%]", "lower by"]


def headline_table(evaluation: Evaluation, pair: str) -> pd.DataFrame:
    """The report's table: the test split's pooled errors per field and their mean, as text for people.

    Validation stands in when nothing is held out for the test (then named in ``held out``).
    """
    split = "test" if (evaluation.summary.split == "test").any() else "validation"
    held = evaluation.held_out if split == "test" else "validation (no test data)"
    rows = [
        [pair, held, row.field, _number(100 * row.rel_l2_interp), _number(100 * row.rel_l2_model)]
        + [_times(row.improvement)]
        for row in evaluation.summary[evaluation.summary.split == split].itertuples()
    ]
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def _log_test_split(summary: pd.DataFrame, log: logging.Logger) -> None:
    test = summary[summary.split == "test"]
    if test.empty:
        log.info("no test simulations: nothing held out to report")
    for row in test.itertuples():
        log.info(
            "test split, %s: relative L2 interpolation %.3f %%, model %.3f %% (%.2fx lower)",
            row.field, 100 * row.rel_l2_interp, 100 * row.rel_l2_model, row.improvement,
        )


def _summary(pooled: dict[str, np.ndarray], field_names: list[str]) -> pd.DataFrame:
    """Pooled relative L2 per split and field (NaN for a field whose truth is zero throughout), and the field mean."""
    rows = []
    for split in SPLITS:
        if split not in pooled:
            continue
        err_i, err_m, norm2, defined = pooled[split][:, None]
        ri, rm = pooled_relative(err_i, norm2, defined > 0), pooled_relative(err_m, norm2, defined > 0)
        means = [np.nan if np.isnan(x).all() else float(np.nanmean(x)) for x in (ri, rm)]
        for name, a, b in zip([*field_names, "mean over fields"], [*ri, means[0]], [*rm, means[1]], strict=True):
            rows.append(
                {"split": split, "field": name, "rel_l2_interp": a, "rel_l2_model": b, "improvement": improvement(a, b)}
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def write_evaluation(evaluation: Evaluation, outputs: dict[str, str | Path], title: str, pair: str = "") -> None:
    """Write every table and the panel simulation atomically; ``outputs`` as in :func:`evaluate_job`."""
    with atomic_open(outputs["metrics"]) as fh:
        evaluation.metrics.to_csv(fh, index=False)
    with atomic_open(outputs["frames"]) as fh:
        evaluation.frames.to_csv(fh, index=False)
    with atomic_open(outputs["html"]) as fh:
        fh.write(metrics_html_page(evaluation, title))
    atomic_savez(outputs["panel"], **evaluation.panel)
    if "headline" in outputs:
        with atomic_open(outputs["headline"]) as fh:
            headline_table(evaluation, pair).to_csv(fh, index=False)


def metrics_html_page(evaluation: Evaluation, title: str) -> str:
    """A small standalone HTML page: split summary, then the per-simulation table."""
    fmt = {c: _percent for c in ("rel_l2_interp", "rel_l2_model")} | {"improvement": _times}
    summary = evaluation.summary.to_html(index=False, formatters=fmt, border=0, na_rep=UNDEFINED)
    rmse = {c: "{:.4g}".format for c in ("rmse_interp", "rmse_model")}
    per_sim = evaluation.metrics.to_html(index=False, formatters=fmt | rmse, border=0, na_rep=UNDEFINED)
    style = (
        "body{font-family:sans-serif} table{border-collapse:collapse;margin-bottom:1.5em} "
        "td,th{padding:2px 10px;text-align:right}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>"
        f"<h2>{title}</h2><p>Splits {html.escape(evaluation.splits)}.</p><h3>Pooled over each split</h3>{summary}"
        f"<h3>Per simulation</h3>{per_sim}<p>{UNDEFINED}: {UNDEFINED_NOTE}</p></body></html>\n"
    )


UNDEFINED = "n/a"
UNDEFINED_NOTE = (
    "the truth is zero in every frame of the set, so a relative error is undefined; results/metrics/*.frames.csv "
    "gives the absolute L2 errors (l2_interp, l2_model) of each frame"
)


def _number(value: float) -> str:
    return UNDEFINED if np.isnan(value) else f"{value:.2f}"


def _percent(value: float) -> str:
    return UNDEFINED if np.isnan(value) else f"{value:.4%}"


def _times(value: float) -> str:
    return UNDEFINED if np.isnan(value) else f"{value:.2f}x"


def evaluate_job(
    source: str,
    target: str,
    model_path: str | Path,
    src_path: str | Path,
    dst_path: str | Path,
    cache_path: str | Path | None,
    outputs: dict[str, str],
    device: str = RunSettings.device,
    threads: int = RunSettings.threads,
    rebuild: str | None = None,
    memo: str | Path | None = None,
    log: logging.Logger = log_default,
) -> Evaluation:
    """The evaluate rule: ``outputs`` has the paths ``metrics``, ``html``, ``frames``, ``panel`` and ``headline``
    (optional: the report's table, :func:`headline_table`).

    ``device`` and ``threads`` are this job's run-time settings; the model file's record of
    where it was trained is never read.
    """
    torch.set_num_threads(threads)
    trained = TrainedModel.load(model_path)
    data = load_pair_data(source, target, src_path, dst_path, cache_path, rebuild, memo)
    evaluation = evaluate_pair(data, trained, model_path, device, log)
    write_evaluation(evaluation, outputs, f"{source} -> {target}: relative L2 errors", f"{source} -> {target}")
    log.info("wrote %s", ", ".join(outputs.values()))
    return evaluation
