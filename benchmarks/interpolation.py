"""Benchmark: the cached operator against VTK's probe filter and griddata, size by size.

For each pair size, in one process, after one untimed round, interleaved repeat by repeat
(medians printed):

* meshsr: ``InterpolationOperator.build`` (point location + assembly) and ``apply`` of T x F
  float32 fields (float64 sums rounded once to float32), numba threads as configured;
  location alone with one numba thread;
* VTK's best pattern: ``vtkProbeFilter`` with a fresh ``vtkStaticCellLocator`` (the
  locator built inside the timed update), one float32 array of T*F components, SMP backend
  STDThread with 1 and with 2 threads, ``ComputeTolerance`` off; and the same probe of one
  scalar with 1 thread, VTK's location alone (plus one weight product per node);
* ``scipy.interpolate.griddata`` per timestep and field (5k -> 50k only: ``--griddata-calls``
  calls timed, scaled to T*F);
* apply bandwidth: output bytes / apply time against ``np.copyto`` of the same bytes
  between two touched arrays (memcpy), in the same run: into a reused output, into freed
  memory and into new pages;
* peak RSS of build + apply in a child process: the rise of VmHWM over VmRSS just before
  the build, against the operator's arrays plus the applied output.

Memory: every contestant writes a new output array each call.  This VM hands memory that
the process freed back to its host within seconds (``page_reporting``) and then charges
about 2 s per GB to fault it in again, so whoever runs right after a large free looks
fast.  The timing process therefore keeps what it frees (glibc: ``M_MMAP_MAX`` 0,
no ``M_TRIM_THRESHOLD``, set before anything large is allocated) and touches a block
larger than a size's working set before timing it: every contestant, VTK and griddata
included, then allocates from the same warm heap, as a long-running process does.  The
cost of new pages is printed on its own: meshsr's apply into a fresh anonymous mapping,
and the first touch of such a mapping alone.

It checks that both codes locate the same nodes and give the same values (to 1e-6 of the
field scale), and prints cpu/wall, thread settings and the load average beside the
figures.  Time measured on a loaded machine is for direction only.

    python benchmarks/interpolation.py                 # every size (a few minutes on 2 cores)
    python benchmarks/interpolation.py --sizes small   # 2D 5k -> 50k only
    python benchmarks/interpolation.py --sizes 2d-1m,3d-200k --repeats 9
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshsr.example.mesh import make_mesh
from meshsr.interp.locate import locate_points
from meshsr.interp.operator import InterpolationOperator

SIZES = {  # name: (dim, source nodes, target nodes)
    "2d-50k": (2, 5_000, 50_000),
    "2d-1m": (2, 100_000, 1_000_000),
    "3d-200k": (3, 20_000, 200_000),
    "3d-1m": (3, 100_000, 1_000_000),
}
GROUPS = {"small": ["2d-50k"], "all": list(SIZES)}


@dataclass
class Pair:
    src_points: np.ndarray
    src_cells: np.ndarray
    dst_points: np.ndarray
    fields: np.ndarray  # (1, T, N_src, F) float32


def cube_points(n_nodes: int, seed: int, jitter: float = 0.12) -> tuple[np.ndarray, int]:
    """Lattice of about ``n_nodes`` nodes on the unit cube, interior nodes jittered; lexicographic order."""
    m = max(int(round(n_nodes ** (1 / 3))), 2)
    axis = np.linspace(0.0, 1.0, m)
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    inner = ((pts > 0) & (pts < 1)).all(axis=1)
    pts[inner] += np.random.default_rng(seed).uniform(-jitter, jitter, (inner.sum(), 3)) / (m - 1)
    return pts, m


def cube_mesh(n_nodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Jittered lattice on the unit cube, each lattice cube cut into the 6 Kuhn tetrahedra."""
    pts, m = cube_points(n_nodes, seed)
    i, j, k = np.meshgrid(*(np.arange(m - 1),) * 3, indexing="ij")
    corner = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    cells = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        step = np.zeros((4, 3), dtype=np.int64)
        for s in range(1, 4):
            step[s] = step[s - 1]
            step[s, perm[s - 1]] = 1
        v = corner[:, None, :] + step[None]
        cells.append((v[..., 0] * m + v[..., 1]) * m + v[..., 2])
    return pts, np.concatenate(cells, axis=1).reshape(-1, 4)


def smooth_fields(points: np.ndarray, n_frames: int, n_fields: int) -> np.ndarray:
    """Travelling waves, one per field: a smooth (1, T, N, F) float32 test signal."""
    t = np.linspace(0.0, 1.0, n_frames)[:, None, None]
    k = np.arange(1, n_fields + 1)[None, None, :]
    x, y = points[None, :, 0, None], points[None, :, 1, None]
    out = np.sin(2 * np.pi * (k * x - t)) * np.cos(np.pi * k * y)
    if points.shape[1] == 3:
        out = out * np.cos(np.pi * points[None, :, 2, None])
    return out[None].astype(np.float32)


def make_pair(size: str, n_frames: int, n_fields: int) -> Pair:
    dim, n_src, n_dst = SIZES[size]
    if dim == 2:
        src_pts, src_cells = make_mesh(n_src, seed=1)
        dst_pts, _ = make_mesh(n_dst, seed=2)
    else:
        src_pts, src_cells = cube_mesh(n_src, seed=1)
        dst_pts, _ = cube_points(n_dst, seed=2)
        dst_pts = np.clip(dst_pts * 0.999 + 0.0005, 0.0, 1.0)  # another lattice, not the source's nodes
    return Pair(src_pts, src_cells, dst_pts, smooth_fields(src_pts, n_frames, n_fields))


def timed(fn: Callable[..., object], *args: object) -> tuple[float, float, object]:
    """(wall s, process cpu s, result) of one call ``fn(*args)``."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def keep_freed_memory() -> str:
    """Make glibc keep the memory this process frees (no mmap for large blocks, no trimming); says what was set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "allocator: not glibc, left as it is"
    m_trim_threshold, m_mmap_max = -1, -4
    # -1 reaches glibc as SIZE_MAX: never trim (2**31 - 1 would still trim a freed block above 2 GB)
    ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, -1) == 1
    if not ok:
        return "allocator: mallopt failed, left as it is"
    return "allocator: glibc keeps freed memory (M_MMAP_MAX 0, M_TRIM_THRESHOLD off)"


def warm_heap(nbytes: int) -> float:
    """Touch and free ``nbytes``, so later allocations up to that size reuse touched memory; seconds taken."""
    start = time.perf_counter()
    block = np.empty(nbytes, dtype=np.uint8)
    block[::4096] = 1
    del block
    return time.perf_counter() - start


def new_pages(shape: tuple[int, ...]) -> tuple[mmap.mmap, np.ndarray]:
    """A float32 array of ``shape`` on a fresh anonymous mapping: pages the process has never touched."""
    buffer = mmap.mmap(-1, int(np.prod(shape)) * 4)
    return buffer, np.frombuffer(buffer, dtype=np.float32).reshape(shape)


def touch_new_pages(shape: tuple[int, ...]) -> None:
    buffer, array = new_pages(shape)
    array.reshape(-1)[:: 4096 // 4] = 1
    del array
    buffer.close()


def apply_into_new_pages(op: InterpolationOperator, fields: np.ndarray, shape: tuple[int, ...]) -> None:
    buffer, out = new_pages(shape)
    op.apply(fields, np.float32, out)
    del out
    buffer.close()


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


# --- VTK -------------------------------------------------------------------------------


def vtk_source(pair: Pair, values: np.ndarray):
    """vtkUnstructuredGrid of the source cells with ``values`` (N, C) as one point array."""
    import vtk
    from vtkmodules.util import numpy_support as ns

    pts = pair.src_points
    if pts.shape[1] == 2:
        pts = np.column_stack([pts, np.zeros(len(pts))])
    vpts = vtk.vtkPoints()
    vpts.SetData(ns.numpy_to_vtk(np.ascontiguousarray(pts), deep=True))
    k = pair.src_cells.shape[1]
    offsets = np.arange(0, (len(pair.src_cells) + 1) * k, k, dtype=np.int64)
    cells = vtk.vtkCellArray()
    cells.SetData(
        ns.numpy_to_vtkIdTypeArray(offsets, deep=True),
        ns.numpy_to_vtkIdTypeArray(np.ascontiguousarray(pair.src_cells, dtype=np.int64).ravel(), deep=True),
    )
    grid = vtk.vtkUnstructuredGrid()
    grid.SetPoints(vpts)
    grid.SetCells(vtk.VTK_TRIANGLE if k == 3 else vtk.VTK_TETRA, cells)
    arr = ns.numpy_to_vtk(np.ascontiguousarray(values), deep=True)
    arr.SetName("f")
    grid.GetPointData().AddArray(arr)
    return grid


def vtk_targets(points: np.ndarray):
    import vtk
    from vtkmodules.util import numpy_support as ns

    if points.shape[1] == 2:
        points = np.column_stack([points, np.zeros(len(points))])
    vpts = vtk.vtkPoints()
    vpts.SetData(ns.numpy_to_vtk(np.ascontiguousarray(points), deep=True))
    poly = vtk.vtkPolyData()
    poly.SetPoints(vpts)
    return poly


def vtk_probe(source, targets, threads: int, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """One ``vtkProbeFilter`` update (static cell locator built inside it): values (N, C) and the valid mask."""
    import vtk
    from vtkmodules.util import numpy_support as ns

    vtk.vtkSMPTools.Initialize(threads)
    probe = vtk.vtkProbeFilter()
    probe.SetInputData(targets)
    probe.SetSourceData(source)
    probe.SetCellLocator(vtk.vtkStaticCellLocator())  # a fresh locator, built inside Update
    probe.ComputeToleranceOff()
    probe.SetTolerance(tolerance)
    probe.PassPointArraysOff()
    probe.PassCellArraysOff()
    probe.PassFieldArraysOff()
    probe.Update()
    data = probe.GetOutput().GetPointData()
    values = ns.vtk_to_numpy(data.GetArray("f"))
    mask = ns.vtk_to_numpy(data.GetArray(probe.GetValidPointMaskArrayName())).astype(bool)
    return values, mask


# --- peak RSS in a child process ---------------------------------------------------------------


def _status(key: str) -> int:
    """A VmRSS/VmHWM figure of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss_child(size: str, n_frames: int, n_fields: int) -> None:
    """Build + apply once after a warm-up; print JSON with the RSS before, the peak during, and the sizes."""
    pair = make_pair(size, n_frames, n_fields)
    small = InterpolationOperator.build(pair.src_points, pair.src_cells, pair.dst_points[:100])
    small.apply(pair.fields[:, :1], dtype=np.float32)  # load the compiled kernels first
    del small
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    op = InterpolationOperator.build(pair.src_points, pair.src_cells, pair.dst_points)
    out = op.apply(pair.fields, dtype=np.float32)
    peak = _status("VmHWM")
    m = op.matrix
    op_bytes = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes + op.extrapolated.nbytes
    print(json.dumps({"before": before, "peak": peak, "operator": op_bytes, "output": out.nbytes}))


def measure_rss(size: str, n_frames: int, n_fields: int) -> dict | None:
    cmd = [sys.executable, __file__, "--rss-child", size, "--frames", str(n_frames), "--fields", str(n_fields)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  peak RSS: child failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_call_cost() -> tuple[float, float]:
    """Wall time of import + first small build/apply in a fresh interpreter: with this checkout's kernel
    cache, and with an empty NUMBA_CACHE_DIR (what a fresh checkout's first job pays to compile)."""
    code = (
        "import time; t = time.perf_counter(); import numpy as np;"
        "from meshsr.interp.operator import InterpolationOperator as O;"
        "from meshsr.example.mesh import make_mesh; p, c = make_mesh(300, seed=1);"
        "op = O.build(p, c, p[:50] * 0.99 + 0.01); op.apply(np.zeros((1, len(p), 3), np.float32));"
        "print(time.perf_counter() - t)"
    )
    import tempfile

    costs = []
    with tempfile.TemporaryDirectory() as empty:
        for env in ({}, {"NUMBA_CACHE_DIR": empty}):
            cmd = [sys.executable, "-c", code]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
            costs.append(float(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else float("nan"))
    return costs[0], costs[1]


# --- the run ---------------------------------------------------------------------------------


def build_and_apply(pair: Pair) -> tuple[InterpolationOperator, np.ndarray]:
    op = InterpolationOperator.build(pair.src_points, pair.src_cells, pair.dst_points)
    return op, op.apply(pair.fields, dtype=np.float32)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def run_size(size: str, args: argparse.Namespace) -> dict:
    import numba

    dim, n_src, n_dst = SIZES[size]
    pair = make_pair(size, args.frames, args.fields)
    n_comp = args.frames * args.fields
    print(
        f"\n== {size}: {dim}D {len(pair.src_points)} -> {len(pair.dst_points)} nodes, "
        f"{len(pair.src_cells)} source cells, T={args.frames}, F={args.fields} ({load()})"
    )
    # VTK's input: one (N_src, T*F) float32 array, prepared outside the timings.
    multi = np.ascontiguousarray(pair.fields[0].transpose(1, 0, 2).reshape(len(pair.src_points), n_comp))
    source = vtk_source(pair, multi)
    scalar_source = vtk_source(pair, multi[:, :1].copy())
    targets = vtk_targets(pair.dst_points)
    tolerance = 1e-10 * float(np.ptp(pair.src_points, axis=0).max())
    threads = numba.get_num_threads()

    keys = ("ours", "locate1", "apply", "apply_out", "apply_new", "touch_new", "vtk1", "vtk2", "vtkloc1")
    rec: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
    ours = vtk_values = vtk_mask = op = None
    out_shape = (1, args.frames, len(pair.dst_points), args.fields)
    out_bytes = int(np.prod(out_shape)) * 4
    # ours, VTK's output, the next output and the build's temporaries can be alive at once
    print(f"  heap warmed: {warm_heap(4 * out_bytes + (512 << 20)):.1f} s to touch {4 * out_bytes / 1e9 + 0.5:.1f} GB")
    # One untimed round first: loading the compiled kernels is the first call's cost, printed on its own.
    build_and_apply(pair)
    vtk_probe(source, targets, 2, tolerance)
    for _ in range(args.repeats):
        ours = None
        gc.collect()
        wall, cpu, (op, ours) = timed(build_and_apply, pair)
        rec["ours"].append((wall, cpu))
        rec["apply_out"].append(timed(op.apply, pair.fields, np.float32, ours)[:2])  # into a touched buffer
        rec["apply"].append(timed(op.apply, pair.fields, np.float32)[:2])  # into freed memory
        rec["apply_new"].append(timed(apply_into_new_pages, op, pair.fields, out_shape)[:2])
        rec["touch_new"].append(timed(touch_new_pages, out_shape)[:2])
        numba.set_num_threads(1)
        try:
            rec["locate1"].append(timed(locate_points, pair.src_points, pair.src_cells, pair.dst_points)[:2])
        finally:
            numba.set_num_threads(threads)
        for n_threads, key in ((1, "vtk1"), (2, "vtk2")):
            vtk_values = vtk_mask = None
            wall, cpu, (vtk_values, vtk_mask) = timed(vtk_probe, source, targets, n_threads, tolerance)
            rec[key].append((wall, cpu))
        rec["vtkloc1"].append(timed(vtk_probe, scalar_source, targets, 1, tolerance)[:2])

    def show(key: str) -> str:
        return f"{median([w for w, _ in rec[key]]):.3f} s (cpu/wall {median([c / w for w, c in rec[key]]):.2f})"

    t = {k: median([w for w, _ in v]) for k, v in rec.items()}
    each = ", ".join(f"{w:.3f}" for w, _ in rec["ours"])
    print(f"  meshsr build + apply ({threads} numba threads): {show('ours')}; each repeat {each}")
    print(f"  meshsr apply alone: {show('apply')}, into a reused output {show('apply_out')}")
    print(
        f"  memory new to the process (not part of the ratios): meshsr apply into new pages {show('apply_new')}; "
        f"touching as many new pages alone {show('touch_new')}"
    )
    print(f"  meshsr locate alone, 1 thread: {show('locate1')}")
    print(f"  VTK probe {n_comp} comps, 1 thread: {show('vtk1')};  2 threads: {show('vtk2')}")
    print(f"  VTK probe 1 scalar (location), 1 thread: {show('vtkloc1')}")
    best_vtk = min(t["vtk1"], t["vtk2"])
    print(
        f"  ratio VTK best / meshsr build+apply: {best_vtk / t['ours']:.2f}x (goal >= 2);"
        f"  VTK location / meshsr location, 1 thread each: {t['vtkloc1'] / t['locate1']:.2f}x (goal >= 1)  [{load()}]"
    )

    # Agreement: located nodes and values.
    located = ~op.extrapolated
    vtk_out = vtk_values.reshape(len(pair.dst_points), args.frames, args.fields).transpose(1, 0, 2)
    both = located & vtk_mask
    diff = float(np.abs(vtk_out[:, both] - ours[0][:, both]).max()) if both.any() else 0.0
    print(
        f"  agreement: located by meshsr only {int((located & ~vtk_mask).sum())}, by VTK only "
        f"{int((~located & vtk_mask).sum())} of {len(located)}; max |meshsr - VTK| {diff:.1e} "
        f"(fields of size 1, float32)"
    )
    apart = np.flatnonzero(both & (np.abs(vtk_out - ours[0]).max(axis=(0, 2)) > 1e-6))
    if len(apart):
        # Where the two differ, check meshsr's row: weights >= -tol on one cell that reproduce the node,
        # so it is the P1 value of the containing cell (VTK accepts points within its own parametric
        # tolerance of a neighbouring cell and extrapolates from there).
        m = op.matrix
        pos = m.indptr[apart][:, None] + np.arange(pair.src_cells.shape[1])
        weights, verts = m.data[pos], pair.src_points[m.indices[pos]]
        miss = np.abs(np.einsum("nk,nkd->nd", weights, verts) - pair.dst_points[apart]).max()
        print(
            f"  where they differ by > 1e-6 ({len(apart)} nodes): meshsr's weights min {weights.min():.1e}, "
            f"|sum w v - x| <= {miss:.1e}: its cell contains the node, the value is that cell's P1 value"
        )

    # Apply bandwidth against memcpy of the same bytes.
    del vtk_out, vtk_values
    dst_copy = np.zeros_like(ours)
    copy_t = min(timed(np.copyto, dst_copy, ours)[0] for _ in range(args.repeats))
    del dst_copy
    gb = ours.nbytes / 1e9
    print(
        f"  apply bandwidth, bytes written / time: {gb / t['apply_out']:.2f} GB/s into a reused output, "
        f"{gb / t['apply']:.2f} GB/s into freed memory, {gb / t['apply_new']:.2f} GB/s into new pages "
        f"({gb:.2f} GB out); memcpy (np.copyto, touched arrays) {gb / copy_t:.2f} GB/s -> "
        f"{100 * copy_t / t['apply_out']:.0f} % / {100 * copy_t / t['apply']:.0f} % / "
        f"{100 * copy_t / t['apply_new']:.0f} % of it (goal >= 30 %)  [{load()}]"
    )
    result = {"size": size, **t, "vtk_best": best_vtk, "memcpy": copy_t}

    if size == "2d-50k" and args.griddata_calls:
        from scipy.interpolate import griddata

        calls = min(args.griddata_calls, n_comp)
        frames = pair.fields[0]
        start = time.perf_counter()
        for c in range(calls):
            griddata(pair.src_points, frames[c // args.fields, :, c % args.fields], pair.dst_points)
        wall = time.perf_counter() - start
        per_all = wall * n_comp / calls
        print(
            f"  griddata per timestep and field: {per_all:.2f} s for {n_comp} calls ({calls} timed, scaled);"
            f" ratio {per_all / t['ours']:.0f}x (goal >= 500)"
        )
        result["griddata"] = per_all

    del ours, op, source, scalar_source, multi
    gc.collect()
    rss = measure_rss(size, args.frames, args.fields)
    if rss:
        rise = rss["peak"] - rss["before"]
        base = rss["operator"] + rss["output"]
        print(
            f"  peak RSS of build + apply: +{rise / 1e6:.0f} MB over {rss['before'] / 1e6:.0f} MB before "
            f"(operator {rss['operator'] / 1e6:.1f} MB + output {rss['output'] / 1e6:.0f} MB): "
            f"rise {rise / base:.2f}x, whole process {rss['peak'] / base:.2f}x (goal <= 3)"
        )
        result["rss_rise"] = rise / base
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="all", help=f"'small', 'all' or names from {', '.join(SIZES)}")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; medians are printed")
    parser.add_argument("--griddata-calls", type=int, default=15, help="griddata calls timed (5k -> 50k), 0: skip")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.frames, args.fields)
        return
    sizes = GROUPS.get(args.sizes) or args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; use small, all or {', '.join(SIZES)}")

    import numba
    import vtk

    allocator = keep_freed_memory()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    cached, cold = first_call_cost()
    threads = {k: os.environ.get(k, "-") for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    vtk.vtkSMPTools.SetBackend("STDThread")
    print(
        f"cores {os.cpu_count()}, numba {numba.__version__} threads {numba.get_num_threads()} "
        f"(layer setting {numba.config.THREADING_LAYER}), "
        f"VTK {vtk.vtkVersion.GetVTKVersion()} SMP {vtk.vtkSMPTools.GetBackend()}, env {threads}, {load()}"
    )
    print(allocator)
    print(
        f"first build + apply in a fresh process (import included): {cached:.2f} s with the kernel cache, "
        f"{cold:.2f} s compiling (empty NUMBA_CACHE_DIR)"
    )
    vtk.vtkSMPTools.SetBackend("STDThread")
    for size in sizes:
        run_size(size, args)
    print(f"\nnumba threading layer used: {numba.threading_layer()}")
    print(
        f"whole run: {time.perf_counter() - start_wall:.1f} s wall, {time.process_time() - start_cpu:.1f} s cpu"
        f" (this process; children not counted), {load()}"
    )


if __name__ == "__main__":
    main()
