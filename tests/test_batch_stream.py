"""Training batches written once (the training_batches job) and read by training: the same model, bounded memory."""

from __future__ import annotations

import errno
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from train_helpers import TINY, write_tiny_pair

from meshsr.errors import InputError
from meshsr.learn import batch_stream
from meshsr.learn.batch_stream import read_batch_stream
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.settings import SAMPLING_KEYS, FitSettings, RunSettings, sampling_settings
from meshsr.learn.trained_model import TrainedModel
from meshsr.learn.training import batches_job, train_job, train_pair

FIT = TINY.fit
RUN = RunSettings(threads=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def written(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    rows, side = root / "coarse_fine.npy", root / "coarse_fine.npz"
    batches_job("coarse", "fine", tiny.src, tiny.dst, tiny.cache, rows, side, FIT.to_dict())
    return rows, side


def test_training_from_the_batches_gives_the_model_of_training_on_the_fly(tiny, written, tmp_path):
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    direct = train_pair(data, FIT, RUN, progress=False)
    out = tmp_path / "model.pt"
    streamed = train_job("coarse", "fine", None, None, None, out, FIT.to_dict(), threads=1, progress=False,
                         batches=written)
    assert direct.history["train_loss"] == streamed.history["train_loss"]
    assert direct.history["validation_loss"] == streamed.history["validation_loss"]
    for key, value in direct.network.state_dict().items():
        assert torch.equal(value, streamed.network.state_dict()[key]), key
    loaded = TrainedModel.load(out)
    assert loaded.feature_names == direct.feature_names and loaded.feature_options == direct.feature_options
    assert loaded.splits == direct.splits and loaded.field_names == direct.field_names
    for key, value in direct.normalisation.to_state().items():
        assert np.array_equal(value, loaded.normalisation.to_state()[key])


def test_the_batches_hold_every_step_in_draw_order(written):
    stream = read_batch_stream(*written)
    total = FIT.epochs * FIT.steps_per_epoch
    assert stream.n_batches == total and stream.batch == FIT.batch_size
    k, f = len(stream.meta["feature_names"]), len(stream.meta["field_names"])
    assert stream.shape == np.load(written[0], mmap_mode="r").shape == (total, FIT.batch_size * (k + 2 * f))
    reader = stream.batches()
    rows, x, g, t = reader.next()
    assert rows == FIT.batch_size and x.shape == (FIT.batch_size, k) and g.shape == t.shape == (FIT.batch_size, f)
    assert x.is_contiguous() and np.isfinite(x.numpy()).all()
    # DDP: each of two ranks reads every other row of the same batch
    halves = [stream.batches(rank, 2).next() for rank in (0, 1)]
    assert all(h[0] == FIT.batch_size for h in halves)
    assert torch.equal(halves[0][1], x[0::2]) and torch.equal(halves[1][3], t[1::2])
    for _ in range(total - 1):
        reader.next()
    with pytest.raises(InputError, match="asked for more"):
        reader.next()


def test_the_batches_are_read_into_two_reused_buffers(written, monkeypatch):
    monkeypatch.setattr(batch_stream, "GROUP_ROWS", 2 * FIT.batch_size)  # two batches a group
    stream = read_batch_stream(*written)
    reader, whole = stream.batches(), np.load(written[0], mmap_mode="r")
    held = []  # the buffer each batch's features are a view of
    for i in range(7):
        _, x, _, t = reader.next()
        held.append([id(b) for b in reader._buffers if b is not None and np.shares_memory(x.numpy(), b)])
        assert np.array_equal(x.numpy().ravel(), whole[i, : x.numel()]) and np.array_equal(t[-1].numpy(), whole[i, -2:])
    assert all(len(h) == 1 for h in held)
    a, b = held[0][0], held[2][0]
    assert a != b and [h[0] for h in held] == [a, a, b, b, a, a, b]  # groups of two batches, two buffers in turn


def test_only_the_sampling_settings_matter(written, tmp_path):
    """Another learning rate or width trains from the same batches; another seed or batch size is refused."""
    other = replace(FIT, lr=FIT.lr / 2, hidden=16, weight_decay=1e-4)
    assert sampling_settings(other.to_dict()) == sampling_settings(FIT.to_dict())
    train_job("coarse", "fine", None, None, None, tmp_path / "m.pt", other.to_dict(), threads=1, progress=False,
              batches=written)
    assert "lr" not in SAMPLING_KEYS and "seed" in SAMPLING_KEYS
    for change in ({"seed": 1}, {"batch_size": 512}, {"epochs": FIT.epochs + 1}):
        with pytest.raises(InputError, match=f"other train settings \\({next(iter(change))}\\); rebuild them"):
            train_job("coarse", "fine", None, None, None, tmp_path / "refused.pt", {**FIT.to_dict(), **change},
                      threads=1, progress=False, batches=written)
    assert (tmp_path / "m.pt").is_file() and not (tmp_path / "refused.pt").exists()


def test_damaged_or_mismatched_batches_are_refused_with_the_file(written, tmp_path):
    rows, side = written
    short = tmp_path / "short.npy"
    np.save(short, np.load(rows, mmap_mode="r")[:-1])
    with pytest.raises(InputError, match=f"{short}: training batches are float32 .* but .* describes"):
        read_batch_stream(short, side)
    cut = tmp_path / "cut.npy"
    cut.write_bytes(rows.read_bytes()[:-4])
    with pytest.raises(InputError, match=f"{cut}: training batches hold .* bytes of data, their header"):
        read_batch_stream(cut, side)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(InputError, match=f"{garbage}: unreadable training batches side file"):
        read_batch_stream(rows, garbage)
    with np.load(side, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "version": 0}))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    with pytest.raises(InputError, match="training batches of version 0, this meshsr reads 1"):
        read_batch_stream(rows, old)


def test_the_gnn_is_not_written_as_batches(tiny, tmp_path):
    gnn = FitSettings.from_dict({**FIT.to_dict(), "model": "gnn"})
    with pytest.raises(InputError, match="written for the mlp model, not 'gnn'"):
        batches_job("coarse", "fine", tiny.src, tiny.dst, tiny.cache, tmp_path / "b.npy", tmp_path / "b.npz",
                    gnn.to_dict())
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_and_leaves_nothing(written, tmp_path):
    stream = read_batch_stream(*written)

    def filling_up():  # one batch written, then the disk is full
        _, x, g, t = stream.batches().next()
        yield x.numpy(), g.numpy(), t.numpy()
        raise OSError(errno.ENOSPC, "No space left on device")

    rows, side = tmp_path / "b.npy", tmp_path / "b.npz"
    with pytest.raises(InputError, match=f"{rows}: no space left on device writing the training batches \\(about "
                       ".* needed, .* free\\); free space or lower train.epochs"):
        batch_stream.write_batch_stream(rows, side, filling_up(), 3, stream.batch, stream.norm, stream.val,
                                        dict(stream.meta))
    assert list(tmp_path.iterdir()) == []
