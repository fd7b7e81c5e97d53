"""Benchmark: reading a pair cache for training against ``np.copy`` of the same bytes.

Writes a pair cache of about 480 MB (5k -> 50k nodes, S=4, T=100, F=3; random fields)
in a temporary directory, reads it once to put it in the page cache, then times, in
alternation, :func:`meshsr.cache.format.read_pair_cache` (headers, ``meta``, operator,
the two field arrays memory-mapped and checked finite: one pass over every byte) and
``np.copy`` of the two field arrays held in memory; ``np.load`` of the ``.npz`` (zip CRC
over every byte, the old reader) for reference. Prints medians, cpu time, the ratio
(the goal is <= 1.3x), thread settings and the load average.

    python benchmarks/cache_read.py
    python benchmarks/cache_read.py --target-nodes 10000 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from meshsr.cache.format import PairCache, read_pair_cache, write_pair_cache
from meshsr.example.mesh import make_mesh
from meshsr.interp.operator import InterpolationOperator

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def timed(work) -> tuple[float, float]:
    """Wall and cpu seconds of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def read_all(path: Path) -> None:
    cache = read_pair_cache(path)
    assert cache.interpolated.shape == cache.target_fields.shape


def load_npz(path: Path) -> None:
    with np.load(path, allow_pickle=False) as data:
        data["coarse_interp"], data["fine_features"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-nodes", type=int, default=5000)
    parser.add_argument("--target-nodes", type=int, default=50000)
    parser.add_argument("--simulations", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    threads = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in THREAD_VARIABLES)
    print(f"{os.cpu_count()} cpus, {threads}, load average before {os.getloadavg()}")

    src_pts, src_cells = make_mesh(args.source_nodes, seed=1)
    dst_pts, _ = make_mesh(args.target_nodes, seed=2)
    operator = InterpolationOperator.build(src_pts, src_cells, dst_pts)
    shape = (args.simulations, args.frames, len(dst_pts), args.fields)
    rng = np.random.default_rng(0)
    fields = [rng.standard_normal(shape, dtype=np.float32) for _ in range(2)]
    with tempfile.TemporaryDirectory(prefix="meshsr-cache-read-") as tmp:
        path = Path(tmp) / "a_b.npz"
        write_pair_cache(path, PairCache(fields[0], fields[1], operator, {"format_version": 1}))
        size = sum(f.nbytes for f in fields)
        print(f"cache {path.stat().st_size / 1e6:.0f} MB, field arrays {size / 1e6:.0f} MB {shape}")
        read_all(path)  # page cache warm, as for the training job that follows the cache job
        runs: dict[str, list[tuple[float, float]]] = {"read_pair_cache": [], "np.copy": [], "np.load npz (CRC)": []}
        for _ in range(args.repeats):
            runs["read_pair_cache"].append(timed(lambda: read_all(path)))
            runs["np.copy"].append(timed(lambda: [np.copy(f) for f in fields]))
            runs["np.load npz (CRC)"].append(timed(lambda: load_npz(path)))
    medians = {name: tuple(statistics.median(x) for x in zip(*r, strict=True)) for name, r in runs.items()}
    copy = medians["np.copy"][0]
    for name, (wall, cpu) in medians.items():
        ratio = wall / copy
        print(f"{name:>18}: median {wall:.3f} s wall, {cpu:.3f} s cpu, {ratio:.2f}x np.copy ({args.repeats} runs)")
    print(f"goal: read_pair_cache <= 1.3x np.copy; load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
