"""Benchmark: where a training job's time goes, and its peak memory for S = 6 and S = 24 simulations.

Generates the example pair (coarse -> fine, the shipped node counts, T = 48) for each S
in ``--simulations`` in a temporary directory (or reads ``--results`` for S = 6: a built
checkout's ``results/``), builds its pair cache, then trains it in a child process per S
(the default training settings, ``--epochs`` epochs, ``--threads`` threads) and prints

* the split of the job's wall time: reading the pair, features (the source-node quantities of
  the training frames, the normalisation statistics from a sample of rows, the validation
  frames' features; each also shown on its own), batching (assembling each group of batches:
  cached values, the feature kernel, standardisation), validation, and the rest of the epochs
  (forward, backward, optimiser);
* data handling (features + batching) as a share of the job (the goal: <= 5 %), validation
  as a share of the epochs (the goal: <= 15 %), the kept epoch;
* each child's peak RSS and their ratio S = 24 / S = 6 (the goal: <= 1.5x);

with cpu time, thread settings and the load average beside them.

    python benchmarks/training_data.py                                   # S = 6 and 24, 16 epochs
    python benchmarks/training_data.py --results results --simulations 6 # the built example only
    python benchmarks/training_data.py --epochs 2                        # memory only, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
NODES = {"coarse": 1500, "fine": 20000}  # config/config.yaml's example.nodes


def make_pair(root: Path, simulations: int, nodes: dict[str, int], frames: int) -> Path:
    """results/example/{coarse,fine}.npz and results/cache/coarse_fine.npz under ``root`` for S = ``simulations``."""
    from meshsr.cache.build import make_pair_cache
    from meshsr.cache.format import write_pair_cache
    from meshsr.example.settings import ExampleSettings
    from meshsr.example.solver import generate_example
    from meshsr.mesh.bundle import save_bundle

    settings = ExampleSettings(n_simulations=simulations, n_frames=frames)
    (root / "example").mkdir(parents=True)
    for i, (name, n) in enumerate(nodes.items()):  # mesh seeds as rules/common.smk gives them
        save_bundle(root / "example" / f"{name}.npz", generate_example(n, 1000 + i, settings))
    cache = root / "cache" / "coarse_fine.npz"
    write_pair_cache(cache, make_pair_cache(root / "example/coarse.npz", root / "example/fine.npz", "coarse", "fine"))
    return root


def child(results: Path, epochs: int, threads: int) -> None:
    """Train the pair under ``results`` with timers around each part; print one JSON line."""
    import resource

    from meshsr.learn import samples, training
    from meshsr.learn.pair_data import load_pair_data
    from meshsr.learn.settings import FitSettings, RunSettings

    spent = {"read": 0.0, "features": 0.0, "batching": 0.0, "validation": 0.0, "epochs": 0.0}
    parts = {"source quantities": 0.0, "statistics": 0.0, "validation frames": 0.0}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                (spent if name in spent else parts)[name] += time.perf_counter() - start

        return wrapper

    training.prepare_data = timed("features", training.prepare_data)
    samples.Rows.__init__ = timed("source quantities", samples.Rows.__init__)
    training.fit_statistics = timed("statistics", training.fit_statistics)
    training.frame_samples = timed("validation frames", training.frame_samples)
    samples.TrainingSamples.take = timed("batching", samples.TrainingSamples.take)
    training._loss_on = timed("validation", training._loss_on)
    training.fit_network = timed("epochs", training.fit_network)
    start, cpu = time.perf_counter(), time.process_time()
    example = results / "example"
    data = timed("read", load_pair_data)(
        "coarse", "fine", example / "coarse.npz", example / "fine.npz", results / "cache" / "coarse_fine.npz"
    )
    trained = training.train_pair(data, FitSettings(epochs=epochs), RunSettings("cpu", threads), progress=False)
    wall = time.perf_counter() - start
    spent["epochs"] -= spent["batching"] + spent["validation"]  # the rest: forward, backward, optimiser
    report = {
        "S": data.shape[0],
        "wall": wall,
        "cpu": time.process_time() - cpu,
        "spent": spent,
        "parts": parts,
        "best_epoch": trained.history["best_epoch"],
        "validation_loss": trained.history["validation_loss"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(report))


def run_child(results: Path, epochs: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", str(results), "--epochs", str(epochs), "--threads", str(threads)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"training child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def show(report: dict) -> None:
    spent, wall = report["spent"], report["wall"]
    epochs = spent["epochs"] + spent["batching"] + spent["validation"]
    rss = report["peak_rss_mb"]
    print(f"S = {report['S']}: job {wall:.1f} s wall, {report['cpu']:.1f} s cpu, peak RSS {rss:.0f} MiB")
    for name, seconds in spent.items():
        print(f"  {name:>10}: {seconds:7.2f} s  {100 * seconds / wall:5.1f} % of the job")
        if name == "features":
            print("    of which " + ", ".join(f"{part} {s:.2f} s" for part, s in report["parts"].items()))
    data = spent["features"] + spent["batching"]
    print(f"  data handling (features + batching): {100 * data / wall:.1f} % of the job (goal <= 5 %)")
    print(f"  validation: {100 * spent['validation'] / epochs:.1f} % of the epochs (goal <= 15 %)")
    print(f"  kept epoch {report['best_epoch']}; load average now {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, nargs="+", default=[6, 24])
    parser.add_argument("--results", type=Path, help="a built checkout's results/ to read for S = 6")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--nodes", type=int, nargs=2, default=list(NODES.values()), help="coarse and fine node counts")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.epochs, args.threads)
    threads = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in THREAD_VARIABLES)
    print(f"{os.cpu_count()} cpus, torch threads {args.threads}, {threads}, load average {os.getloadavg()}")
    reports = {}
    with tempfile.TemporaryDirectory(prefix="meshsr-training-data-") as tmp:
        for s in args.simulations:
            if s == 6 and args.results:
                results = args.results
            else:
                start = time.perf_counter()
                results = make_pair(Path(tmp) / f"S{s}", s, dict(zip(NODES, args.nodes, strict=True)), args.frames)
                print(f"S = {s}: example pair and cache made in {time.perf_counter() - start:.1f} s")
            reports[s] = run_child(results, args.epochs, args.threads)
            show(reports[s])
    if 6 in reports and 24 in reports:
        ratio = reports[24]["peak_rss_mb"] / reports[6]["peak_rss_mb"]
        print(f"peak RSS S = 24 / S = 6: {ratio:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
