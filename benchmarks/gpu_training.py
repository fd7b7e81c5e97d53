"""Benchmark: the example's coarse -> fine training on CPU and GPU, fp32 and mixed precision, 1 or 2 processes.

Reads the two mesh bundles, builds the pair in memory (as with ``use_cache: false``; no cache
file, no Snakemake, no scikit-fem or meshio needed), then for every configuration trains with
the library (:func:`meshsr.learn.training.train_pair`, or ``torchrun`` for the ``ddp`` ones) and
evaluates on the same device (:func:`meshsr.evaluate.metrics.evaluate_pair`). It prints, per
configuration, the median epoch time, the training time, the evaluation time and the pooled
relative L2 errors of the validation and test splits (what results/metrics/*.csv summarise),
each run's ratio to the first configuration, the load average and thread settings; and it
compares every configuration's metrics with the first one's against the tolerances below.

    PYTHONPATH=. python benchmarks/gpu_training.py --src results/example/coarse.npz \\
        --dst results/example/fine.npz --out gpu_training.json
    # quick check on any machine:
    PYTHONPATH=. python benchmarks/gpu_training.py --src ... --dst ... --epochs 1 --steps 5 \\
        --configs cpu-fp32,cpu-bf16 --out /tmp/x.json

It needs numpy, scipy, pandas, torch and tqdm (no Snakemake, scikit-fem, meshio or h5py) and the two
bundles: results/example/coarse.npz (3.5 MB) and fine.npz (47 MB) of the default example, made by
``snakemake --cores 2 results/example/coarse.npz results/example/fine.npz`` where scikit-fem is.
On one H100 with 16 cores the default configurations take about 4.5 minutes. The exit status is 1
when a configuration's test error is outside its tolerance (:data:`TOLERANCE`), else 0.

Configurations: ``DEVICE-PRECISION`` (``cpu`` or ``cuda``; ``fp32``, ``bf16``, ``fp16``), and
``ddpN-DEVICE-PRECISION`` for N processes under torchrun (on CUDA: one GPU per process).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from meshsr.evaluate.metrics import evaluate_pair
from meshsr.learn.distributed import run_under_torchrun
from meshsr.learn.pair_data import PairData, load_pair_data
from meshsr.learn.settings import FitSettings, RunSettings
from meshsr.learn.trained_model import TrainedModel
from meshsr.learn.training import train_pair

# Relative difference of the test split's field-mean model error to the first configuration's that
# we expect at most: another device's kernels (or bf16/fp16 rounding) change the last bits of every
# step, and 4000 steps of Adam turn that into a different but equally good minimum.
TOLERANCE = {"fp32": 0.03, "bf16": 0.05, "fp16": 0.05, "ddp": 0.01}
DEFAULT_CONFIGS = "cpu-fp32,cuda-fp32,cuda-bf16,cuda-fp16,ddp2-cpu-fp32"


def parse_config(name: str) -> tuple[int, str, str]:
    """``[ddpN-]DEVICE-PRECISION`` -> (processes, device, precision)."""
    parts = name.split("-")
    processes = int(parts.pop(0).removeprefix("ddp")) if parts[0].startswith("ddp") else 1
    device, precision = parts
    if device not in ("cpu", "cuda") or precision not in TOLERANCE or processes < 1:
        raise SystemExit(f"ERROR --configs: cannot read {name!r}; use e.g. cpu-fp32, cuda-bf16, ddp2-cpu-fp32")
    return processes, device, precision


def metric_summary(evaluation) -> dict[str, dict[str, float]]:
    """split -> field -> pooled relative L2 of the model (and of interpolation, as 'interp:FIELD')."""
    out: dict[str, dict[str, float]] = {}
    for row in evaluation.summary.itertuples():
        out.setdefault(row.split, {})[row.field] = float(row.rel_l2_model)
        out[row.split][f"interp:{row.field}"] = float(row.rel_l2_interp)
    return out


def train_ddp(args, fit: FitSettings, device: str, processes: int, threads: int, work: Path) -> TrainedModel:
    """Train under torchrun (the path of ``train.processes > 1``); the model rank 0 wrote."""
    job = {
        "source": "src", "target": "dst", "src_path": str(args.src), "dst_path": str(args.dst), "cache_path": None,
        "out_path": str(work / "model.pt"), "history_path": None, "fit": fit.to_dict(), "device": device,
        "threads": threads,
    }
    log = logging.getLogger("gpu_training.ddp")
    run_under_torchrun(job, processes, log)
    return TrainedModel.load(work / "model.pt")


def run_one(args, data: PairData, name: str, fit: FitSettings) -> dict:
    processes, device, precision = parse_config(name)
    if device == "cuda" and not torch.cuda.is_available():
        return {"config": name, "skipped": "no CUDA device"}
    if device == "cuda" and processes > torch.cuda.device_count():
        return {"config": name, "skipped": f"{processes} processes need as many GPUs ({torch.cuda.device_count()})"}
    fit = replace(fit, precision=precision)
    threads = args.threads
    wall, cpu = time.perf_counter(), time.process_time()
    if processes == 1:
        trained = train_pair(data, fit, RunSettings(device=device, threads=threads), progress=False)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trained = train_ddp(args, fit, device, processes, threads, Path(tmp))
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    seconds = trained.history["seconds"]
    epochs = [b - a for a, b in zip([0.0, *seconds[:-1]], seconds, strict=True)]
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    evaluation = evaluate_pair(data, trained, "model", device)
    return {
        "config": name, "processes": processes, "device": device, "precision": precision,
        "threads": threads if processes == 1 else max(1, threads // processes),
        "epoch_seconds_median": statistics.median(epochs), "epoch_seconds": epochs,
        "fit_seconds": seconds[-1], "train_pair_wall_seconds": train_wall,
        "train_process_cpu_seconds": train_cpu,  # this process only: torchrun's ranks are children
        "evaluate_seconds": time.perf_counter() - start, "best_epoch": trained.history["best_epoch"],
        "metrics": metric_summary(evaluation), "load_average": os.getloadavg(),
    }


def compare(results: list[dict]) -> list[str]:
    """One line per configuration: metrics and times against the first one, and the tolerance check."""
    done = [r for r in results if "metrics" in r]
    if not done:
        return ["nothing ran"]
    base = done[0]
    key = "mean over fields"
    lines = []
    for r in results:
        if "skipped" in r:
            lines.append(f"{r['config']:>16}: skipped ({r['skipped']})")
            continue
        test, ref = r["metrics"]["test"][key], base["metrics"]["test"][key]
        rel = abs(test - ref) / ref
        tol = TOLERANCE["ddp" if r["processes"] > 1 and r["device"] == base["device"] else r["precision"]]
        verdict = "base" if r is base else ("within" if rel <= tol else "OUTSIDE") + f" {tol:.0%}"
        speedup = base["epoch_seconds_median"] / r["epoch_seconds_median"]
        lines.append(
            f"{r['config']:>16}: epoch {r['epoch_seconds_median']:.3f} s ({speedup:.2f}x faster than {base['config']}),"
            f" fit {r['fit_seconds']:.1f} s, evaluate {r['evaluate_seconds']:.1f} s; "
            f"test rel. L2 {100 * test:.3f} % (validation {100 * r['metrics']['validation'][key]:.3f} %, "
            f"interpolation {100 * r['metrics']['test']['interp:' + key]:.3f} %), "
            f"{100 * rel:.2f} % from the base: {verdict}; load {r['load_average'][0]:.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="coarse mesh bundle (results/example/coarse.npz)")
    parser.add_argument("--dst", type=Path, required=True, help="fine mesh bundle (results/example/fine.npz)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the results")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated (default {DEFAULT_CONFIGS})")
    parser.add_argument("--epochs", type=int, default=FitSettings.epochs)
    parser.add_argument("--steps", type=int, default=FitSettings.steps_per_epoch, help="steps per epoch")
    parser.add_argument("--model", default=FitSettings.model, choices=["mlp", "gnn"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in configs:
        parse_config(name)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    fit = FitSettings(epochs=args.epochs, steps_per_epoch=args.steps, model=args.model)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    data = load_pair_data("src", "dst", args.src, args.dst, None)
    build = time.perf_counter() - start
    environment = {
        "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "threads": args.threads, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "pair_shape": list(data.shape), "pair_build_seconds": build, "fit": fit.to_dict(),
        "load_average_start": os.getloadavg(),
    }
    print(json.dumps(environment), flush=True)
    results = []
    for name in configs:
        try:
            results.append(run_one(args, data, name, fit))
        except Exception as exc:  # noqa: BLE001 (one failing configuration must not lose the others)
            results.append({"config": name, "skipped": f"failed: {type(exc).__name__}: {exc}"})
        print(json.dumps(results[-1]), flush=True)
    lines = compare(results)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": environment, "results": results, "summary": lines}, indent=1))
    outside = any("OUTSIDE" in line for line in lines)
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
