"""Splits, loading checks, training (determinism, checkpoints, the job) and the use_cache: false path."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from train_helpers import TINY, write_tiny_pair

from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import read_pair_cache, write_pair_cache
from meshsr.cache.freshness import StaleCacheError
from meshsr.errors import InputError
from meshsr.learn.device import pick_device
from meshsr.learn.features import field_spread
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.settings import FitSettings, RunSettings
from meshsr.learn.splits import make_splits
from meshsr.learn.trained_model import TrainedModel
from meshsr.learn.training import Checkpoint, _Batches, one_cycle, train_job, train_pair, training_samples
from meshsr.mesh.bundle import load_bundle, peek_shape, save_bundle

FIT = TINY.fit
RUN = RunSettings(threads=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_pair(tmp_path_factory.mktemp("tiny"))


# --- splits --------------------------------------------------------------


def test_splits_by_whole_simulations():
    splits = make_splits(6, 48, (-1,))
    assert (splits.train, splits.validation, splits.test, splits.validation_frames) == ((0, 1, 2, 3), (4,), (5,), ())
    assert make_splits(6, 48, (-1,), (-2,)) == splits
    assert splits.of(5) == "test" and splits.of(0) == "train"
    assert make_splits(5, 4, (0, 4), (2,)).train == (1, 3)
    with pytest.raises(InputError, match="empty training split"):
        make_splits(2, 10, (-1,), (-2,))
    with pytest.raises(InputError, match=r"simulation 7 does not exist \(S = 6\); use indices -6 to 5"):
        make_splits(6, 10, (7,))
    with pytest.raises(InputError, match=r"\[5\] are also in train.test_simulations; put each simulation in one"):
        make_splits(6, 10, (5,), (-1,))


def test_too_few_simulations_validate_on_the_last_frames():
    splits = make_splits(2, 10, (-1,))  # automatic validation: no simulation to spare
    assert (splits.train, splits.validation, splits.test) == ((0,), (), (1,))
    assert splits.validation_frames == (8, 9) and splits.train_frames(10) == tuple(range(8))
    assert make_splits(6, 5, (-1,), []).validation_frames == (4,)  # [] asks for frames explicitly
    with pytest.raises(InputError, match="no frames can be held out"):
        make_splits(2, 1, (-1,))


def test_peek_shape_reads_only_the_header(tiny, tmp_path):
    assert peek_shape(tiny.src) == (3, 5)
    assert peek_shape(tmp_path / "missing.npz") is None
    assert peek_shape(tmp_path / "missing.npz", known=(4, 2)) == (4, 2)
    (tmp_path / "bad.npz").write_bytes(b"junk")
    assert peek_shape(tmp_path / "bad.npz") is None


# --- loading ------------------------------------------------------------------------------


def test_use_cache_false_builds_bit_identical_arrays_and_writes_nothing(tiny):
    before = sorted(p.name for p in tiny.cache.parent.iterdir())
    mtime = tiny.cache.stat().st_mtime_ns
    built = load_pair_data("coarse", "fine", tiny.src, tiny.dst, None)
    cached = read_pair_cache(tiny.cache)
    for name in ("interpolated", "target_fields", "extrapolated"):
        a, b = getattr(built.cache, name), getattr(cached, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    m_built, m_cached = built.cache.operator.matrix, cached.operator.matrix
    assert np.array_equal(m_built.indptr, m_cached.indptr)
    assert np.array_equal(m_built.indices, m_cached.indices)
    assert m_built.data.dtype == m_cached.data.dtype == np.float64 and np.array_equal(m_built.data, m_cached.data)
    assert sorted(p.name for p in tiny.cache.parent.iterdir()) == before
    assert tiny.cache.stat().st_mtime_ns == mtime


def test_cache_from_another_configuration_is_refused(tiny, tmp_path):
    with pytest.raises(InputError, match="built for coarse -> fine, but this job trains coarse -> medium; rebuild it"):
        load_pair_data("coarse", "medium", tiny.src, tiny.dst, tiny.cache)
    # bundles with another S: the cache no longer matches them
    other_src, other_dst = tmp_path / "coarse.npz", tmp_path / "fine.npz"
    for path, out in ((tiny.src, other_src), (tiny.dst, other_dst)):
        bundle = load_bundle(path)
        bundle.fields = bundle.fields[:2]
        save_bundle(out, bundle)
    with pytest.raises(InputError, match="S,T,F = 3,5,2.*another configuration; rebuild it$"):
        load_pair_data("coarse", "fine", other_src, other_dst, tiny.cache)


def test_stale_cache_is_refused_with_the_rebuild_command(tiny, tmp_path):
    src = tmp_path / "coarse.npz"
    bundle = load_bundle(tiny.src)
    bundle.fields = bundle.fields * 2
    save_bundle(src, bundle)
    with pytest.raises(StaleCacheError, match="rebuild it with: snakemake --cores 1 results/cache/x.npz"):
        load_pair_data("coarse", "fine", src, tiny.dst, tiny.cache, rebuild="snakemake --cores 1 results/cache/x.npz")


def test_normalisation_uses_the_training_split_only(tiny):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    splits = make_splits(3, 5, (-1,))
    frames = tuple(range(5))

    def statistics():
        builder = data.feature_builder(field_std=field_spread(data.cache.interpolated, splits.train))
        return builder.options, training_samples(builder, data, splits.train, frames, torch.device("cpu"))[1]

    options, norm = statistics()
    # change everything outside the training simulation: the statistics must not move
    data.cache.interpolated = data.cache.interpolated.copy()  # the cache's arrays map the file read-only
    data.cache.target_fields = data.cache.target_fields.copy()
    data.cache.interpolated[1:] *= 5.0
    data.cache.target_fields[1:] *= 5.0
    data.source_mesh.fields[1:] *= 5.0
    options2, norm2 = statistics()
    assert options2 == options
    for name in ("feature_mean", "feature_std", "target_rms"):
        assert np.array_equal(getattr(norm, name), getattr(norm2, name))


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert pick_device("auto").type == "cpu"
    with pytest.raises(InputError, match="no CUDA device"):
        pick_device("cuda")


# --- training -------------------------------------------------------------------------------


def state_of(trained: TrainedModel) -> dict[str, torch.Tensor]:
    return trained.network.state_dict()


@pytest.mark.parametrize("kind", ["mlp", "gnn"])
def test_training_is_deterministic_for_a_fixed_seed(tiny, kind):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    fit = replace(FIT, model=kind, epochs=2, steps_per_epoch=5)
    a = train_pair(data, fit, RUN, progress=False)
    b = train_pair(data, fit, RUN, progress=False)
    assert a.history["validation_loss"] == b.history["validation_loss"]
    for key, value in state_of(a).items():
        assert torch.equal(value, state_of(b)[key]), key
    c = train_pair(data, replace(fit, seed=1), RUN, progress=False)
    assert any(not torch.equal(v, state_of(c)[k]) for k, v in state_of(a).items())


def test_batches_are_torchs_int64_permutations_held_in_int32():
    batches = _Batches(1000, 300, torch.Generator().manual_seed(3))
    reference = torch.Generator().manual_seed(3)
    first = torch.randperm(1000, generator=reference)
    assert batches.perm.dtype == torch.int32
    assert torch.equal(torch.cat([batches.next() for _ in range(3)]).long(), first[:900])
    assert torch.equal(batches.next().long(), torch.randperm(1000, generator=reference)[:300])  # a fresh one


def test_checkpoint_keeps_the_lowest_loss_and_a_copy_of_its_weights():
    network = torch.nn.Linear(2, 1)
    best = Checkpoint()
    assert best.offer(1, 0.5, network) and not best.offer(2, 0.5, network) and not best.offer(3, 0.7, network)
    kept = best.state["weight"].clone()
    torch.nn.init.ones_(network.weight)  # later training must not change the kept copy
    assert best.epoch == 1 and best.loss == 0.5 and torch.equal(best.state["weight"], kept)


def test_training_keeps_the_best_validation_epoch_and_logs_epochs(tiny, caplog):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    log = logging.getLogger("meshsr.test")
    with caplog.at_level(logging.INFO, logger="meshsr.test"):
        trained = train_pair(data, FIT, RUN, log=log, progress=False)
    history = trained.history
    assert history["epoch"] == [1, 2, 3, 4]
    best = history["best_epoch"]
    assert history["validation_loss"][best - 1] == min(history["validation_loss"])
    assert sum(r.message.startswith("epoch ") and "validation loss" in r.message for r in caplog.records) == 4
    assert trained.splits == {"train": [0], "validation": [1], "test": [2], "validation_frames": []}
    assert trained.run == {"device": "cpu", "threads": 1}


# --- the learning-rate schedule ---------------------------------------------------------------

DEFAULT = FitSettings()


def learning_rates(schedule_for, steps: int, lr: float = DEFAULT.lr) -> list[float]:
    """The learning rate of each of ``steps`` optimiser steps, stepping the schedule after each as _train_epoch
    does (the last step moves it past its end)."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([weight], lr=lr)
    schedule = schedule_for(optimiser, lr, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    return rates


def torch_one_cycle(optimiser, lr, steps):
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.05)


@pytest.mark.parametrize("steps", [DEFAULT.epochs * DEFAULT.steps_per_epoch, 40, 41, 60, 240, 1000, 16 * 250 + 7])
def test_from_40_steps_on_the_schedule_is_torchs_one_cycle_bit_for_bit(steps):
    assert DEFAULT.epochs * DEFAULT.steps_per_epoch == 16 * 250  # the default run these rates keep
    assert learning_rates(one_cycle, steps) == learning_rates(torch_one_cycle, steps)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 10, 19, 20, 21, 39])
def test_short_schedules_warm_up_for_two_steps_then_decay(steps):
    rates = learning_rates(one_cycle, steps)
    lr = DEFAULT.lr
    assert len(rates) == steps and rates[0] == pytest.approx(lr / 25)
    if steps >= 2:
        assert rates[1] == pytest.approx(lr) and max(rates) == pytest.approx(lr)
        assert all(later <= earlier for earlier, later in zip(rates[1:], rates[2:], strict=False))
    if steps >= 3:
        assert rates[-1] < lr / 25  # torch's final rate, lr / 25 / 1e4


def test_a_run_of_two_epochs_of_ten_steps_trains(tiny):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)  # 20 steps: torch's schedule divided by 0
    trained = train_pair(data, replace(FIT, epochs=2, steps_per_epoch=10), RUN, progress=False)
    assert trained.history["epoch"] == [1, 2] and np.isfinite(trained.history["validation_loss"]).all()


def test_a_diverging_run_says_to_lower_the_learning_rate(tiny):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    fit = replace(FIT, epochs=1, steps_per_epoch=3, lr=1e10)
    message = "config key 'train.lr': training diverged, the validation loss was never finite (lr 10000000000.0); "
    with pytest.raises(InputError, match=re.escape(message + "lower train.lr")):
        train_pair(data, fit, RUN, progress=False)


def test_two_simulations_train_with_validation_frames(tmp_path):
    tiny = write_tiny_pair(tmp_path, simulations=2, frames=5)
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    trained = train_pair(data, replace(FIT, epochs=2), RUN, progress=False)
    assert trained.splits == {"train": [0], "validation": [], "test": [1], "validation_frames": [4]}
    assert len(trained.history["validation_loss"]) == 2 and min(trained.history["validation_loss"]) > 0


def test_train_job_refuses_an_empty_training_split_before_reading_the_pair(tiny, tmp_path):
    out = tmp_path / "model.pt"
    fit = {**FIT.to_dict(), "test_simulations": [0], "validation_simulations": [1, 2]}
    missing_cache = tmp_path / "no-such-cache.npz"  # never opened: the split is refused from the bundle's header
    with pytest.raises(InputError, match="empty training split"):
        train_job("coarse", "fine", tiny.src, tiny.dst, missing_cache, out, fit, threads=1)
    assert not out.exists()


def test_train_job_writes_a_loadable_model_with_only_the_fit_settings(tiny, tmp_path):
    out = tmp_path / "models" / "coarse_fine.pt"
    train_job("coarse", "fine", tiny.src, tiny.dst, None, out, FIT.to_dict(), device="cpu", threads=1, progress=False)
    state = torch.load(out, weights_only=True)
    assert state["source"] == "coarse" and state["settings"] == FIT.to_dict()
    assert state["run"] == {"device": "cpu", "threads": 1}  # a record of where it ran, apart from the settings
    assert len(state["feature_names"]) == state["model"]["n_inputs"]
    assert [p.name for p in out.parent.iterdir()] == ["coarse_fine.pt"]
    # the same arrays from the cache give the same model
    again = tmp_path / "again.pt"
    train_job("coarse", "fine", tiny.src, tiny.dst, tiny.cache, again, FIT.to_dict(), device="cpu", threads=1,
              progress=False)
    state2 = torch.load(again, weights_only=True)
    assert all(torch.equal(v, state2["state_dict"][k]) for k, v in state["state_dict"].items())


def test_a_written_cache_reads_back_bit_identical_to_the_arrays_in_memory(tiny, tmp_path):
    # guards the bit-identity claim of use_cache: false from the writer's side: write, read, compare
    built = make_pair_cache(tiny.src, tiny.dst, "coarse", "fine")
    path = tmp_path / "c.npz"
    write_pair_cache(path, built)
    read = read_pair_cache(path)
    for name in ("interpolated", "target_fields", "extrapolated"):
        a, b = getattr(built, name), getattr(read, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert (built.operator.matrix != read.operator.matrix).nnz == 0
    # and the interpolated fields are the operator applied to the source fields, in float64 then rounded
    source = load_bundle(tiny.src).fields.astype(np.float64)
    direct = np.einsum("ij,stjf->stif", built.operator.matrix.toarray(), source).astype(np.float32)
    np.testing.assert_allclose(read.interpolated, direct, rtol=1e-6, atol=1e-7)
