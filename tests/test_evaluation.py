"""Metrics tables, the panel frame, plots, and refusing a model from another pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meshsr.evaluate.norms import relative_l2
from meshsr.errors import InputError
from meshsr.evaluate.metrics import METRIC_COLUMNS, evaluate_job, evaluate_pair
from meshsr.learn.pair_data import load_pair_data
from meshsr.evaluate.plots import plot_error_vs_time, plot_loss_curves, plot_panel
from meshsr.learn.settings import TrainSettings
from meshsr.learn.training import train_pair, write_history
from train_helpers import TINY_TRAIN, write_tiny_pair

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    tiny = write_tiny_pair(tmp_path_factory.mktemp("tiny"))
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    trained = train_pair(data, TrainSettings.from_config(TINY_TRAIN), progress=False)
    return tiny, data, trained


def test_metrics_have_one_row_per_split_simulation_and_field(trained_pair):
    _, data, trained = trained_pair
    ev = evaluate_pair(data, trained)
    assert list(ev.metrics.columns) == METRIC_COLUMNS
    assert len(ev.metrics) == 3 * 2
    assert ev.metrics.groupby("simulation")["split"].first().tolist() == ["train", "validation", "test"]
    row = ev.metrics[(ev.metrics.simulation == 2) & (ev.metrics.field == "heat")].iloc[0]
    expected = relative_l2(data.cache.interpolated[2, ..., 1], data.cache.target_fields[2, ..., 1])
    assert row.rel_l2_interp == pytest.approx(expected, rel=1e-9)
    assert row.improvement == pytest.approx(row.rel_l2_interp / row.rel_l2_model)
    diff = data.cache.interpolated[2, ..., 1].astype(np.float64) - data.cache.target_fields[2, ..., 1]
    assert row.rmse_interp == pytest.approx(np.sqrt(np.mean(diff**2)), rel=1e-9)
    assert ev.metrics.rel_l2_model.gt(0).all()


def test_frames_summary_and_panel(trained_pair):
    _, data, trained = trained_pair
    s, t, n, f = data.shape
    ev = evaluate_pair(data, trained, panel_frame=2)
    assert len(ev.frames) == s * t * f
    assert set(ev.summary.field) == {"tracer", "heat", "mean over fields"}
    test_mean = ev.summary[(ev.summary.split == "test") & (ev.summary.field == "mean over fields")].iloc[0]
    per_field = ev.summary[(ev.summary.split == "test") & (ev.summary.field != "mean over fields")]
    assert test_mean.rel_l2_model == pytest.approx(per_field.rel_l2_model.mean())
    assert int(ev.panel["simulation"]) == 2 and int(ev.panel["frame"]) == 2
    assert np.array_equal(ev.panel["truth"], data.cache.target_fields[2, 2])
    assert np.array_equal(ev.panel["interp"], data.cache.interpolated[2, 2])
    assert ev.panel["prediction"].shape == (n, f)


def test_evaluation_is_repeatable(trained_pair):
    _, data, trained = trained_pair
    a, b = evaluate_pair(data, trained), evaluate_pair(data, trained)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)


def test_a_model_of_another_pair_is_refused(trained_pair):
    _, data, trained = trained_pair
    trained.target = "medium"
    try:
        with pytest.raises(InputError, match="trained for coarse -> medium"):
            evaluate_pair(data, trained, "m.pt")
    finally:
        trained.target = "fine"


def test_evaluate_job_writes_every_table_and_plots_render(trained_pair, tmp_path):
    tiny, data, trained = trained_pair
    model = tmp_path / "m.pt"
    trained.save(model)
    outputs = {k: str(tmp_path / name) for k, name in (("metrics", "m.csv"), ("html", "m.html"), ("frames", "f.csv"), ("panel", "p.npz"))}
    evaluate_job("coarse", "fine", model, tiny.src, tiny.dst, None, outputs)
    metrics = pd.read_csv(outputs["metrics"])
    assert list(metrics.columns) == METRIC_COLUMNS and len(metrics) == 6
    assert "<table" in (tmp_path / "m.html").read_text()
    with np.load(outputs["panel"], allow_pickle=False) as panel:
        panel = {k: panel[k] for k in panel.files}
    frames = pd.read_csv(outputs["frames"])

    write_history(trained.history, tmp_path / "history.csv")
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["kept"].sum() == 1 and history.loc[history["kept"], "epoch"].item() == trained.history["best_epoch"]
    plot_loss_curves(history, tmp_path / "loss.png", "loss")
    plot_panel(data.target_mesh.points, data.target_mesh.cells, panel, tmp_path / "panel.png", "panel")
    plot_error_vs_time(frames, tmp_path / "time.png", "time")
    for name in ("loss.png", "panel.png", "time.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".tmp-*"))
