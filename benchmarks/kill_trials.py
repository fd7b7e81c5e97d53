"""Crash trials: kill -9 the cache (and training) jobs at random moments, count what readers accept.

In a temporary copy of the workflow with synthetic bundles, it first builds a reference
pair cache (and model) undisturbed, then repeatedly starts ``snakemake`` on the same
target, kills its whole process group with SIGKILL after a random fraction of the
reference run time, and inspects what is left:

* ``absent``           no file under the final name (a ``.tmp-*`` may remain);
* ``refused``          a file the readers refuse (``read_pair_cache`` / ``TrainedModel.load``);
* ``accepted-equal``   a file the readers accept whose arrays equal the reference;
* ``accepted-wrong``   a file the readers accept with other content: must stay 0.

After each trial a normal run must finish and give the reference content again.

    python benchmarks/kill_trials.py                      # 25 cache trials, 8 training trials
    python benchmarks/kill_trials.py --cache-trials 3 --train-trials 0 --target-nodes 3000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from meshsr.cache.format import read_pair_cache
from meshsr.errors import InputError
from meshsr.example.mesh import make_mesh
from meshsr.mesh.bundle import MeshBundle, save_bundle

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "scripts", "config", "meshsr", "report", "environment.yml", "profiles")
CACHE = "results/cache/coarse_fine.npz"
MODEL = "results/models/coarse_fine.pt"
TINY_TRAIN = {"epochs": 2, "steps_per_epoch": 20, "hidden": 16, "layers": 2, "batch_size": 256}
EXAMPLE_SPLIT_KEYS = ("test_simulations", "validation_simulations")


def synthetic_bundle(n_nodes: int, seed: int, n_sims: int, n_frames: int) -> MeshBundle:
    points, cells = make_mesh(n_nodes, seed)
    t = np.linspace(0.0, 1.0, n_frames)[None, :, None, None]
    s = np.arange(1, n_sims + 1)[:, None, None, None]
    x, y = points[None, None, :, 0, None], points[None, None, :, 1, None]
    fields = np.concatenate([np.sin(2 * s * x - 3 * t) * np.cos(y), np.cos(s * y + t) * x], axis=-1)
    return MeshBundle(points, cells, fields.astype(np.float32), ["u", "v"], np.linspace(0, 1, n_frames))


def make_workflow(root: Path, args: argparse.Namespace) -> None:
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, root / name)
    (root / "data").mkdir()
    for name, nodes, seed in (("coarse", args.source_nodes, 1), ("fine", args.target_nodes, 2)):
        save_bundle(root / f"data/{name}.npz", synthetic_bundle(nodes, seed, args.simulations, args.frames))
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    config["meshes"] = {"coarse": "data/coarse.npz", "fine": "data/fine.npz"}
    # The shipped split names the example's simulations 4 and 5 (of 26): these bundles take the defaults.
    shipped = {k: v for k, v in config.get("train", {}).items() if k not in EXAMPLE_SPLIT_KEYS}
    config["train"] = {**shipped, **TINY_TRAIN}
    (root / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake(root: Path, target: str, kill_after: float | None = None) -> float:
    """Run ``snakemake`` on ``target``; SIGKILL its process group after ``kill_after`` s. Returns wall seconds."""
    exe = str(Path(sys.executable).parent / "snakemake")
    env = {**os.environ, "PYTHONPATH": str(root)}
    # What a user does after a crash: release the lock the killed run left behind.
    subprocess.run([exe, "--unlock"], cwd=root, env=env, capture_output=True, check=True)
    cmd = [exe, "--cores", "2", "--force", "--rerun-incomplete", target]
    start = time.perf_counter()
    log = open(root / "snakemake.out", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()
    if kill_after is None and proc.returncode != 0:
        raise RuntimeError(f"snakemake {target} failed undisturbed:\n{(root / 'snakemake.out').read_text()[-3000:]}")
    return time.perf_counter() - start


def cache_content(path: Path) -> list[np.ndarray] | None:
    """The cache's arrays as a reader sees them, or None when the reader refuses the file."""
    try:
        cache = read_pair_cache(path)
    except InputError:
        return None
    m = cache.operator.matrix
    return [cache.interpolated, cache.target_fields, m.data, m.indices, m.indptr, cache.extrapolated]


def model_content(path: Path) -> list[np.ndarray] | None:
    from meshsr.learn.trained_model import TrainedModel

    try:
        model = TrainedModel.load(path)
    except InputError:
        return None
    return [v.numpy() for v in model.network.state_dict().values()]


def classify(path: Path, read, reference: list[np.ndarray]) -> str:
    if not path.exists():
        return "absent"
    content = read(path)
    if content is None:
        return "refused"
    same = len(content) == len(reference) and all(np.array_equal(a, b) for a, b in zip(content, reference, strict=True))
    return "accepted-equal" if same else "accepted-wrong"


def trials(root: Path, target: str, read, n: int, rng: random.Random) -> Counter:
    path = root / target
    duration = snakemake(root, target)
    reference = read(path)
    counts: Counter = Counter()
    for _ in range(n):
        snakemake(root, target, kill_after=rng.uniform(0.05, 1.0) * duration)
        counts[classify(path, read, reference)] += 1
        snakemake(root, target)  # recovery: an undisturbed run gives the reference again
        counts["recovered" if classify(path, read, reference) == "accepted-equal" else "not-recovered"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-trials", type=int, default=25)
    parser.add_argument("--train-trials", type=int, default=8)
    parser.add_argument("--source-nodes", type=int, default=5000)
    parser.add_argument("--target-nodes", type=int, default=50000)
    parser.add_argument("--simulations", type=int, default=3)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="meshsr-kill-") as tmp:
        root = Path(tmp)
        make_workflow(root, args)
        for label, target, read, n in (("cache", CACHE, cache_content, args.cache_trials),
                                       ("training", MODEL, model_content, args.train_trials)):
            if n:
                counts = trials(root, target, read, n, rng)
                outcomes = ("absent", "refused", "accepted-equal", "accepted-wrong", "recovered", "not-recovered")
                summary = ", ".join(f"{k} {counts[k]}" for k in outcomes)
                print(f"{label}: {n} kill -9 trials: {summary}", flush=True)


if __name__ == "__main__":
    main()
