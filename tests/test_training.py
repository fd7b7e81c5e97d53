"""Settings, splits, loading checks, determinism and the use_cache: false path."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from meshsr.mesh.bundle import load_bundle, save_bundle
from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import read_pair_cache, write_pair_cache
from meshsr.cache.freshness import StaleCacheError
from meshsr.errors import InputError
from meshsr.learn.features import FeatureBuilder
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.splits import make_splits
from meshsr.mesh.bundle import peek_shape
from meshsr.learn.settings import TrainSettings, check_pairs
from meshsr.learn.device import pick_device
from meshsr.learn.training import build_tensors, train_job, train_pair
from meshsr.learn.trained_model import TrainedModel
from train_helpers import TINY_TRAIN, write_tiny_pair

RESOLUTIONS = ["coarse", "medium", "fine"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_pair(tmp_path_factory.mktemp("tiny"))


# --- settings and splits --------------------------------------------------------------


def test_settings_defaults_and_parsing():
    default = TrainSettings.from_config(None)
    assert default.pairs == () and default.model == "mlp"  # (): coarsest -> finest
    assert default.test_simulations == (-1,) and default.validation_simulations is None
    parsed = TrainSettings.from_config({"pairs": [["coarse", "medium"]], "model": "gnn", "test_simulations": [0, 1]})
    assert parsed.pairs == (("coarse", "medium"),) and parsed.test_simulations == (0, 1)
    assert json.loads(json.dumps(parsed.to_dict()))["pairs"] == [["coarse", "medium"]]  # plain data
    for settings in (default, parsed):  # what the rule passes to the job parses back to the same
        assert TrainSettings.from_config(settings.to_dict()) == settings


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"modle": "mlp"}, "unknown train setting"),
        ({"model": "cnn"}, "train.model must be one of"),
        ({"device": "tpu"}, "train.device"),
        ({"epochs": 0}, "train.epochs must be >= 1"),
        ({"pairs": []}, "non-empty list"),
        ({"pairs": [["coarse"]]}, "each entry must be"),
        ({"test_simulations": [1.5]}, "list of simulation indices"),
    ],
)
def test_bad_settings_are_refused(section, message):
    with pytest.raises(InputError, match=message):
        TrainSettings.from_config(section)


def test_check_pairs_order_and_names():
    assert check_pairs((), RESOLUTIONS) == [("coarse", "fine")]
    assert check_pairs((), ["a", "b"]) == [("a", "b")]
    assert check_pairs([("coarse", "fine"), ("medium", "fine")], RESOLUTIONS) == [("coarse", "fine"), ("medium", "fine")]
    with pytest.raises(InputError, match="unknown resolution 'huge'"):
        check_pairs([("coarse", "huge")], RESOLUTIONS)
    with pytest.raises(InputError, match=r"\[fine, coarse\] is not in order.*coarse < medium < fine"):
        check_pairs([("fine", "coarse")], RESOLUTIONS)
    with pytest.raises(InputError, match="not in order"):
        check_pairs([("fine", "fine")], RESOLUTIONS)
    with pytest.raises(InputError, match="listed twice"):
        check_pairs([("coarse", "fine"), ("coarse", "fine")], RESOLUTIONS)


def test_splits_by_whole_simulations():
    splits = make_splits(6, 48, (-1,))
    assert (splits.train, splits.validation, splits.test, splits.validation_frames) == ((0, 1, 2, 3), (4,), (5,), ())
    assert make_splits(6, 48, (-1,), (-2,)) == splits
    assert splits.of(5) == "test" and splits.of(0) == "train"
    assert make_splits(5, 4, (0, 4), (2,)).train == (1, 3)
    with pytest.raises(InputError, match="empty training split"):
        make_splits(2, 10, (-1,), (-2,))
    with pytest.raises(InputError, match="empty training split"):
        make_splits(1, 10, (-1,))
    with pytest.raises(InputError, match="simulation 7 does not exist"):
        make_splits(6, 10, (7,))
    with pytest.raises(InputError, match="in both"):
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
    with pytest.raises(InputError, match="built for coarse -> fine, but this job trains coarse -> medium"):
        load_pair_data("coarse", "medium", tiny.src, tiny.dst, tiny.cache)
    # bundles with another S: the cache no longer matches them
    other_src, other_dst = tmp_path / "coarse.npz", tmp_path / "fine.npz"
    for path, out in ((tiny.src, other_src), (tiny.dst, other_dst)):
        bundle = load_bundle(path)
        bundle.fields = bundle.fields[:2]
        save_bundle(out, bundle)
    with pytest.raises(InputError, match="S,T,F = 3,5,2.*another configuration"):
        load_pair_data("coarse", "fine", other_src, other_dst, tiny.cache)


def test_stale_cache_is_refused_with_the_rebuild_command(tiny, tmp_path):
    src = tmp_path / "coarse.npz"
    bundle = load_bundle(tiny.src)
    bundle.fields = bundle.fields * 2
    save_bundle(src, bundle)
    with pytest.raises(StaleCacheError, match="rebuild it with: snakemake --cores 1 results/cache/x.npz"):
        load_pair_data("coarse", "fine", src, tiny.dst, tiny.cache, rebuild="snakemake --cores 1 results/cache/x.npz")


def test_normalisation_uses_the_training_split_only(tiny, tmp_path):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    splits = make_splits(3, 5, (-1,))
    frames = tuple(range(5))
    builder = FeatureBuilder.for_training(data, splits.train)
    _, norm = build_tensors(builder, data, splits.train, frames, None, torch.device("cpu"))
    # change everything outside the training simulation: the statistics must not move
    data.cache.interpolated[1:] *= 5.0
    data.cache.target_fields[1:] *= 5.0
    data.source_mesh.fields[1:] *= 5.0
    builder2 = FeatureBuilder.for_training(data, splits.train)
    _, norm2 = build_tensors(builder2, data, splits.train, frames, None, torch.device("cpu"))
    assert builder2.options == builder.options
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
    settings = TrainSettings.from_config({**TINY_TRAIN, "model": kind, "epochs": 2, "steps_per_epoch": 5})
    a = train_pair(data, settings, progress=False)
    b = train_pair(data, settings, progress=False)
    assert a.history["validation_loss"] == b.history["validation_loss"]
    for key, value in state_of(a).items():
        assert torch.equal(value, state_of(b)[key]), key
    c = train_pair(data, TrainSettings.from_config({**TINY_TRAIN, "model": kind, "epochs": 2, "steps_per_epoch": 5, "seed": 1}), progress=False)
    assert any(not torch.equal(v, state_of(c)[k]) for k, v in state_of(a).items())


def test_training_keeps_the_best_validation_epoch_and_logs_epochs(tiny, caplog):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    log = logging.getLogger("meshsr.test")
    with caplog.at_level(logging.INFO, logger="meshsr.test"):
        trained = train_pair(data, TrainSettings.from_config(TINY_TRAIN), log, progress=False)
    history = trained.history
    assert history["epoch"] == [1, 2, 3]
    best = history["best_epoch"]
    assert history["validation_loss"][best - 1] == min(history["validation_loss"])
    assert sum(r.message.startswith("epoch ") and "validation loss" in r.message for r in caplog.records) == 3
    assert trained.splits == {"train": [0], "validation": [1], "test": [2], "validation_frames": []}


def test_two_simulations_train_with_validation_frames(tmp_path):
    tiny = write_tiny_pair(tmp_path, simulations=2, frames=5)
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    trained = train_pair(data, TrainSettings.from_config({**TINY_TRAIN, "epochs": 2}), progress=False)
    assert trained.splits == {"train": [0], "validation": [], "test": [1], "validation_frames": [4]}
    assert len(trained.history["validation_loss"]) == 2 and min(trained.history["validation_loss"]) > 0


def test_train_job_refuses_bad_pairs_and_empty_training_before_any_work(tiny, tmp_path):
    out = tmp_path / "model.pt"
    common = dict(src_path=tiny.src, dst_path=tiny.dst, cache_path=tiny.cache, out_path=out, resolutions=["coarse", "fine"])
    with pytest.raises(InputError, match="not in order"):
        train_job("fine", "coarse", settings=TINY_TRAIN, **common)
    with pytest.raises(InputError, match="empty training split"):
        train_job("coarse", "fine", settings={**TINY_TRAIN, "test_simulations": [0], "validation_simulations": [1, 2]}, **common)
    assert not out.exists()


def test_train_job_writes_a_loadable_model(tiny, tmp_path):
    out = tmp_path / "models" / "coarse_fine.pt"
    train_job("coarse", "fine", tiny.src, tiny.dst, None, out, TINY_TRAIN, ["coarse", "fine"], progress=False)
    state = torch.load(out, weights_only=True)
    assert state["source"] == "coarse" and state["settings"]["hidden"] == TINY_TRAIN["hidden"]
    assert len(state["feature_names"]) == state["model"]["n_inputs"]
    assert [p.name for p in out.parent.iterdir()] == ["coarse_fine.pt"]
    # the same arrays from the cache give the same model
    again = tmp_path / "again.pt"
    train_job("coarse", "fine", tiny.src, tiny.dst, tiny.cache, again, TINY_TRAIN, ["coarse", "fine"], progress=False)
    state2 = torch.load(again, weights_only=True)
    assert all(torch.equal(v, state2["state_dict"][k]) for k, v in state["state_dict"].items())


def test_cache_written_by_make_pair_cache_roundtrips(tiny, tmp_path):
    # guards the bit-identity claim above from the writer's side too
    path = tmp_path / "c.npz"
    write_pair_cache(path, make_pair_cache(tiny.src, tiny.dst, "coarse", "fine"))
    assert np.array_equal(read_pair_cache(path).interpolated, read_pair_cache(tiny.cache).interpolated)
