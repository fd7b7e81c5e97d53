"""Metrics tables against an independent computation, the panel, plots, the run-time device, refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from train_helpers import TINY, write_tiny_pair

from meshsr.errors import InputError
from meshsr.evaluate.metrics import (
    METRIC_COLUMNS,
    UNDEFINED,
    UNDEFINED_NOTE,
    evaluate_job,
    evaluate_pair,
    metrics_html_page,
)
from meshsr.evaluate.plots import (
    error_vs_time_figure,
    panel_frame,
    plot_error_vs_time,
    plot_loss_curves,
    plot_panel,
    plt,
)
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.settings import RunSettings
from meshsr.learn.training import train_pair, write_history

PNG = b"\x89PNG\r\n\x1a\n"
OUTPUTS = (("metrics", "m.csv"), ("html", "m.html"), ("frames", "f.csv"), ("panel", "p.npz"))


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """Read-only for the tests: one that needs a changed model makes a copy (dataclasses.replace)."""
    tiny = write_tiny_pair(tmp_path_factory.mktemp("tiny"))
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    trained = train_pair(data, TINY.fit, RunSettings(threads=1), progress=False)
    return tiny, data, trained


def predictions(data, trained) -> np.ndarray:
    """(S, T, N, F): the model applied simulation by simulation, straight through TrainedModel.predict."""
    builder = data.feature_builder(**trained.feature_options)
    return np.stack([trained.predict(*data.features(builder, s), data.cache.interpolated[s]) for s in range(3)])


def errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Relative L2 and RMSE by plain numpy, in float64."""
    diff = estimate.astype(np.float64).ravel() - truth.astype(np.float64).ravel()
    return np.linalg.norm(diff) / np.linalg.norm(truth.astype(np.float64).ravel()), np.sqrt(np.mean(diff**2))


def test_metrics_equal_an_independent_computation(trained_pair):
    _, data, trained = trained_pair
    ev = evaluate_pair(data, trained)
    assert list(ev.metrics.columns) == METRIC_COLUMNS and len(ev.metrics) == 3 * 2
    assert ev.metrics.groupby("simulation")["split"].first().tolist() == ["train", "validation", "test"]
    predicted, truth, interp = predictions(data, trained), data.cache.target_fields, data.cache.interpolated
    for row in ev.metrics.itertuples():
        j = data.field_names.index(row.field)
        rel_i, rmse_i = errors(interp[row.simulation, ..., j], truth[row.simulation, ..., j])
        rel_m, rmse_m = errors(predicted[row.simulation, ..., j], truth[row.simulation, ..., j])
        assert (row.rel_l2_interp, row.rmse_interp) == pytest.approx((rel_i, rmse_i), rel=1e-10)
        assert (row.rel_l2_model, row.rmse_model) == pytest.approx((rel_m, rmse_m), rel=1e-10)
        assert row.improvement == pytest.approx(rel_i / rel_m, rel=1e-10)
        assert rel_m < rel_i  # trained on the training simulation: better than interpolation there at least
    for row in ev.frames.itertuples():
        j, s, t = data.field_names.index(row.field), row.simulation, row.frame
        assert row.rel_l2_model == pytest.approx(errors(predicted[s, t, :, j], truth[s, t, :, j])[0], rel=1e-10)
        assert row.rel_l2_interp == pytest.approx(errors(interp[s, t, :, j], truth[s, t, :, j])[0], rel=1e-10)
    assert len(ev.frames) == 3 * 5 * 2


def test_summary_pools_each_split_and_averages_fields(trained_pair):
    _, data, trained = trained_pair
    ev = evaluate_pair(data, trained)
    predicted, truth = predictions(data, trained), data.cache.target_fields
    test = ev.summary[ev.summary.split == "test"].set_index("field")
    per_field = [errors(predicted[2, ..., j], truth[2, ..., j])[0] for j in range(2)]
    assert test.loc[data.field_names, "rel_l2_model"].tolist() == pytest.approx(per_field, rel=1e-10)
    assert test.loc["mean over fields", "rel_l2_model"] == pytest.approx(np.mean(per_field), rel=1e-10)
    assert set(ev.summary.split) == {"train", "validation", "test"}


def test_the_panel_holds_every_frame_of_the_test_simulation(trained_pair):
    _, data, trained = trained_pair
    ev = evaluate_pair(data, trained)
    assert int(ev.panel["simulation"]) == 2
    assert np.array_equal(ev.panel["truth"], data.cache.target_fields[2])
    assert np.array_equal(ev.panel["interp"], data.cache.interpolated[2])
    assert np.array_equal(ev.panel["prediction"], predictions(data, trained)[2])
    picked = panel_frame(ev.panel, -2, "p.npz")
    assert int(picked["frame"]) == 3 and np.array_equal(picked["truth"], data.cache.target_fields[2, 3])
    with pytest.raises(InputError, match=r"'train.panel_frame': frame 5 does not exist \(T = 5\); use a frame from -5"):
        panel_frame(ev.panel, 5, "p.npz")
    with pytest.raises(InputError, match="p.npz: panel file does not hold a simulation's frames"):
        panel_frame(picked, 0, "p.npz")


def test_a_model_of_another_pair_is_refused(trained_pair):
    _, data, trained = trained_pair
    message = "m.pt: model was trained for coarse -> medium, not coarse -> fine; retrain it with: snakemake --cores 1 "
    with pytest.raises(InputError, match=message + "--force m.pt$"):
        evaluate_pair(data, replace(trained, target="medium"), "m.pt")


def test_evaluation_runs_on_its_own_device_whatever_the_model_file_says(trained_pair, tmp_path):
    tiny, data, trained = trained_pair
    model = tmp_path / "m.pt"
    trained.save(model)
    state = torch.load(model, weights_only=True)
    state["settings"]["device"] = "cuda"  # as an older model file, trained on a GPU node, records it
    state["run"]["device"] = "cuda"
    torch.save(state, model)
    outputs = {k: str(tmp_path / name) for k, name in OUTPUTS}
    ev = evaluate_job("coarse", "fine", model, tiny.src, tiny.dst, tiny.cache, outputs, device="cpu", threads=1)
    pd.testing.assert_frame_equal(ev.metrics, evaluate_pair(data, trained).metrics)


def test_evaluate_job_writes_every_table_and_plots_render(trained_pair, tmp_path):
    tiny, data, trained = trained_pair
    model = tmp_path / "m.pt"
    trained.save(model)
    outputs = {k: str(tmp_path / name) for k, name in OUTPUTS}
    ev = evaluate_job("coarse", "fine", model, tiny.src, tiny.dst, None, outputs, device="cpu", threads=1)
    pd.testing.assert_frame_equal(pd.read_csv(outputs["metrics"]), ev.metrics)
    assert "<table" in (tmp_path / "m.html").read_text()
    with np.load(outputs["panel"], allow_pickle=False) as panel:
        panel = {k: panel[k] for k in panel.files}
    assert panel["truth"].shape == (5, data.target_mesh.n_nodes, 2)
    frames = pd.read_csv(outputs["frames"])

    write_history(trained.history, tmp_path / "history.csv")
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["kept"].sum() == 1 and history.loc[history["kept"], "epoch"].item() == trained.history["best_epoch"]
    plot_loss_curves(history, tmp_path / "loss.png", "loss")
    one_frame = panel_frame(panel, -1, "p")
    plot_panel(data.target_mesh.points, data.target_mesh.cells, one_frame, tmp_path / "panel.png", "p")
    plot_error_vs_time(frames, tmp_path / "time.png", "time")
    for name in ("loss.png", "panel.png", "time.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".tmp-*"))


# --- zero truth, frame splits, times ---------------------------------------------------------------


def with_zero_truth(data, frames=slice(0, 1), field=slice(None)):
    """A copy of ``data`` whose destination truth is all zero in ``frames`` of ``field`` (e.g. a run from rest)."""
    truth = np.array(data.cache.target_fields, copy=True)
    truth[:, frames, :, field] = 0.0
    return replace(data, cache=replace(data.cache, target_fields=truth))


def test_a_zero_first_frame_reports_absolute_errors_and_no_relative_one(trained_pair):
    _, data, trained = trained_pair
    zeroed = with_zero_truth(data)
    ev = evaluate_pair(zeroed, trained)
    predicted, truth, interp = predictions(zeroed, trained), zeroed.cache.target_fields, zeroed.cache.interpolated
    first = ev.frames[ev.frames.frame == 0]
    assert first.zero_truth.all() and first.rel_l2_model.isna().all() and first.rel_l2_interp.isna().all()
    for row in first.itertuples():
        j, s = data.field_names.index(row.field), row.simulation
        assert row.l2_model == pytest.approx(np.linalg.norm(predicted[s, 0, :, j].astype(np.float64)), rel=1e-10)
        assert row.l2_interp == pytest.approx(np.linalg.norm(interp[s, 0, :, j].astype(np.float64)), rel=1e-10)
    later = ev.frames[ev.frames.frame > 0]
    assert not later.zero_truth.any() and np.isfinite(later.rel_l2_model).all() and later.rel_l2_model.max() < 10
    # per simulation: pooled over all frames, the zero frame's error counted, no division by ~0
    for row in ev.metrics.itertuples():
        j = data.field_names.index(row.field)
        expected = errors(predicted[row.simulation, ..., j], truth[row.simulation, ..., j])[0]
        assert row.rel_l2_model == pytest.approx(expected, rel=1e-10)


def test_a_field_zero_throughout_is_undefined_and_explained(trained_pair):
    _, data, trained = trained_pair
    ev = evaluate_pair(with_zero_truth(data, frames=slice(None), field=slice(0, 1)), trained)
    name, other = data.field_names
    summary = ev.summary.set_index(["split", "field"])
    assert summary.loc[("test", name), ["rel_l2_model", "improvement"]].isna().all()
    mean = summary.loc[("test", "mean over fields"), "rel_l2_model"]
    assert mean == pytest.approx(summary.loc[("test", other), "rel_l2_model"])  # the defined fields' mean
    assert ev.metrics[ev.metrics.field == name].rel_l2_interp.isna().all()
    page = metrics_html_page(ev, "t")
    assert UNDEFINED_NOTE in page and f"<td>{UNDEFINED}</td>" in page
    assert "nan" not in page.lower(), page[page.lower().index("nan") - 80 :][:120]


def test_one_simulation_is_evaluated_per_frame_split_with_times(tmp_path):
    tiny = write_tiny_pair(tmp_path, simulations=1, frames=10)
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    trained = train_pair(data, replace(TINY.fit, epochs=1, steps_per_epoch=5), RunSettings(threads=1), progress=False)
    assert trained.splits["test_frames"] == [8, 9] and trained.splits["validation_frames"] == [6, 7]
    ev = evaluate_pair(data, trained)
    assert ev.splits == "by frames: simulation(s) [0]: train frames 0-5, validation frames 6-7, test frames 8-9"
    parts = ev.metrics.drop_duplicates("split")[["split", "simulation", "frames"]].values.tolist()
    assert parts == [["train", 0, "0-5"], ["validation", 0, "6-7"], ["test", 0, "8-9"]]
    assert ev.frames.groupby("split").frame.max().to_dict() == {"train": 5, "validation": 7, "test": 9}
    assert ev.frames.time.tolist()[:10] == pytest.approx(data.target_mesh.times.tolist())
    assert int(ev.panel["simulation"]) == 0 and "by frames" in metrics_html_page(ev, "t")
    plot_error_vs_time(ev.frames, tmp_path / "time.png", "t")
    assert (tmp_path / "time.png").read_bytes()[:8] == PNG


def test_error_vs_time_uses_times_distinct_colours_and_stays_readable(trained_pair):
    _, data, trained = trained_pair
    frames = evaluate_pair(with_zero_truth(data), trained).frames
    fig = error_vs_time_figure(frames, "t")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time" and "1 frame(s) with zero truth not shown" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    interp, model = lines["sim 2: interpolation"], lines["sim 2: model"]
    assert interp.get_color() != model.get_color()
    assert list(interp.get_xdata()) == pytest.approx(data.target_mesh.times.tolist())
    assert ax.get_ylim()[1] < 100 * 10  # no 1e152 % axis from a zero-norm frame
    without_times = error_vs_time_figure(frames.drop(columns="time"), "t")
    assert without_times.axes[0].get_xlabel() == "frame"
    plt.close("all")
