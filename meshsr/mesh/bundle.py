"""Mesh bundles (contract 1): points, cells and fields of S simulations x T frames.

A bundle is an ``.npz`` holding

* ``points``  float (N, D), D = 2 or 3
* ``cells``   int (M, D+1), 0-based; optional, a Delaunay triangulation when absent
* ``fields``  float32/float64 (S, T, N, F)
* ``field_names`` str (F,) and ``times`` float64 (T,), both optional

Any other format that meshio reads is accepted as a single snapshot: its triangles or
tetrahedra are the cells and its point data become the F field components (S = T = 1).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meshsr.atomic import atomic_savez
from meshsr.errors import InputError

REQUIRED_KEYS = ("points", "fields")


@dataclass
class MeshBundle:
    points: np.ndarray
    cells: np.ndarray
    fields: np.ndarray
    field_names: list[str] = field(default_factory=list)
    times: np.ndarray | None = None

    @property
    def n_nodes(self) -> int:
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def n_simulations(self) -> int:
        return int(self.fields.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.fields.shape[1])

    @property
    def n_fields(self) -> int:
        return int(self.fields.shape[3])


def delaunay_cells(points: np.ndarray) -> np.ndarray:
    """Delaunay simplices of ``points`` (used only when a bundle has no ``cells``)."""
    from scipy.spatial import Delaunay

    return Delaunay(points).simplices.astype(np.int64)


def validate_bundle(bundle: MeshBundle, path: str | Path) -> MeshBundle:
    """Check shapes, dtypes, finiteness and index ranges; raise :class:`InputError` naming ``path``."""
    pts, cells, fields = bundle.points, bundle.cells, bundle.fields
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or pts.shape[0] == 0:
        raise InputError(path, f"'points' must have shape (N, 2) or (N, 3), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.floating) or not np.isfinite(pts).all():
        raise InputError(path, "'points' must be finite floating-point numbers")
    n, d = pts.shape
    if cells.ndim != 2 or cells.shape[1] != d + 1 or cells.shape[0] == 0:
        raise InputError(path, f"'cells' must have shape (M, {d + 1}) for {d}D points, got {cells.shape}")
    if not np.issubdtype(cells.dtype, np.integer):
        raise InputError(path, f"'cells' must be integer, got {cells.dtype}")
    if cells.min() < 0 or cells.max() >= n:
        raise InputError(path, f"'cells' index out of range [0, {n}): min {cells.min()}, max {cells.max()}")
    if fields.ndim != 4 or fields.shape[2] != n:
        raise InputError(path, f"'fields' must have shape (S, T, {n}, F), got {fields.shape}")
    if fields.dtype not in (np.float32, np.float64):
        raise InputError(path, f"'fields' must be float32 or float64, got {fields.dtype}")
    if min(fields.shape) == 0:
        raise InputError(path, f"'fields' is empty: shape {fields.shape}")
    if not np.isfinite(fields).all():
        bad = int((~np.isfinite(fields)).sum())
        raise InputError(path, f"'fields' holds {bad} NaN/Inf values")
    if bundle.field_names and len(bundle.field_names) != fields.shape[3]:
        raise InputError(path, f"'field_names' has {len(bundle.field_names)} names for F={fields.shape[3]}")
    if bundle.times is not None and bundle.times.shape != (fields.shape[1],):
        raise InputError(path, f"'times' must have shape ({fields.shape[1]},), got {bundle.times.shape}")
    return bundle


def _load_npz(path: Path) -> MeshBundle:
    if not zipfile.is_zipfile(path):
        raise InputError(path, "cannot read npz: not a zip archive (truncated or not an .npz)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in REQUIRED_KEYS if k not in data.files]
            if missing:
                raise InputError(path, f"missing required array(s) {missing}; found {sorted(data.files)}")
            arrays = {k: data[k] for k in data.files}
    except InputError:
        raise
    except ValueError as exc:  # object arrays need pickle, which we never load
        raise InputError(path, "not a plain-array npz: it holds pickled objects, which meshsr never loads") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(path, f"cannot read npz: {exc}") from None
    points = np.asarray(arrays["points"])
    cells = arrays.get("cells")
    if cells is None:
        if points.ndim != 2 or points.shape[1] not in (2, 3):
            raise InputError(path, f"'points' must have shape (N, 2) or (N, 3), got {points.shape}")
        cells = delaunay_cells(points.astype(np.float64))
    names = arrays.get("field_names")
    times = arrays.get("times")
    return MeshBundle(
        points=points,
        cells=np.asarray(cells),
        fields=np.asarray(arrays["fields"]),
        field_names=[] if names is None else [str(x) for x in np.atleast_1d(names)],
        times=None if times is None else np.asarray(times, dtype=np.float64),
    )


def _load_meshio(path: Path) -> MeshBundle:
    import meshio

    try:
        mesh = meshio.read(path)
    except Exception as exc:  # meshio raises many types for unreadable files
        raise InputError(path, f"meshio cannot read it: {exc}") from None
    d = 3 if any(b.type == "tetra" for b in mesh.cells) else 2
    cell_type = "tetra" if d == 3 else "triangle"
    blocks = [b.data for b in mesh.cells if b.type == cell_type]
    if not blocks:
        raise InputError(path, f"no {cell_type} cells in mesh")
    points = np.asarray(mesh.points, dtype=np.float64)[:, :d]
    names, columns = [], []
    for name, values in mesh.point_data.items():
        values = np.asarray(values, dtype=np.float64).reshape(len(points), -1)
        for j in range(values.shape[1]):
            names.append(name if values.shape[1] == 1 else f"{name}_{j}")
            columns.append(values[:, j])
    if not columns:
        raise InputError(path, "mesh has no point data to use as fields")
    fields = np.stack(columns, axis=-1)[None, None]
    return MeshBundle(points=points, cells=np.concatenate(blocks).astype(np.int64), fields=fields, field_names=names)


def load_bundle(path: str | Path) -> MeshBundle:
    """Read and validate a bundle from ``.npz`` or any meshio-readable mesh file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    bundle = _load_npz(path) if path.suffix == ".npz" else _load_meshio(path)
    bundle = validate_bundle(bundle, path)
    bundle.points = bundle.points.astype(np.float64, copy=False)
    bundle.cells = bundle.cells.astype(np.int64, copy=False)
    return bundle


def save_bundle(path: str | Path, bundle: MeshBundle) -> None:
    """Write ``bundle`` atomically as an uncompressed ``.npz`` in the contract-1 layout."""
    arrays: dict[str, np.ndarray] = {
        "points": np.asarray(bundle.points, dtype=np.float64),
        "cells": np.asarray(bundle.cells, dtype=np.int64),
        "fields": bundle.fields,
    }
    if bundle.field_names:
        arrays["field_names"] = np.array(bundle.field_names, dtype=str)
    if bundle.times is not None:
        arrays["times"] = np.asarray(bundle.times, dtype=np.float64)
    atomic_savez(path, **arrays)


def check_compatible(bundles: dict[str, MeshBundle]) -> None:
    """All bundles of one configuration must share S, T and F."""
    shapes = {name: (b.n_simulations, b.n_frames, b.n_fields) for name, b in bundles.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{k}: S,T,F={v}" for k, v in shapes.items())
        raise InputError(None, f"mesh bundles disagree on (S, T, F): {listing}")


def peek_shape(path: str | Path, known: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """(S, T) of a mesh input without loading it: ``known`` if given, the ``fields`` header of
    an ``.npz`` bundle, (1, 1) for other (single-snapshot) formats, None when it cannot be told."""
    if known is not None:
        return known
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix != ".npz":
        return (1, 1)
    try:
        with zipfile.ZipFile(path) as zf, zf.open("fields.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(fh)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # the job's own reader reports what is wrong with the file
    return (int(shape[0]), int(shape[1])) if len(shape) == 4 else None
