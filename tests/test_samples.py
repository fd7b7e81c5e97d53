"""Training samples assembled on the fly (meshsr.learn.samples) are the whole-simulation features at their rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import write_tiny_pair

from meshsr.learn import samples
from meshsr.learn.features import field_spread
from meshsr.learn.normalisation import Normalisation, RunningMoments, moments
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.samples import Prefetched, Rows, TrainingSamples, fit_statistics, frame_samples, layout

SIMS, FRAMES = (0, 2), (0, 1, 2, 4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tiny = write_tiny_pair(tmp_path_factory.mktemp("samples"), simulations=3, frames=6)
    return load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)


@pytest.fixture(scope="module")
def builder(data):
    return data.feature_builder(field_std=field_spread(data.cache.interpolated, SIMS, FRAMES))


@pytest.fixture(scope="module")
def rows(data, builder):
    cache = data.cache
    return Rows(builder, data.source_mesh.fields, cache.interpolated, cache.target_fields, [(s, FRAMES) for s in SIMS])


def whole_split(data, builder, norm=None):
    """Features, scales (or gains) and residuals (or targets) of every row of the split, frame by frame."""
    features, scales, residuals = [], [], []
    for sim in SIMS:
        fields, interpolated = data.source_mesh.fields[sim], data.cache.interpolated[sim]
        for picked, x, s in data.feature_builder(**builder.options).frame_chunks(fields, interpolated, FRAMES,
                                                                                 norm=norm):
            features.append(x)
            scales.append(s)
            residual = data.cache.target_fields[sim][picked] - interpolated[picked]
            residuals.append(residual if norm is None else norm.targets(residual))
    return tuple(np.concatenate(a).reshape(-1, a[0].shape[-1]) for a in (features, scales, residuals))


def arranged(idx, n_nodes, n_frames, segments=None):
    """The rows ``idx`` as assemble lays them out: each segment in its place, by node block and frame."""
    order, positions = layout(*np.divmod(idx, n_nodes), n_frames, segments)
    out = np.empty_like(idx)
    out[positions] = idx[order]
    return out


def test_layout_keeps_segments_in_place_and_sorts_each_by_node_block_and_frame(monkeypatch):
    monkeypatch.setattr(samples, "NODE_BLOCK", 10)
    frames = np.array([3, 1, 3, 0, 2, 1, 0, 2])
    nodes = np.array([5, 15, 1, 7, 3, 2, 30, 12])
    order, positions = layout(frames, nodes, 4, [5, 3])
    assert sorted(positions.tolist()) == list(range(8))
    taken = np.empty_like(order)
    taken[positions] = order
    # segment 1 (rows 0-4): block 0 by frame (rows 0 and 2, both frame 3, stably), then block 1; segment 2 likewise
    assert taken.tolist() == [3, 4, 0, 2, 1, 5, 7, 6]
    whole, _ = layout(frames, nodes, 4)
    assert whole.tolist() == [3, 5, 4, 0, 2, 1, 7, 6]


def test_running_moments_in_pieces_equal_moments_over_whole_chunks():
    rng = np.random.default_rng(0)
    chunks = [(rng.standard_normal((7, 300, 5)) * rng.uniform(0.1, 100, 5) + 3).astype(np.float32) for _ in range(3)]
    running = RunningMoments()
    for chunk in chunks:
        for i, piece in enumerate(np.array_split(chunk, [1, 4])):
            running.add(piece, new_group=i == 0)
    for ours, theirs in zip(running.result(), moments(chunks), strict=True):
        assert np.array_equal(ours, theirs)


def test_rows_in_any_order_are_the_whole_simulations_features_at_those_rows(data, builder, rows):
    raw = whole_split(data, builder)
    assert len(rows) == len(raw[0]) == len(SIMS) * len(FRAMES) * data.shape[2]
    idx = np.random.default_rng(1).integers(0, len(rows), 700)  # unsorted, with repeats
    n = data.shape[2]
    for ours, theirs in zip(rows.assemble(idx, None), raw, strict=True):
        assert np.array_equal(ours, theirs[arranged(idx, n, rows.n_frames)])
    norm = fit_statistics(rows)
    standardised = whole_split(data, builder, norm)
    got = rows.assemble(idx, norm, segments=[300, 400])
    idx = arranged(idx, n, rows.n_frames, [300, 400])
    for ours, theirs in zip(got, standardised, strict=True):
        assert np.array_equal(ours, theirs[idx])
    # the standardisation is Normalisation's, to float32 rounding (the kernel multiplies by 1 / std)
    np.testing.assert_allclose(got[0], norm.features(raw[0][idx]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[1], norm.gains(raw[1][idx]), rtol=1e-6)
    assert np.array_equal(got[2], norm.targets(raw[2][idx]))


def test_statistics_of_all_rows_or_of_a_seeded_sample(data, builder, rows, monkeypatch):
    features, _, residuals = whole_split(data, builder)
    full = Normalisation.fit([features], [residuals])
    monkeypatch.setattr(samples, "STATISTICS_CHUNK", 1000)  # several pieces
    every = fit_statistics(rows, limit=len(rows))
    for name in ("feature_mean", "feature_std", "target_rms"):
        np.testing.assert_allclose(getattr(every, name), getattr(full, name), rtol=1e-9, atol=1e-12)
    sampled = fit_statistics(rows, limit=len(rows) // 4)
    again = fit_statistics(rows, limit=len(rows) // 4)
    other = fit_statistics(rows, limit=len(rows) // 4, seed=1)
    for name in ("feature_mean", "feature_std", "target_rms"):
        assert np.array_equal(getattr(sampled, name), getattr(again, name))  # fixed seed: the same statistics
        assert not np.array_equal(getattr(sampled, name), getattr(other, name))
    # a quarter of these few rows (heavy-tailed: features are divided by the local amplitude) estimates the
    # spread roughly; the example samples 2^18 rows
    np.testing.assert_allclose(sampled.feature_std, full.feature_std, rtol=0.5)
    np.testing.assert_allclose(sampled.target_rms, full.target_rms, rtol=0.2)


def test_samples_of_node_frames_and_of_whole_frames(data, builder, rows):
    norm = fit_statistics(rows)
    split = TrainingSamples(rows, norm, torch.device("cpu"))
    standardised = whole_split(data, builder, norm)
    n = data.shape[2]
    mlp, gnn = split.samples("mlp"), split.samples("gnn")
    assert len(mlp) == len(rows) and len(gnn) == len(SIMS) * len(FRAMES)
    idx = np.array([n + 9, 3, 3, len(rows) - 1, 2 * n])
    for ours, theirs in zip(mlp.take(idx), standardised, strict=True):
        assert torch.equal(ours, torch.from_numpy(theirs[[3, 3, n + 9, 2 * n, len(rows) - 1]]))
    for ours, theirs in zip(gnn.take(np.array([5, 0])), standardised, strict=True):
        frames = theirs.reshape(-1, n, theirs.shape[-1])
        assert torch.equal(ours, torch.from_numpy(frames[[5, 0]]))


def test_validation_frames_in_memory(data, builder, rows):
    norm = fit_statistics(rows)
    cache = data.cache
    val = frame_samples(builder, data.source_mesh.fields, cache.interpolated, cache.target_fields,
                        [(s, FRAMES) for s in SIMS], norm, "cpu")
    assert (val.n_frames, val.n_nodes, val.n_targets) == (8, data.shape[2], 8 * data.shape[2] * data.shape[3])
    standardised = whole_split(data, builder, norm)
    chunk = val.frames(slice(2, 5))
    for ours, theirs in zip(chunk, standardised, strict=True):
        assert torch.equal(ours, torch.from_numpy(theirs.reshape(8, data.shape[2], -1)[2:5]))


def test_prefetched_batches_are_the_drawn_batches_in_order(rows, monkeypatch):
    monkeypatch.setattr(samples, "GROUP_ROWS", 3 * 25)  # a few batches per group
    split = TrainingSamples(rows, fit_statistics(rows), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    drawn = [torch.randint(0, len(split), (50,), generator=generator) for _ in range(11)]
    queue = iter(drawn)
    prefetched = Prefetched(split, lambda: (lambda r: (r, r[::2]))(next(queue)), total=11)
    for batch in drawn:
        got_rows, *got = prefetched.next()
        assert got_rows == len(batch)
        for ours, theirs in zip(got, split.take(batch[::2].numpy()), strict=True):
            assert torch.equal(ours, theirs)


def test_only_the_source_quantities_grow_with_the_frames(data, builder, rows):
    """Rows keep the cache's arrays as they are (memory-mapped) and own only per-frame source quantities."""
    assert rows.interpolated is data.cache.interpolated and rows.target_fields is data.cache.target_fields
    n_frames, (n_src, f) = len(SIMS) * len(FRAMES), data.source_mesh.fields.shape[2:]
    per_frame = n_src * f * (1 + builder.n_derived) * 4 + 2 * 8  # float32 quantities, simulation and frame index
    cache = (rows.interpolated, rows.target_fields)
    owned = [v for v in vars(rows).values() if isinstance(v, np.ndarray) and not any(v is a for a in cache)]
    owned += [rows.quantities.values, rows.quantities.derived]
    assert sum(a.nbytes for a in owned) == n_frames * per_frame
    # a group of batches is written into reused buffers: nothing of its size is allocated per step
    buffers = samples.Buffers(600, builder.n_features, f)
    features, gains, targets = rows.assemble(np.arange(0, len(rows), 7)[:600], fit_statistics(rows), buffers)
    assert features.base is buffers.features and gains.base is buffers.gains and targets.base is buffers.targets
