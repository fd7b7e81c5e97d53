"""PNG figures of one trained pair: loss curves, a prediction panel, error against time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.tri as mtri  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from meshsr.atomic import atomic_path  # noqa: E402
from meshsr.errors import InputError  # noqa: E402
from meshsr.interp.operator import InterpolationOperator  # noqa: E402
from meshsr.mesh.bundle import load_bundle  # noqa: E402
from meshsr.provenance.rerun import snakemake_command  # noqa: E402

DPI = 100
SLICE_POINTS = 160  # grid points along the longer side of a 3D mesh's slice


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
    plt.close(fig)


def plot_loss_curves(history: pd.DataFrame, path: str | Path, title: str) -> None:
    """Training and validation loss per epoch (log scale), the kept epoch marked.

    ``history`` has the columns of :func:`meshsr.learn.training.write_history`.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["epoch"], history["train_loss"], "o-", label="training (mean over the epoch's steps)")
    ax.plot(history["epoch"], history["validation_loss"], "s-", label="validation (end of epoch)")
    kept = history.loc[history["kept"].astype(bool), "epoch"]
    if len(kept):
        ax.axvline(int(kept.iloc[0]), color="grey", ls=":", label=f"kept: epoch {int(kept.iloc[0])}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of standardised residual")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


class MeshView:
    """What a panel draws of node values on a mesh: the mesh itself (2D) or its mid-height slice (3D).

    In 3D the slice is the plane :math:`z = (z_{min} + z_{max}) / 2`, sampled on a grid of
    :data:`SLICE_POINTS` along its longer side: each grid point takes the P1 value of the
    tetrahedron that contains it (:class:`~meshsr.interp.operator.InterpolationOperator`,
    exact on the plane), and grid triangles with a corner outside every cell are left blank.
    """

    def __init__(self, points: np.ndarray, cells: np.ndarray) -> None:
        self.note = ""
        if points.shape[1] == 2:
            self.triangulation = mtri.Triangulation(points[:, 0], points[:, 1], cells)
            self.operator = None
            return
        lo, hi = points.min(axis=0), points.max(axis=0)
        z = 0.5 * (lo[2] + hi[2])
        step = float(max(hi[0] - lo[0], hi[1] - lo[1])) / (SLICE_POINTS - 1)
        xs = np.linspace(lo[0], hi[0], max(int(round((hi[0] - lo[0]) / step)), 1) + 1)
        ys = np.linspace(lo[1], hi[1], max(int(round((hi[1] - lo[1]) / step)), 1) + 1)
        gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
        self.operator = InterpolationOperator.build(points, cells, np.column_stack([gx, gy, np.full_like(gx, z)]))
        self.triangulation = mtri.Triangulation(gx, gy)
        self.triangulation.set_mask(self.operator.extrapolated[self.triangulation.triangles].any(axis=1))
        self.note = f"slice z = {z:.3g}"

    def draw(self, ax: plt.Axes, values: np.ndarray, **kwargs):
        """Colour ``values`` (one per mesh node) on ``ax``, P1 between nodes."""
        if self.operator is not None:
            values = self.operator.apply(np.asarray(values, dtype=np.float64)[:, None])[:, 0]
        return ax.tripcolor(self.triangulation, values, shading="gouraud", **kwargs)


def plot_panel(
    points: np.ndarray, cells: np.ndarray, panel: dict[str, np.ndarray], path: str | Path, title: str
) -> None:
    """One column per field: interpolated input, prediction, ground truth, and the errors of both.

    Both error maps share one symmetric colour scale, so the model's smaller error shows.
    A 3D mesh is shown by its slice at mid-height (:class:`MeshView`), noted in the title;
    colour scales are those of all nodes, not only of the slice.
    """
    view = MeshView(points, cells)
    names = [str(x) for x in panel["field_names"]]
    interp, pred, truth = panel["interp"], panel["prediction"], panel["truth"]
    extent = np.ptp(points[:, :2], axis=0)
    aspect = float(extent[1] / extent[0]) if extent[0] > 0 else 1.0
    width = 7.0
    figsize = (width * len(names), 5 * (width * aspect * 0.8 + 0.45))
    fig, axes = plt.subplots(5, len(names), figsize=figsize, squeeze=False, layout="constrained")
    for j, name in enumerate(names):
        lo = float(min(interp[:, j].min(), pred[:, j].min(), truth[:, j].min()))
        hi = float(max(interp[:, j].max(), pred[:, j].max(), truth[:, j].max()))
        err_i, err_m = interp[:, j] - truth[:, j], pred[:, j] - truth[:, j]
        bound = float(max(np.abs(err_i).max(), np.abs(err_m).max(), np.finfo(np.float32).tiny))
        rows = [
            ("interpolated input", interp[:, j], dict(vmin=lo, vmax=hi, cmap="viridis")),
            ("prediction", pred[:, j], dict(vmin=lo, vmax=hi, cmap="viridis")),
            ("ground truth", truth[:, j], dict(vmin=lo, vmax=hi, cmap="viridis")),
            ("interpolation error", err_i, dict(vmin=-bound, vmax=bound, cmap="RdBu_r")),
            ("model error", err_m, dict(vmin=-bound, vmax=bound, cmap="RdBu_r")),
        ]
        for ax, (label, values, kwargs) in zip(axes[:, j], rows, strict=True):
            image = view.draw(ax, values, **kwargs)
            ax.set_title(f"{name}: {label}", fontsize=10)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(image, ax=ax, shrink=0.9)
    fig.suptitle(f"{title} ({view.note})" if view.note else title)
    _save(fig, path)


METHOD_COLOURS = {"interpolation": "tab:orange", "model": "tab:blue"}
SIM_STYLES = ("-", "--", ":", "-.")
HELD_OUT_SHADES = {"validation": "0.92", "test": "0.82"}


def error_vs_time_figure(frames: pd.DataFrame, title: str, split: str = "test") -> plt.Figure:
    """Relative L2 error per frame of interpolation and model (one colour each), per field.

    The x axis is the frames' ``time`` when frames.csv has it, else the frame index. The
    simulations of ``split`` (validation when there is no test) are drawn whole; frames of
    them in another split (a split by frames) are shaded by split. Frames whose truth is zero
    have no relative error: they are left out, and the title says how many.
    """
    chosen = frames[frames["split"] == split]
    if chosen.empty:
        split = "validation"
        chosen = frames[frames["split"] == split]
    shown = frames[frames["simulation"].isin(set(chosen["simulation"]))]
    use_time = "time" in shown and bool(np.isfinite(shown["time"]).all())
    x = "time" if use_time else "frame"
    field_names = list(dict.fromkeys(shown["field"]))
    n = max(len(field_names), 1)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 3.8), squeeze=False)
    for ax, name in zip(axes[0], field_names, strict=False):
        rows = shown[shown["field"] == name]
        for k, (sim, one) in enumerate(rows.groupby("simulation")):
            style = SIM_STYLES[k % len(SIM_STYLES)]
            for method, column in (("interpolation", "rel_l2_interp"), ("model", "rel_l2_model")):
                label = f"sim {sim}: {method}"
                ax.plot(one[x], 100 * one[column], style, color=METHOD_COLOURS[method], label=label)
        steps = np.diff(np.unique(rows[x]))
        half = float(np.median(steps)) / 2 if len(steps) else 0.5
        for held, shade in HELD_OUT_SHADES.items():
            span = rows.loc[rows["split"] == held, x]
            if 0 < len(span) < len(rows):  # a block of frames of the simulations shown: a split by frames
                ax.axvspan(span.min() - half, span.max() + half, color=shade, zorder=0, label=f"{held} frames")
        zero = int(rows["zero_truth"].sum()) if "zero_truth" in rows else 0
        note = f"; {zero} frame(s) with zero truth not shown" if zero else ""
        ax.set_xlabel(x)
        ax.set_ylabel("relative L2 error [%]")
        ax.set_title(f"{name} ({split} split{note})", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def plot_error_vs_time(frames: pd.DataFrame, path: str | Path, title: str, split: str = "test") -> None:
    """:func:`error_vs_time_figure` as a PNG."""
    _save(error_vs_time_figure(frames, title, split), path)


def panel_frame(panel: dict[str, np.ndarray], frame: int, path: str | Path) -> dict[str, np.ndarray]:
    """Frame ``frame`` (negative: from the end) of the panel simulation's (T, N, F) arrays, for :func:`plot_panel`."""
    if np.ndim(panel["truth"]) != 3:
        raise InputError(path, "panel file does not hold a simulation's frames (T, N, F); rerun its evaluate job")
    n_frames = len(panel["truth"])
    if not -n_frames <= frame < n_frames:
        raise InputError(
            None,
            f"config key 'train.panel_frame': frame {frame} does not exist (T = {n_frames}); "
            f"use a frame from {-n_frames} to {n_frames - 1} (negative: from the end)",
        )
    picked = {k: panel[k][frame] for k in ("interp", "prediction", "truth")}
    return {**panel, **picked, "frame": np.array(frame % n_frames)}


def plot_job(
    pair: str,
    history_csv: str | Path,
    frames_csv: str | Path,
    panel_npz: str | Path,
    dst_path: str | Path,
    outputs: dict[str, str],
    frame: int,
    log,
) -> None:
    """The plots rule: ``outputs`` has the paths ``loss``, ``panel`` and ``error_time``; ``frame`` is the panel's."""
    plot_loss_curves(pd.read_csv(history_csv), outputs["loss"], f"{pair}: training and validation loss")
    with np.load(panel_npz, allow_pickle=False) as data:
        panel = panel_frame({k: data[k] for k in data.files}, frame, panel_npz)
    dst = load_bundle(dst_path)
    if len(dst.points) != len(panel["truth"]):
        problem = f"panel has {len(panel['truth'])} nodes but the target mesh {dst_path} has {len(dst.points)}"
        raise InputError(panel_npz, f"{problem}; rerun its evaluate job ({snakemake_command(panel_npz)})")
    title = f"{pair}: simulation {int(panel['simulation'])}, frame {int(panel['frame'])}"
    plot_panel(dst.points, dst.cells, panel, outputs["panel"], title)
    plot_error_vs_time(pd.read_csv(frames_csv), outputs["error_time"], f"{pair}: error per frame")
    log.info("wrote %s", ", ".join(outputs.values()))
