"""Benchmark: where a training job's time goes, and its peak memory for S = 6 and S = 24 simulations.

Generates the example pair (coarse -> fine, the shipped node counts, T = 48) for each S
in ``--simulations`` in a temporary directory (or reads ``--results`` for S = 6: a built
checkout's ``results/``), builds its pair cache and then, in a child process each (the default
training settings, ``--epochs`` epochs, ``--threads`` threads):

* **on the fly** (the gnn's way, and the mlp's before the training_batches job): one job that reads
  the pair, builds the features (the source-node quantities of the training frames, the
  normalisation statistics from a sample of rows, the validation frames' features; each also shown
  on its own), assembles each group of batches (cached values, the feature kernel,
  standardisation: "batching") and trains;
* **the training_batches job** (:func:`meshsr.learn.training.batches_job`): the same features and
  batches, written to a file in draw order; its wall time, file size and peak RSS;
* **training from the batches** (what ``train_model`` runs for the mlp): reading the side file
  (statistics, validation frames), reading the batches (a group at a time into reused buffers,
  each batch handed to the network as views: "batch reads"), validation and the rest of the epochs
  (forward, backward, optimiser);

and prints data handling as a share of each training job (the goal: <= 5 %), validation as a share of
the epochs (the goal: <= 15 %), the kept epoch, whether both ways give the same loss history (the
same model), and each child's peak RSS with the ratio S = 24 / S = 6 for the training job (the goal:
<= 1.5x); with cpu time, thread settings and the load average beside them.

    python benchmarks/training_data.py                                   # S = 6 and 24, 16 epochs
    python benchmarks/training_data.py --results results --simulations 6 # the built example only
    python benchmarks/training_data.py --epochs 2                        # memory only, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def _timer(spent: dict):
    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    return timed


def _pair_paths(results: Path) -> tuple[Path, Path, Path]:
    example = results / "example"
    return example / "coarse.npz", example / "fine.npz", results / "cache" / "coarse_fine.npz"


def child(results: Path, mode: str, epochs: int, threads: int, batches: Path) -> None:
    """One job under ``results`` with timers around its parts (``mode``: fly, batches or stream); one JSON line."""
    import resource

    os.environ["OMP_NUM_THREADS"] = str(threads)  # the kernels' threads, as Snakemake sets them for a job
    from meshsr.learn import batch_stream, samples, training
    from meshsr.learn.pair_data import load_pair_data
    from meshsr.learn.settings import FitSettings
    spent: dict[str, float] = {}
    timed = _timer(spent)
    fit = FitSettings(epochs=epochs)
    rows, side = batches / "coarse_fine.npy", batches / "coarse_fine.npz"
    training.load_pair_data = timed("read", load_pair_data)
    training.prepare_data = timed("features", training.prepare_data)
    samples.Rows.__init__ = timed("source quantities", samples.Rows.__init__)
    training.fit_statistics = timed("statistics", training.fit_statistics)
    training.frame_samples = timed("validation frames", training.frame_samples)
    samples.TrainingSamples.take = timed("batching", samples.TrainingSamples.take)
    batch_stream.StreamBatches.next = timed("batch reads", batch_stream.StreamBatches.next)
    training.read_batch_stream = timed("side file", training.read_batch_stream)
    training._loss_on = timed("validation", training._loss_on)
    training.fit_network = timed("epochs", training.fit_network)
    start, cpu = time.perf_counter(), time.process_time()
    src, dst, cache = _pair_paths(results)
    report: dict = {}
    if mode == "batches":
        training.batches_job("coarse", "fine", src, dst, cache, rows, side, fit.to_dict())
        report["file_bytes"] = rows.stat().st_size + side.stat().st_size
    else:
        batches_in = [rows, side] if mode == "stream" else None
        trained = training.train_job("coarse", "fine", src, dst, cache, batches / "model.pt", fit.to_dict(),
                                     threads=threads, progress=False, batches=batches_in)
        report.update(best_epoch=trained.history["best_epoch"], validation_loss=trained.history["validation_loss"],
                      train_loss=trained.history["train_loss"])
    wall = time.perf_counter() - start
    report.update(wall=wall, cpu=time.process_time() - cpu)
    if "epochs" in spent:
        spent["epochs"] -= sum(spent.get(k, 0.0) for k in ("batching", "batch reads", "validation"))
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["spent"] = spent
    print(json.dumps(report))


def run_child(results: Path, mode: str, epochs: int, threads: int, batches: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(results), "--mode", mode, "--epochs", str(epochs),
               "--threads", str(threads), "--batches", str(batches)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _share(seconds: float, wall: float) -> str:
    return f"{seconds:7.2f} s  {100 * seconds / wall:5.1f} % of the job"


def show_fly(report: dict) -> None:
    spent, wall = report["spent"], report["wall"]
    print(f"  on the fly: job {wall:.1f} s wall, {report['cpu']:.1f} s cpu, peak RSS {report['peak_rss_mb']:.0f} MiB")
    for name in ("read", "features", "batching", "validation", "epochs"):
        print(f"    {name:>10}: {_share(spent.get(name, 0.0), wall)}")
        if name == "features":
            parts = ("source quantities", "statistics", "validation frames")
            print("      of which " + ", ".join(f"{part} {spent.get(part, 0.0):.2f} s" for part in parts))
    data = spent.get("features", 0.0) + spent.get("batching", 0.0)
    epochs = spent["epochs"] + spent.get("batching", 0.0) + spent["validation"]
    print(f"    data handling (features + batching): {100 * data / wall:.1f} % of the job")
    kept = report["best_epoch"]
    print(f"    validation: {100 * spent['validation'] / epochs:.1f} % of the epochs; kept epoch {kept}")


def show_batches(report: dict) -> None:
    spent, wall = report["spent"], report["wall"]
    rest = wall - sum(spent.get(k, 0.0) for k in ("read", "features", "batching"))
    print(f"  training_batches job: {wall:.1f} s wall, {report['cpu']:.1f} s cpu, peak RSS "
          f"{report['peak_rss_mb']:.0f} MiB, files {report['file_bytes'] / 1e9:.2f} GB")
    print(f"    read {spent.get('read', 0.0):.2f} s, features {spent.get('features', 0.0):.2f} s, batching "
          f"{spent.get('batching', 0.0):.2f} s, writing and the rest {rest:.2f} s")


def show_stream(report: dict, fly: dict | None) -> None:
    spent, wall = report["spent"], report["wall"]
    print(f"  training from the batches: job {wall:.1f} s wall, {report['cpu']:.1f} s cpu, peak RSS "
          f"{report['peak_rss_mb']:.0f} MiB")
    for name in ("side file", "batch reads", "validation", "epochs"):
        print(f"    {name:>11}: {_share(spent.get(name, 0.0), wall)}")
    data = spent.get("side file", 0.0) + spent.get("batch reads", 0.0)
    epochs = spent["epochs"] + spent.get("batch reads", 0.0) + spent["validation"]
    print(f"    data handling (side file + batch reads): {100 * data / wall:.1f} % of the job (goal <= 5 %)")
    print(f"    validation: {100 * spent['validation'] / epochs:.1f} % of the epochs (goal <= 15 %); kept epoch "
          f"{report['best_epoch']}")
    if fly is not None:
        same = fly["train_loss"] == report["train_loss"] and fly["validation_loss"] == report["validation_loss"]
        print(f"    same loss history as on the fly (every epoch, to the last bit): {'yes' if same else 'NO'}")
    print(f"    load average now {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, nargs="+", default=[6, 24])
    parser.add_argument("--results", type=Path, help="a built checkout's results/ to read for S = 6")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--nodes", type=int, nargs=2, default=list(NODES.values()), help="coarse and fine node counts")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("fly", "batches", "stream"), help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.mode, args.epochs, args.threads, args.batches)
    threads = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in THREAD_VARIABLES)
    print(f"{os.cpu_count()} cpus, torch threads {args.threads}, {threads}, load average {os.getloadavg()}")
    streamed = {}
    with tempfile.TemporaryDirectory(prefix="meshsr-training-data-") as tmp:
        for s in args.simulations:
            if s == 6 and args.results:
                results = args.results
            else:
                start = time.perf_counter()
                results = make_pair(Path(tmp) / f"S{s}", s, dict(zip(NODES, args.nodes, strict=True)), args.frames)
                print(f"S = {s}: example pair and cache made in {time.perf_counter() - start:.1f} s")
            print(f"S = {s}:")
            batches = Path(tmp) / f"batches-S{s}"
            batches.mkdir()
            fly = run_child(results, "fly", args.epochs, args.threads, batches)
            show_fly(fly)
            show_batches(run_child(results, "batches", args.epochs, args.threads, batches))
            streamed[s] = run_child(results, "stream", args.epochs, args.threads, batches)
            show_stream(streamed[s], fly)
            shutil.rmtree(batches)
    if 6 in streamed and 24 in streamed:
        ratio = streamed[24]["peak_rss_mb"] / streamed[6]["peak_rss_mb"]
        print(f"peak RSS of training from the batches, S = 24 / S = 6: {ratio:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
