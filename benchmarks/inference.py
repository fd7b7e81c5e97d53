"""Benchmark: super-resolving frames on the CPU versus loading the same fine frames from disk.

Inference is what the upsample rule does for one run (meshsr.learn.upsample.Upsampler):
plain interpolation, the features and the network for every frame, on the fine mesh of the
pair. The alternative it replaces is storing fine solutions and reading them back: the
same frames (T, N_fine, F, float32) are written to an .npy file and loaded, both cold
(the file's pages dropped from the page cache with posix_fadvise) and warm.

Uses the example when it is there (results/example/{coarse,fine}.npz and
results/models/coarse_fine.pt, after `snakemake --cores 2 all`); otherwise it generates a
smaller pair and trains a model for a few steps (speed does not depend on how well the
model is trained, only on its size). Prints frames per second of each, their ratio, and
beside each figure the cpu/wall time, torch threads and the load average.

    python benchmarks/inference.py                     # the example, or a generated pair
    python benchmarks/inference.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import write_pair_cache
from meshsr.example.solver import ExampleSettings, generate_example
from meshsr.interp.operator import InterpolationOperator
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.settings import RunSettings, TrainSettings
from meshsr.learn.trained_model import TrainedModel
from meshsr.learn.training import train_pair
from meshsr.learn.upsample import Upsampler
from meshsr.mesh.bundle import MeshBundle, load_bundle, save_bundle

EXAMPLE = Path("results/example")
MODEL = Path("results/models/coarse_fine.pt")
Setup = tuple[TrainedModel, MeshBundle, MeshBundle, str]  # model, source and target mesh, what they are


def load_average() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def timed(work: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Best wall time of ``repeats`` runs, the cpu time of that run, and the last result."""
    best_wall, best_cpu, result = np.inf, np.inf, None
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        result = work()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
    return best_wall, best_cpu, result


def example_setup() -> Setup | None:
    paths = [EXAMPLE / "coarse.npz", EXAMPLE / "fine.npz", MODEL]
    if not all(p.is_file() for p in paths):
        return None
    return TrainedModel.load(MODEL), load_bundle(paths[0]), load_bundle(paths[1]), "the example (results/example)"


def generated_setup(root: Path, nodes: tuple[int, int], frames: int) -> Setup:
    """Two independently meshed resolutions of the example problem and a model trained for a few steps."""
    settings = ExampleSettings(n_simulations=3, n_frames=frames)
    paths = []
    for i, (name, n) in enumerate(zip(("coarse", "fine"), nodes, strict=True)):
        paths.append(root / f"{name}.npz")
        save_bundle(paths[-1], generate_example(n_nodes=n, mesh_seed=1000 + i, settings=settings))
    cache = make_pair_cache(paths[0], paths[1], "coarse", "fine")
    write_pair_cache(root / "cache.npz", cache)
    data = load_pair_data("coarse", "fine", paths[0], paths[1], root / "cache.npz")
    fit = replace(TrainSettings().fit, epochs=1, steps_per_epoch=5)  # the default network, barely trained
    trained = train_pair(data, fit, RunSettings(threads=torch.get_num_threads()), progress=False)
    return trained, data.source_mesh, data.target_mesh, "a generated pair"


def cold_load(path: Path) -> np.ndarray:
    """np.load after dropping the file's pages from the page cache (Linux; elsewhere it loads warm)."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return np.load(path, allow_pickle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each timing")
    parser.add_argument("--simulation", type=int, default=-1, help="which simulation's frames (default: the last)")
    parser.add_argument("--nodes", type=int, nargs=2, default=(1500, 8000), metavar=("COARSE", "FINE"),
                        help="node counts of the generated pair when the example is not there")
    parser.add_argument("--frames", type=int, default=24, help="frames per simulation of the generated pair")
    parser.add_argument("--generate", action="store_true", help="use a generated pair even when the example is there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="meshsr-inference-") as tmp:
        tmp = Path(tmp)
        setup = None if args.generate else example_setup()
        trained, src, dst, what = setup or generated_setup(tmp, tuple(args.nodes), args.frames)
        torch.set_num_threads(args.threads)  # training the generated pair sets its own
        fields = src.fields[args.simulation]
        n_frames = len(fields)
        print(f"pair: {what}; {src.n_nodes} -> {dst.n_nodes} nodes, T={n_frames}, F={src.n_fields}, "
              f"model {trained.config.kind}; device cpu, torch threads {torch.get_num_threads()}")

        print(f"before: {load_average()}")
        wall, cpu, operator = timed(lambda: InterpolationOperator.build(src.points, src.cells, dst.points), 1)
        upsampler_wall, upsampler_cpu, upsampler = timed(lambda: Upsampler(trained, src, dst, operator), 1)
        setup_wall, setup_cpu = wall + upsampler_wall, cpu + upsampler_cpu
        print(f"set-up once per run (operator, feature stencils): {setup_wall:.3f} s wall, {setup_cpu:.3f} s cpu; "
              f"{load_average()}")
        wall, cpu, (prediction, _) = timed(lambda: upsampler(fields), args.repeats)
        infer_fps = n_frames / wall
        print(f"inference: {n_frames} frames in {wall:.3f} s wall, {cpu:.3f} s cpu (best of {args.repeats}): "
              f"{infer_fps:.1f} frames/s, {n_frames / (wall + setup_wall):.1f} frames/s with the set-up; "
              f"{load_average()}")

        frames = tmp / "fine_frames.npy"
        truth = dst.fields[args.simulation].astype(np.float32) if dst.n_frames == n_frames else prediction
        np.save(frames, truth)
        size = frames.stat().st_size / 2**20
        wall, cpu, loaded = timed(lambda: cold_load(frames), args.repeats)
        assert loaded.shape == prediction.shape
        cold_fps = n_frames / wall
        print(f"load from disk, cold ({size:.1f} MiB .npy): {wall:.4f} s wall, {cpu:.4f} s cpu: "
              f"{cold_fps:.0f} frames/s; {load_average()}")
        wall, cpu, _ = timed(lambda: np.load(frames, allow_pickle=False), args.repeats)
        warm_fps = n_frames / wall
        print(f"load from disk, warm (page cache): {wall:.4f} s wall, {cpu:.4f} s cpu: {warm_fps:.0f} frames/s; "
              f"{load_average()}")
        print(f"inference / cold load: {infer_fps / cold_fps:.3f} (frames/s ratio; below 1: loading is faster)")
        print(f"inference / warm load: {infer_fps / warm_fps:.4f}")
        print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
