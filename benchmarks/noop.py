"""Benchmark: an up-to-date ``snakemake --cores 8 all`` against a one-rule workflow's no-op.

Both runs do nothing but start Snakemake, parse and check that every output is up to
date; the difference is what meshsr adds at parse time (config check, code fingerprints,
cache keys, input functions). The one-rule workflow is made in a temporary directory
and built once; the meshsr workflow must already be built in ``--workdir`` (by default
the checkout: run ``snakemake --cores 8 all`` first). Runs alternate (meshsr, one rule,
meshsr, ...) so that both see the same machine; prints the median wall time of each,
their ratio (the goal is <= 1.6x), cpu time, peak RSS per run and the load average.

    python benchmarks/noop.py                       # 7 runs of each
    python benchmarks/noop.py --runs 3 --workdir /scratch/meshsr-run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_RULE = 'rule all:\n    output:\n        "a.txt",\n    shell:\n        "touch {output}"\n'


def snakemake() -> str:
    found = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or shutil.which("snakemake")
    if found is None:
        raise SystemExit("snakemake is not installed next to this Python nor on PATH")
    return found


def timed(command: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, cpu seconds (user + system) and peak RSS (MiB) of one run; a failed run ends the benchmark."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{out.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def check_up_to_date(binary: str, workdir: Path, target: list[str]) -> None:
    out = subprocess.run([binary, "-n", *target], cwd=workdir, capture_output=True, text=True)
    if out.returncode != 0 or "Nothing to be done" not in out.stdout + out.stderr:
        raise SystemExit(f"{workdir}: `snakemake -n {' '.join(target)}` has work to do; build it first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=7, help="runs of each workflow (interleaved)")
    parser.add_argument("--cores", type=int, default=8)
    args = parser.parse_args()
    binary = snakemake()
    check_up_to_date(binary, args.workdir, ["all"])
    print(
        f"snakemake {subprocess.run([binary, '--version'], capture_output=True, text=True).stdout.strip()}, "
        f"{os.cpu_count()} cpus, load average before {os.getloadavg()}"
    )
    results: dict[str, list[tuple[float, float, float]]] = {"meshsr all": [], "one rule": []}
    with tempfile.TemporaryDirectory(prefix="meshsr-noop-") as tmp:
        one = Path(tmp)
        (one / "Snakefile").write_text(ONE_RULE)
        timed([binary, "--cores", "1"], one)
        check_up_to_date(binary, one, [])
        for _ in range(args.runs):
            results["meshsr all"].append(timed([binary, "--cores", str(args.cores), "all"], args.workdir))
            results["one rule"].append(timed([binary, "--cores", str(args.cores)], one))
    for name, runs in results.items():
        wall, cpu, rss = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{name:>10}: median {wall:.3f} s wall, {cpu:.3f} s cpu, peak RSS {rss:.0f} MiB ({args.runs} runs)")
    ours, one_rule = (statistics.median(r[0] for r in results[k]) for k in ("meshsr all", "one rule"))
    ratio = ours / one_rule
    print(f"ratio meshsr / one rule: {ratio:.2f}x (goal <= 1.6x); load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
