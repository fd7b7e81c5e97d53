"""Stand-in for your solver (README, "Bring your own data"): XDMF time series written with meshio.

Writes, for each resolution, ``{out}/{res}/sim{s}.xdmf`` and the ``sim{s}.h5`` beside it:
S simulations of T frames of the heat equation u_t = kappa * (u_xx + u_yy) on the unit
square with u = 0 on the boundary, solved exactly,

    c(x, y, t) = sum_k a_k sin(m_k pi x) sin(n_k pi y) exp(-kappa pi^2 (m_k^2 + n_k^2) t),

with random amplitudes a_k per simulation (the same at every resolution), and its flux
-grad c as a vector field. Each resolution is a Delaunay mesh of its own jittered grid.
It also writes ``{out}/coarse/new{k}.xdmf``: new runs (amplitudes of their own) on the
coarse mesh only, with no fine counterpart, for the upsample step.

    python docs/byod_solver.py --out runs --coarse 400 --fine 1600 --simulations 3 --frames 4
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import meshio
import numpy as np
from scipy.spatial import Delaunay

MODES = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1)]
KAPPA = 0.02


def mesh(n_nodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``n_nodes`` points: a grid with its interior points jittered, Delaunay triangles."""
    side = max(3, round(np.sqrt(n_nodes)))
    g = np.linspace(0.0, 1.0, side)
    points = np.column_stack([a.ravel() for a in np.meshgrid(g, g)])
    inner = ((points > 0) & (points < 1)).all(axis=1)
    points[inner] += np.random.default_rng(seed).uniform(-0.25, 0.25, (inner.sum(), 2)) / (side - 1)
    return points, Delaunay(points).simplices


def solution(points: np.ndarray, t: float, amplitudes: np.ndarray) -> dict[str, np.ndarray]:
    x, y = points[:, 0], points[:, 1]
    c, cx, cy = np.zeros(len(points)), np.zeros(len(points)), np.zeros(len(points))
    for a, (m, n) in zip(amplitudes, MODES, strict=True):
        decay = a * np.exp(-KAPPA * np.pi**2 * (m * m + n * n) * t)
        c += decay * np.sin(m * np.pi * x) * np.sin(n * np.pi * y)
        cx += decay * m * np.pi * np.cos(m * np.pi * x) * np.sin(n * np.pi * y)
        cy += decay * n * np.pi * np.sin(m * np.pi * x) * np.cos(n * np.pi * y)
    return {"c": c, "flux": -np.column_stack([cx, cy])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs", help="output folder (default: runs)")
    parser.add_argument("--coarse", type=int, default=400, help="nodes of the coarse mesh")
    parser.add_argument("--fine", type=int, default=1600, help="nodes of the fine mesh")
    parser.add_argument("--simulations", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--new-runs", type=int, default=1, help="coarse-only runs new{k}.xdmf (default: 1)")
    args = parser.parse_args()
    amplitudes = np.random.default_rng(0).normal(size=(args.simulations, len(MODES)))
    new_amplitudes = np.random.default_rng(1).normal(size=(args.new_runs, len(MODES)))
    times = np.linspace(0.0, 2.0, args.frames)
    for seed, (res, n_nodes) in enumerate({"coarse": args.coarse, "fine": args.fine}.items()):
        points, triangles = mesh(n_nodes, seed)
        folder = Path(args.out) / res
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.chdir(folder):  # TimeSeriesWriter writes the .h5 into the working directory
            runs = {f"sim{s}": a for s, a in enumerate(amplitudes)}
            if res == "coarse":
                runs |= {f"new{k}": a for k, a in enumerate(new_amplitudes)}
            for name, run_amplitudes in runs.items():
                with meshio.xdmf.TimeSeriesWriter(f"{name}.xdmf") as writer:
                    writer.write_points_cells(points, [("triangle", triangles)])
                    for t in times:
                        writer.write_data(t, point_data=solution(points, t, run_amplitudes))
        print(f"{folder}: {len(points)} nodes, {len(triangles)} triangles, {args.simulations} x {args.frames} frames")


if __name__ == "__main__":
    main()
