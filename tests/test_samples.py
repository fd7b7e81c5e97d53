"""Samples on disk (meshsr.learn.samples) hold, bit for bit, what standardising a split in memory gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import write_tiny_pair

from meshsr.learn import samples
from meshsr.learn.features import field_spread
from meshsr.learn.normalisation import Normalisation, RunningMoments, moments
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.samples import Prefetched, write_split


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tiny = write_tiny_pair(tmp_path_factory.mktemp("samples"), simulations=3, frames=6)
    return load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)


def in_memory(data, builder, sims, frames):
    """The split standardised in memory, as training did before samples went to disk."""
    picked = list(frames)
    features, scales, residuals = [], [], []
    for sim in sims:
        x, s = builder.simulation(data.source_mesh.fields[sim], data.cache.interpolated[sim])
        features.append(x[picked])
        scales.append(s[picked])
        residuals.append((data.cache.target_fields[sim] - data.cache.interpolated[sim])[picked])
    norm = Normalisation.fit(features, residuals)
    x = np.concatenate([norm.features(f) for f in features])
    return norm, x, norm.gains(np.concatenate(scales)), norm.targets(np.concatenate(residuals))


def test_running_moments_in_pieces_equal_moments_over_whole_chunks():
    rng = np.random.default_rng(0)
    chunks = [(rng.standard_normal((7, 300, 5)) * rng.uniform(0.1, 100, 5) + 3).astype(np.float32) for _ in range(3)]
    running = RunningMoments()
    for chunk in chunks:
        for i, piece in enumerate(np.array_split(chunk, [1, 4])):
            running.add(piece, new_group=i == 0)
    for ours, theirs in zip(running.result(), moments(chunks), strict=True):
        assert np.array_equal(ours, theirs)


def test_frame_chunks_of_some_frames_equal_those_frames_of_the_whole_simulation(data):
    builder = data.feature_builder()
    whole, scales = builder.simulation(data.source_mesh.fields[1], data.cache.interpolated[1])
    frames = (5, 0, 3)
    got = list(builder.frame_chunks(data.source_mesh.fields[1], data.cache.interpolated[1], frames, chunk=2))
    assert [list(f) for f, _, _ in got] == [[5, 0], [3]]
    assert np.array_equal(np.concatenate([x for _, x, _ in got]), whole[list(frames)])
    assert np.array_equal(np.concatenate([s for _, _, s in got]), scales[list(frames)])


@pytest.mark.parametrize("frames", [tuple(range(6)), (0, 1, 2, 4)], ids=["all-frames", "some-frames"])
def test_samples_on_disk_are_the_in_memory_split_in_any_order(data, frames, monkeypatch):
    monkeypatch.setattr(samples, "PASS_BYTES", 4096)  # many passes, pages released between them
    sims = (0, 1)
    builder = data.feature_builder(field_std=field_spread(data.cache.interpolated, sims, frames))
    norm, x, gains, targets = in_memory(data, builder, sims, frames)
    cache = data.cache
    parts = [(sim, frames) for sim in sims]
    split, fitted = write_split(
        builder, data.source_mesh.fields, cache.interpolated, cache.target_fields, parts, None, torch.device("cpu")
    )
    for name in ("feature_mean", "feature_std", "target_rms"):
        assert np.array_equal(getattr(fitted, name), getattr(norm, name))
    rows = split.samples("mlp")
    assert len(rows) == len(x) * x.shape[1]
    idx = np.random.default_rng(1).integers(0, len(rows), 700)  # unsorted, with repeats
    got = rows.take(idx)
    for ours, theirs in zip(got, (x, gains, targets), strict=True):
        assert np.array_equal(ours.numpy(), theirs.reshape(-1, theirs.shape[-1])[idx])
    frames_got = split.samples("gnn").take(np.array([3, 0]))
    assert np.array_equal(frames_got[0].numpy(), x[[3, 0]])
    chunk = split.frames(slice(1, 3))
    assert np.array_equal(chunk[2].numpy(), targets[1:3])


def test_prefetched_batches_are_the_drawn_batches_in_order(data, monkeypatch):
    monkeypatch.setattr(samples, "PREFETCH_BYTES", 3 * 50 * 300)  # a few batches per gather
    builder = data.feature_builder()
    cache = data.cache
    split, _ = write_split(
        builder, data.source_mesh.fields, cache.interpolated, cache.target_fields, [(0, (0, 1))], None, "cpu"
    )
    rows = split.samples("mlp")
    generator = torch.Generator().manual_seed(0)
    drawn = [torch.randint(0, len(rows), (50,), generator=generator) for _ in range(11)]
    queue = iter(drawn)
    prefetched = Prefetched(rows, lambda: (lambda r: (r, r[::2]))(next(queue)), total=11)
    for batch in drawn:
        got_rows, *got = prefetched.next()
        assert torch.equal(got_rows, batch)
        for ours, theirs in zip(got, rows.take(batch[::2].numpy()), strict=True):
            assert torch.equal(ours, theirs)
