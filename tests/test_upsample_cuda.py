"""Upsampling on a CUDA device gives the CPU's numbers (skipped without one; needs neither meshio nor scikit-fem)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import write_pair_cache
from meshsr.example.mesh import make_mesh
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.settings import RunSettings, TrainSettings
from meshsr.learn.training import train_pair
from meshsr.learn.upsample import Upsampler
from meshsr.mesh.bundle import MeshBundle, save_bundle

TINY = {"hidden": 16, "layers": 2, "message_passing": 1, "epochs": 1, "steps_per_epoch": 4, "batch_size": 256}


def waves(points: np.ndarray, n_sims: int = 3, n_frames: int = 4) -> np.ndarray:
    """(S, T, N, 2) smooth travelling waves, another phase per simulation."""
    t = np.linspace(0, 1, n_frames)[None, :, None]
    s = np.arange(n_sims)[:, None, None]
    x, y = points[:, 0][None, None], points[:, 1][None, None]
    return np.stack([np.sin(3 * x - t + s) * np.cos(2 * y), np.cos(x + 2 * y - t * s)], axis=-1)


def upsampled_on(root: Path, kind: str, device: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]:
    """(prediction, baseline) of the last simulation on the CPU and on ``device``, by one model trained on the CPU."""
    paths = []
    for name, n, seed in (("coarse", 300, 1), ("fine", 1200, 2)):
        points, cells = make_mesh(n, seed=seed)
        paths.append(root / f"{name}.npz")
        save_bundle(paths[-1], MeshBundle(points, cells, waves(points), ["a", "b"], np.arange(4.0)))
    write_pair_cache(root / "cache.npz", make_pair_cache(paths[0], paths[1], "coarse", "fine"))
    data = load_pair_data("coarse", "fine", paths[0], paths[1], root / "cache.npz")
    fit = TrainSettings.from_config({**TINY, "model": kind}).fit
    trained = train_pair(data, fit, RunSettings(device="cpu", threads=1), progress=False)
    run = data.source_mesh.fields[-1]
    on_cpu = Upsampler(trained, data.source_mesh, data.target_mesh, data.cache.operator, "cpu")(run)
    on_device = Upsampler(trained, data.source_mesh, data.target_mesh, data.cache.operator, torch.device(device))(run)
    return on_cpu, on_device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["mlp", "gnn"])
def test_upsampling_on_cuda_gives_the_cpu_numbers(tmp_path, kind):
    (cpu_prediction, cpu_baseline), (prediction, baseline) = upsampled_on(tmp_path, kind, "cuda")
    np.testing.assert_array_equal(baseline, cpu_baseline)  # interpolation runs on the CPU either way
    assert not np.array_equal(cpu_prediction, cpu_baseline)
    np.testing.assert_allclose(prediction, cpu_prediction, rtol=1e-4, atol=1e-5 * np.abs(cpu_prediction).max())
