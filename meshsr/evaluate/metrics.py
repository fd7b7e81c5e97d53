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
from meshsr.evaluate.norms import relative_l2
from meshsr.errors import InputError
from meshsr.learn.features import FeatureBuilder
from meshsr.learn.model import mean_adjacency
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.learn.splits import SPLITS, Splits
from meshsr.learn.trained_model import TrainedModel
from meshsr.learn.device import pick_device

log_default = logging.getLogger("meshsr")
METRIC_COLUMNS = ["split", "simulation", "field", "rel_l2_interp", "rel_l2_model", "rmse_interp", "rmse_model", "improvement"]


@dataclass
class Evaluation:
    metrics: pd.DataFrame  # one row per split, simulation, field
    frames: pd.DataFrame  # one row per split, simulation, frame, field
    summary: pd.DataFrame  # one row per split and field, plus the field mean
    panel: dict[str, np.ndarray]  # one frame of one held-out simulation


def check_model_matches(trained: TrainedModel, data: PairData, builder: FeatureBuilder, path: str | Path) -> None:
    """A model trained on another pair, field set or feature set cannot be applied to this pair."""
    if (trained.source, trained.target) != (data.source, data.target):
        raise InputError(path, f"model was trained for {trained.source} -> {trained.target}, not {data.source} -> {data.target}")
    if trained.feature_names != builder.names:
        raise InputError(path, "model was trained on other input features than this pair provides; retrain it")
    if trained.field_names != data.field_names:
        raise InputError(path, f"model predicts fields {trained.field_names}, the pair has {data.field_names}")


def _sums(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and field: sum of squared errors and of squared truth, (T, F) float64."""
    diff = prediction.astype(np.float64) - truth
    return np.einsum("tnf,tnf->tf", diff, diff), np.einsum("tnf,tnf->tf", truth, truth)


def evaluate_pair(
    data: PairData,
    trained: TrainedModel,
    model_path: str | Path = "model",
    device: str = "cpu",
    panel_frame: int = -1,
    log: logging.Logger = log_default,
) -> Evaluation:
    """Predict every simulation, tabulate both methods' errors and keep one test frame for the panel."""
    s_count, t_len, n, f = data.shape
    splits = Splits(**{k: tuple(trained.splits.get(k, ())) for k in (*SPLITS, "validation_frames")})
    if sorted(splits.train + splits.validation + splits.test) != list(range(s_count)):
        raise InputError(model_path, f"model's splits {trained.splits} do not cover the {s_count} simulations of this pair")
    torch_device = pick_device(device)
    trained.network.to(torch_device)
    builder = FeatureBuilder(data, **trained.feature_options)
    check_model_matches(trained, data, builder, model_path)
    graph = mean_adjacency(data.target_mesh.cells, n, torch_device) if trained.config.kind == "gnn" else None
    panel_sim = (splits.test or splits.validation)[0]
    frame = range(t_len)[panel_frame]

    rows, frame_rows, pooled = [], [], {}
    panel: dict[str, np.ndarray] = {}
    for sim in range(s_count):
        split = splits.of(sim)
        truth = data.cache.target_fields[sim].astype(np.float64)
        interp = data.cache.interpolated[sim]
        features, scales = builder.simulation(sim)
        prediction = trained.predict(features, scales, interp, graph, torch_device)
        err_i, norm2 = _sums(interp, truth)
        err_m, _ = _sums(prediction, truth)
        acc = pooled.setdefault(split, np.zeros((3, f)))
        acc += np.stack([err_i.sum(0), err_m.sum(0), norm2.sum(0)])
        for j, name in enumerate(data.field_names):
            ri = relative_l2(interp[..., j], truth[..., j])
            rm = relative_l2(prediction[..., j], truth[..., j])
            rows.append(
                {
                    "split": split,
                    "simulation": sim,
                    "field": name,
                    "rel_l2_interp": float(ri),
                    "rel_l2_model": float(rm),
                    "rmse_interp": float(np.sqrt(err_i[:, j].sum() / (t_len * n))),
                    "rmse_model": float(np.sqrt(err_m[:, j].sum() / (t_len * n))),
                    "improvement": float(ri / rm) if rm > 0 else float("inf"),
                }
            )
            tiny = np.finfo(float).tiny
            for t in range(t_len):
                frame_rows.append(
                    {
                        "split": split,
                        "simulation": sim,
                        "frame": t,
                        "field": name,
                        "rel_l2_interp": float(np.sqrt(err_i[t, j] / max(norm2[t, j], tiny))),
                        "rel_l2_model": float(np.sqrt(err_m[t, j] / max(norm2[t, j], tiny))),
                    }
                )
        if sim == panel_sim:
            panel = {
                "interp": interp[frame],
                "prediction": prediction[frame],
                "truth": data.cache.target_fields[sim][frame],
                "simulation": np.array(sim),
                "frame": np.array(frame),
                "field_names": np.array(data.field_names, dtype=str),
            }
    summary = _summary(pooled, data.field_names)
    for row in summary.itertuples():
        if row.split == "test":
            log.info(
                "test split, %s: relative L2 interpolation %.3f %%, model %.3f %% (%.2fx lower)",
                row.field, 100 * row.rel_l2_interp, 100 * row.rel_l2_model, row.improvement,
            )
    if "test" not in pooled:
        log.info("no test simulations: nothing held out to report")
    return Evaluation(pd.DataFrame(rows, columns=METRIC_COLUMNS), pd.DataFrame(frame_rows), summary, panel)


def _summary(pooled: dict[str, np.ndarray], field_names: list[str]) -> pd.DataFrame:
    """Pooled relative L2 per split and field, and their mean over fields."""
    rows = []
    for split in SPLITS:
        if split not in pooled:
            continue
        err_i, err_m, norm2 = pooled[split]
        ri = np.sqrt(err_i / np.maximum(norm2, np.finfo(float).tiny))
        rm = np.sqrt(err_m / np.maximum(norm2, np.finfo(float).tiny))
        for name, a, b in zip([*field_names, "mean over fields"], [*ri, ri.mean()], [*rm, rm.mean()]):
            rows.append({"split": split, "field": name, "rel_l2_interp": a, "rel_l2_model": b, "improvement": a / b if b > 0 else float("inf")})
    return pd.DataFrame(rows, columns=["split", "field", "rel_l2_interp", "rel_l2_model", "improvement"])


def write_evaluation(evaluation: Evaluation, metrics_csv: str | Path, metrics_html: str | Path, frames_csv: str | Path, panel_npz: str | Path, title: str) -> None:
    """Write every table and the panel frame atomically."""
    with atomic_open(metrics_csv) as fh:
        evaluation.metrics.to_csv(fh, index=False)
    with atomic_open(frames_csv) as fh:
        evaluation.frames.to_csv(fh, index=False)
    with atomic_open(metrics_html) as fh:
        fh.write(metrics_html_page(evaluation, title))
    atomic_savez(panel_npz, **evaluation.panel)


def metrics_html_page(evaluation: Evaluation, title: str) -> str:
    """A small standalone HTML page: split summary, then the per-simulation table."""
    fmt = {c: "{:.4%}".format for c in ("rel_l2_interp", "rel_l2_model")} | {"improvement": "{:.2f}x".format}
    summary = evaluation.summary.to_html(index=False, formatters=fmt, border=0)
    per_sim = evaluation.metrics.to_html(index=False, formatters=fmt | {c: "{:.4g}".format for c in ("rmse_interp", "rmse_model")}, border=0)
    style = "body{font-family:sans-serif} table{border-collapse:collapse;margin-bottom:1.5em} td,th{padding:2px 10px;text-align:right}"
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
    rebuild: str | None = None,
    memo: str | Path | None = None,
    threads: int = 1,
    log: logging.Logger = log_default,
) -> Evaluation:
    """The evaluate rule: ``outputs`` has the paths ``metrics``, ``html``, ``frames`` and ``panel``."""
    torch.set_num_threads(threads)
    trained = TrainedModel.load(model_path)
    data = load_pair_data(source, target, src_path, dst_path, cache_path, rebuild, memo)
    device = str(trained.settings.get("device", "auto"))
    evaluation = evaluate_pair(data, trained, model_path, device, int(trained.settings.get("panel_frame", -1)), log)
    write_evaluation(evaluation, outputs["metrics"], outputs["html"], outputs["frames"], outputs["panel"], f"{source} -> {target}: relative L2 errors")
    log.info("wrote %s", ", ".join(outputs.values()))
    return evaluation
