"""Tiny in-memory pair data for the training, feature and evaluation tests (no Snakemake)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import write_pair_cache
from meshsr.example.solver import ExampleSettings, generate_example
from meshsr.learn.settings import TrainSettings
from meshsr.mesh.bundle import save_bundle

# The tiny `train:` config section of every training test (unit and workflow): small, but the
# held-out simulation of the workflow's tiny example must still show the model's gain.
TINY_TRAIN = {
    "hidden": 32,
    "layers": 2,
    "epochs": 4,
    "steps_per_epoch": 60,
    "batch_size": 1024,
    "threads": 1,
}
TINY = TrainSettings.from_config(TINY_TRAIN)


@dataclass
class TinyPair:
    src: Path
    dst: Path
    cache: Path


def write_tiny_pair(root: Path, simulations: int = 3, frames: int = 5, nodes: tuple[int, int] = (200, 500)) -> TinyPair:
    """Example bundles 'coarse' and 'fine' and their pair cache under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    settings = ExampleSettings(n_simulations=simulations, n_frames=frames)
    paths = []
    for i, (name, n) in enumerate(zip(("coarse", "fine"), nodes, strict=True)):
        path = root / f"{name}.npz"
        save_bundle(path, generate_example(n_nodes=n, mesh_seed=1000 + i, settings=settings))
        paths.append(path)
    cache = root / "cache" / "coarse_fine.npz"
    write_pair_cache(cache, make_pair_cache(paths[0], paths[1], "coarse", "fine"))
    return TinyPair(paths[0], paths[1], cache)
