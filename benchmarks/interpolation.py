"""Benchmark: one cached operator versus griddata per timestep and field (the old way).

Builds the pair the way the workflow does (operator on the source cells, then one
sparse product per frame) for a 5k -> 50k node pair with T=100 frames and F=3 fields,
and in the same run times ``scipy.interpolate.griddata`` called for every timestep and
field. Prints both times and their ratio (the goal is >= 300x).

    python benchmarks/interpolation.py            # the full 300 griddata calls
    python benchmarks/interpolation.py --calls 30 # time 30 calls, scale to 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.interpolate import griddata

from meshsr.example.mesh import make_mesh
from meshsr.interp.operator import InterpolationOperator


def smooth_fields(points: np.ndarray, n_frames: int, n_fields: int) -> np.ndarray:
    """Travelling waves, one per field: a smooth (1, T, N, F) test signal."""
    t = np.linspace(0.0, 1.0, n_frames)[:, None, None]
    k = np.arange(1, n_fields + 1)[None, None, :]
    x, y = points[None, :, 0, None], points[None, :, 1, None]
    return (np.sin(2 * np.pi * (k * x - t)) * np.cos(np.pi * k * y))[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-nodes", type=int, default=5000)
    parser.add_argument("--target-nodes", type=int, default=50000)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--calls", type=int, default=0, help="time only this many griddata calls and scale up (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of the cached build")
    args = parser.parse_args()

    src_pts, src_cells = make_mesh(args.source_nodes, seed=1)
    dst_pts, _ = make_mesh(args.target_nodes, seed=2)
    fields = smooth_fields(src_pts, args.frames, args.fields).astype(np.float32)
    print(f"pair: {len(src_pts)} -> {len(dst_pts)} nodes, T={args.frames}, F={args.fields}")

    best = np.inf
    for _ in range(args.repeats):
        start = time.perf_counter()
        op = InterpolationOperator.build(src_pts, src_cells, dst_pts)
        ours = op.apply(fields, dtype=np.float32)
        best = min(best, time.perf_counter() - start)
    print(f"meshsr operator build + apply: {best:.3f} s (best of {args.repeats})")

    total_calls = args.frames * args.fields
    n_calls = args.calls or total_calls
    start = time.perf_counter()
    done = 0
    old = np.empty_like(ours)
    for t in range(args.frames):
        for f in range(args.fields):
            if done == n_calls:
                break
            old[0, t, :, f] = griddata(src_pts, fields[0, t, :, f], dst_pts, method="linear")
            done += 1
    elapsed = time.perf_counter() - start
    old_time = elapsed * total_calls / done
    scaled = "" if done == total_calls else f" (timed {done} calls, scaled to {total_calls})"
    print(f"griddata per timestep and field: {old_time:.2f} s{scaled}")
    print(f"speed-up: {old_time / best:.0f}x")

    timed = old[0, : max(1, done // args.fields)]
    both = np.isfinite(timed) & ~op.extrapolated[None, :, None]
    diff = np.abs(timed - ours[0, : len(timed)])[both]
    print(f"max |meshsr - griddata| where both interpolate: {diff.max():.2e} (same P1 interpolant)")

if __name__ == "__main__":
    main()
