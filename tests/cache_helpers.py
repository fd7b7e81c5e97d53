"""Helpers for the cache tests: small user bundles, damaged cache files, file snapshots."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from meshsr.mesh.bundle import MeshBundle, save_bundle
from meshsr.provenance.digests import RACY_WINDOW_S


def lattice_bundle(
    n_side: int, n_sim: int = 2, n_frames: int = 3, n_fields: int = 1, seed: int = 0, scale: float = 1.0
) -> MeshBundle:
    """A jittered n_side x n_side lattice on the unit square (Delaunay cells) with smooth fields."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 1, n_side), np.linspace(0, 1, n_side))
    points = np.column_stack([x.ravel(), y.ravel()])
    interior = (points > 0).all(axis=1) & (points < 1).all(axis=1)
    points[interior] += rng.uniform(-0.2, 0.2, (interior.sum(), 2)) / n_side
    from scipy.spatial import Delaunay

    cells = Delaunay(points).simplices.astype(np.int64)
    s = np.arange(n_sim)[:, None, None, None]
    t = np.arange(n_frames)[None, :, None, None]
    f = np.arange(n_fields)[None, None, None, :]
    px, py = points[:, 0][None, None, :, None], points[:, 1][None, None, :, None]
    fields = scale * np.sin(2 * np.pi * px + s + f) * np.cos(np.pi * py) * (1 + 0.1 * t)
    return MeshBundle(points=points, cells=cells, fields=fields.astype(np.float64))


def write_bundle(path: Path, n_side: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_bundle(path, lattice_bundle(n_side, **kwargs))
    return path


def user_inputs(root: Path, sides: dict[str, int], **kwargs) -> dict[str, str]:
    """Bundles under ``root/inputs`` (user inputs, outside results/); config ``meshes`` value."""
    meshes = {}
    for i, (name, n_side) in enumerate(sides.items()):
        write_bundle(root / "inputs" / f"{name}.npz", n_side, seed=i, **kwargs)
        meshes[name] = f"inputs/{name}.npz"
    return meshes


def change_content(path: Path, factor: float = 1.5) -> None:
    """Rewrite a bundle with scaled fields (same shapes, same size, new bytes)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["fields"] = arrays["fields"] * factor
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def cp_p(src: Path, dst: Path) -> None:
    """``cp -p``: copy bytes and keep the source's mtime."""
    subprocess.run(["cp", "-p", str(src), str(dst)], check=True)


def set_old_mtime(path: Path, when: float = 1_000_000_000.0) -> None:
    os.utime(path, (when, when))


def wait_until_quiet(*paths: Path) -> None:
    """Sleep until each file's last change lies RACY_WINDOW_S in the past, so its digest can be memoised."""
    for path in paths:
        st = path.stat()
        remaining = st.st_ctime + RACY_WINDOW_S + 0.05 - time.time()
        if remaining > 0:
            time.sleep(remaining)


def snapshot(*paths: Path) -> dict[Path, tuple[str, int]]:
    """sha256 and mtime_ns of each file."""
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def random_bytes(path: Path, n: int = 20_000, seed: int = 1) -> None:
    path.write_bytes(np.random.default_rng(seed).bytes(n))


class _Trap:
    """Unpickling it creates ``marker``: proof that a reader executed pickled code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (shutil.copyfile, (os.devnull, self.marker))


def pickled_object_npz(path: Path, marker: Path, template: Path | None = None, key: str = "meta") -> None:
    """An npz whose ``key`` is an object array: loading it with pickle would create ``marker``.

    With ``template`` (a valid cache) every other array is the template's, so only the
    object array makes the file invalid.
    """
    arrays: dict[str, np.ndarray] = {}
    if template is not None:
        with np.load(template, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    trap = np.empty((), dtype=object)
    trap[()] = _Trap(str(marker))
    arrays[key] = trap
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def trap_fires(tmp: Path) -> bool:
    """Whether unpickling a trap really creates its marker (so finding no marker means something)."""
    marker = tmp / "trap-check"
    pickle.loads(pickle.dumps(_Trap(str(marker))))
    return marker.exists()


def rewrite_npz(path: Path, **changes) -> None:
    """Rewrite an npz with some arrays replaced (None: removed); keeps it a plain npz."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
