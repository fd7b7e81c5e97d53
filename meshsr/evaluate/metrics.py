"""Errors of plain interpolation and of the trained model, per split, simulation, field and frame.

For a set of frames and nodes :math:`\\Omega` (one simulation, or a whole split) and one
field, with prediction :math:`\\hat u` and destination truth :math:`u`,

.. math::

    \\mathrm{rel}_{L^2} = \\frac{\\|\\hat u - u\\|_{2,\\Omega}}{\\|u\\|_{2,\\Omega}},
    \\qquad \\mathrm{RMSE} = \\sqrt{\\tfrac{1}{|\\Omega|} \\textstyle\\sum_\\Omega (\\hat u - u)^2}.

The split summary pools all of a split's frames and nodes before dividing; its
"improvement" is the field-averaged interpolation error over the field-averaged model error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meshsr.atomic import atomic_open, atomic_savez
from meshsr.errors import InputError
from meshsr.evaluate.norms import relative_l2
from meshsr.learn.device import pick_device
from meshsr.learn.features import FeatureBuilder
from meshsr.learn.model import mean_adjacency
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.learn.settings import RunSettings
from meshsr.learn.splits import SPLITS, Splits
from meshsr.learn.trained_model import TrainedModel, retrain_command

log_default = logging.getLogger("meshsr")
METRIC_COLUMNS = [
    "split", "simulation", "field", "rel_l2_interp", "rel_l2_model", "rmse_interp", "rmse_model", "improvement"
]
SUMMARY_COLUMNS = ["split", "field", "rel_l2_interp", "rel_l2_model", "improvement"]


@dataclass
class Evaluation:
    metrics: pd.DataFrame  # one row per split, simulation, field
    frames: pd.DataFrame  # one row per split, simulation, frame, field
    summary: pd.DataFrame  # one row per split and field, plus the field mean
    panel: dict[str, np.ndarray]  # every frame (T, N, F) of one held-out simulation; the plot picks one


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


def _sums(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and field: sum of squared errors and of squared truth, (T, F) float64."""
    diff = prediction.astype(np.float64) - truth
    return np.einsum("tnf,tnf->tf", diff, diff), np.einsum("tnf,tnf->tf", truth, truth)


@dataclass
class _Simulation:
    """One simulation's arrays (T, N, F) and its sums per frame and field (:func:`_sums`)."""

    sim: int
    split: str
    interp: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray  # float64

    def __post_init__(self) -> None:
        self.err_interp, self.norm2 = _sums(self.interp, self.truth)
        self.err_model, _ = _sums(self.prediction, self.truth)

    def metric_rows(self, field_names: list[str]) -> list[dict]:
        t_len, n = self.truth.shape[:2]
        rows = []
        for j, name in enumerate(field_names):
            ri = relative_l2(self.interp[..., j], self.truth[..., j])
            rm = relative_l2(self.prediction[..., j], self.truth[..., j])
            rows.append(
                {
                    "split": self.split,
                    "simulation": self.sim,
                    "field": name,
                    "rel_l2_interp": float(ri),
                    "rel_l2_model": float(rm),
                    "rmse_interp": float(np.sqrt(self.err_interp[:, j].sum() / (t_len * n))),
                    "rmse_model": float(np.sqrt(self.err_model[:, j].sum() / (t_len * n))),
                    "improvement": float(ri / rm) if rm > 0 else float("inf"),
                }
            )
        return rows

    def frame_rows(self, field_names: list[str]) -> list[dict]:
        tiny = np.finfo(float).tiny
        return [
            {
                "split": self.split,
                "simulation": self.sim,
                "frame": t,
                "field": name,
                "rel_l2_interp": float(np.sqrt(self.err_interp[t, j] / max(self.norm2[t, j], tiny))),
                "rel_l2_model": float(np.sqrt(self.err_model[t, j] / max(self.norm2[t, j], tiny))),
            }
            for j, name in enumerate(field_names)
            for t in range(len(self.truth))
        ]

    def pooled(self) -> np.ndarray:
        """(3, F): squared errors of interpolation and model and squared truth, summed over frames."""
        return np.stack([self.err_interp.sum(0), self.err_model.sum(0), self.norm2.sum(0)])

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
    names = data.field_names
    rows, frame_rows, pooled, panel = [], [], {}, {}
    for sim in range(data.shape[0]):
        interp = data.cache.interpolated[sim]
        features, scales = data.features(builder, sim)
        prediction = trained.predict(features, scales, interp, graph, torch_device)
        one = _Simulation(sim, splits.of(sim), interp, prediction, data.cache.target_fields[sim].astype(np.float64))
        rows += one.metric_rows(names)
        frame_rows += one.frame_rows(names)
        pooled[one.split] = pooled.get(one.split, np.zeros((3, len(names)))) + one.pooled()
        if sim == panel_sim:
            panel = one.panel(names)
    summary = _summary(pooled, names)
    _log_test_split(summary, log)
    return Evaluation(pd.DataFrame(rows, columns=METRIC_COLUMNS), pd.DataFrame(frame_rows), summary, panel)


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
    """Pooled relative L2 per split and field, and their mean over fields."""
    rows = []
    for split in SPLITS:
        if split not in pooled:
            continue
        err_i, err_m, norm2 = pooled[split]
        ri = np.sqrt(err_i / np.maximum(norm2, np.finfo(float).tiny))
        rm = np.sqrt(err_m / np.maximum(norm2, np.finfo(float).tiny))
        for name, a, b in zip([*field_names, "mean over fields"], [*ri, ri.mean()], [*rm, rm.mean()], strict=True):
            gain = a / b if b > 0 else float("inf")
            rows.append({"split": split, "field": name, "rel_l2_interp": a, "rel_l2_model": b, "improvement": gain})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def write_evaluation(evaluation: Evaluation, outputs: dict[str, str | Path], title: str) -> None:
    """Write every table and the panel simulation atomically; ``outputs`` as in :func:`evaluate_job`."""
    with atomic_open(outputs["metrics"]) as fh:
        evaluation.metrics.to_csv(fh, index=False)
    with atomic_open(outputs["frames"]) as fh:
        evaluation.frames.to_csv(fh, index=False)
    with atomic_open(outputs["html"]) as fh:
        fh.write(metrics_html_page(evaluation, title))
    atomic_savez(outputs["panel"], **evaluation.panel)


def metrics_html_page(evaluation: Evaluation, title: str) -> str:
    """A small standalone HTML page: split summary, then the per-simulation table."""
    fmt = {c: "{:.4%}".format for c in ("rel_l2_interp", "rel_l2_model")} | {"improvement": "{:.2f}x".format}
    summary = evaluation.summary.to_html(index=False, formatters=fmt, border=0)
    rmse = {c: "{:.4g}".format for c in ("rmse_interp", "rmse_model")}
    per_sim = evaluation.metrics.to_html(index=False, formatters=fmt | rmse, border=0)
    style = (
        "body{font-family:sans-serif} table{border-collapse:collapse;margin-bottom:1.5em} "
        "td,th{padding:2px 10px;text-align:right}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>"
        f"<h2>{title}</h2><h3>Pooled over each split</h3>{summary}<h3>Per simulation</h3>{per_sim}</body></html>\n"
    )


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
    """The evaluate rule: ``outputs`` has the paths ``metrics``, ``html``, ``frames`` and ``panel``.

    ``device`` and ``threads`` are this job's run-time settings; the model file's record of
    where it was trained is never read.
    """
    torch.set_num_threads(threads)
    trained = TrainedModel.load(model_path)
    data = load_pair_data(source, target, src_path, dst_path, cache_path, rebuild, memo)
    evaluation = evaluate_pair(data, trained, model_path, device, log)
    write_evaluation(evaluation, outputs, f"{source} -> {target}: relative L2 errors")
    log.info("wrote %s", ", ".join(outputs.values()))
    return evaluation
