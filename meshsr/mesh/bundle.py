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
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meshsr.atomic import atomic_savez
from meshsr.errors import InputError
from meshsr.mesh.geometry import DEGENERACY, degenerate_cells, longest_sides
from meshsr.mesh.npz import MemberError, member_headers

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


def delaunay_cells(points: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Delaunay simplices of ``points`` (used only when a bundle has no ``cells``).

    ``points`` must already have passed :func:`check_points`; inputs qhull cannot triangulate
    (too few, collinear or coplanar points) raise :class:`InputError` naming ``path``.
    """
    from scipy.spatial import Delaunay, QhullError

    _check_triangulable(points, path)
    try:
        return Delaunay(points).simplices.astype(np.int64)
    except QhullError as exc:  # last resort: nearly flat inputs that pass the rank test
        reason = str(exc).strip().splitlines()[0]
        problem = f"no 'cells' given and qhull cannot triangulate the points ({reason})"
        raise InputError(path, f"{problem}; {_NO_CELLS_HINT}") from None


_NO_CELLS_HINT = "add a 'cells' array, or check the coordinates (a column missing, repeated or constant?)"
_RESCALE_HINT = "rescale the mesh (e.g. to units in which it spans about 1)"


def _check_triangulable(points: np.ndarray, path: str | Path | None) -> None:
    n, d = points.shape
    if n < d + 1:
        problem = f"no 'cells' given and only {n} points: a {d}D mesh needs at least {d + 1}"
        raise InputError(path, f"{problem}; check the file holds the whole mesh")
    rank = np.linalg.matrix_rank(points - points.mean(axis=0))
    if rank < d:
        where = ("at one point", "on one line", "in one plane")[rank]
        problem = f"no 'cells' given and all {n} points lie {where}: nothing to triangulate in {d}D"
        raise InputError(path, f"{problem}; check the coordinates (a column missing, repeated or constant?)")


def check_points(points: np.ndarray, path: str | Path | None) -> None:
    """Shape, dtype, finiteness and floating-point extent of a bundle's ``points``."""
    if points.ndim == 2 and points.shape[0] == 0:
        raise InputError(path, f"empty mesh: 'points' has no rows (shape {points.shape}); export the mesh's nodes")
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise InputError(path, f"'points' must have shape (N, 2) or (N, 3), got {points.shape}; save one row of x, y "
                         "(and z) per node")
    if not np.issubdtype(points.dtype, np.floating):
        raise InputError(path, f"'points' must be floating-point numbers, got {points.dtype}; save them as float64")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        problem = f"'points' holds NaN/Inf at {int(bad.sum())} of {len(points)} nodes (first: node {first})"
        raise InputError(path, f"{problem}; fix or remove those nodes")
    coords = points.astype(np.float64, copy=False)
    with np.errstate(over="ignore"):
        span = np.max(coords.max(axis=0) - coords.min(axis=0))
        bound = (np.sqrt(points.shape[1]) * span) ** points.shape[1]  # |det E| <= this for every cell
    if not np.isfinite(bound):
        raise InputError(path, f"coordinates span {span:.3g}: cell volumes overflow floating point; {_RESCALE_HINT}")


def _check_cells(cells: np.ndarray, n: int, d: int, path: str | Path) -> None:
    if cells.ndim == 2 and cells.shape[0] == 0:
        raise InputError(path, f"empty mesh: 'cells' has no rows (shape {cells.shape}); export the mesh with its cells")
    if cells.ndim != 2 or cells.shape[1] != d + 1:
        kind = "triangles" if d == 2 else "tetrahedra"
        raise InputError(path, f"'cells' must have shape (M, {d + 1}) for {d}D points, got {cells.shape}; save "
                         f"{kind}, {d + 1} node indices per row")
    if not np.issubdtype(cells.dtype, np.integer):
        raise InputError(path, f"'cells' must be integer, got {cells.dtype}; save the node indices as integers")
    if cells.min() < 0 or cells.max() >= n:
        raise InputError(path, f"'cells' index out of range [0, {n}): min {cells.min()}, max {cells.max()}; number "
                         "the nodes from 0, in the order of 'points'")


def _check_fields(bundle: MeshBundle, n: int, path: str | Path) -> None:
    fields = bundle.fields
    if fields.ndim != 4 or fields.shape[2] != n:
        raise InputError(path, f"'fields' must have shape (S, T, {n}, F), got {fields.shape}; save simulations x "
                         "frames x nodes x field components, one value per node of 'points'")
    if fields.dtype not in (np.float32, np.float64):
        raise InputError(path, f"'fields' must be float32 or float64, got {fields.dtype}; save them as floats")
    if min(fields.shape) == 0:
        raise InputError(path, f"'fields' is empty: shape {fields.shape}; export at least one simulation, frame and "
                         "field")
    if not np.isfinite(fields).all():
        bad = int((~np.isfinite(fields)).sum())
        raise InputError(path, f"'fields' holds {bad} NaN/Inf values; fix or drop those values in the solver output")
    if bundle.field_names and len(bundle.field_names) != fields.shape[3]:
        raise InputError(path, f"'field_names' has {len(bundle.field_names)} names for F={fields.shape[3]}; give one "
                         "name per field component, or leave 'field_names' out")
    if bundle.times is not None and bundle.times.shape != (fields.shape[1],):
        raise InputError(path, f"'times' must have shape ({fields.shape[1]},), got {bundle.times.shape}; give one time "
                         "per frame, or leave 'times' out")


def _first(indices: np.ndarray, k: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:k])
    return f"[{shown}{', ...' if len(indices) > k else ''}]"


def _check_cell_scale(points: np.ndarray, cells: np.ndarray, path: str | Path) -> None:
    """Cell volumes must not underflow, or the degeneracy rule could not tell a cell from a point."""
    d = points.shape[1]
    sides = longest_sides(points, cells)
    with np.errstate(under="ignore"):
        tiny = (sides > 0) & (sides**d < np.finfo(float).tiny / DEGENERACY)
    if tiny.any():
        smallest = sides[tiny].min()
        raise InputError(path, f"cells as small as {smallest:.3g} across: their volumes underflow floating point; "
                         f"{_RESCALE_HINT}")


def _check_duplicates(points: np.ndarray, cells: np.ndarray, path: str | Path) -> None:
    """No two nodes used by the cells may share a coordinate: the mesh would be tangled."""
    used = np.unique(cells)
    coords = points[used] + 0.0  # -0.0 -> 0.0
    order = np.lexsort(coords.T[::-1])
    same = (coords[order[1:]] == coords[order[:-1]]).all(axis=1)
    if not same.any():
        return
    pairs = np.sort(np.column_stack([used[order[:-1]][same], used[order[1:]][same]]), axis=1)
    i, j = pairs[np.lexsort(pairs.T[::-1])[0]]
    where = tuple(float(x) for x in points[i])
    problem = f"duplicate points: {int(same.sum())} point(s) used by the cells repeat another's coordinates"
    raise InputError(path, f"{problem} (first: points {i} and {j}, both at {where}); merge them and renumber the cells")


def _check_degenerate(points: np.ndarray, cells: np.ndarray, path: str | Path) -> None:
    bad = degenerate_cells(points, cells)
    if len(bad):
        measure = "area" if points.shape[1] == 2 else "volume"
        problem = f"{len(bad)} of {len(cells)} cells are degenerate (zero {measure}; first: cells {_first(bad)})"
        raise InputError(path, f"{problem}; remove or repair them in the mesh generator (meshsr refuses rather than "
                         "drops them: dropping a cell is not exact in general)")


def validate_bundle(bundle: MeshBundle, path: str | Path) -> MeshBundle:
    """Check shapes, dtypes, finiteness, index ranges and cell geometry; raise :class:`InputError` naming ``path``."""
    check_points(bundle.points, path)
    n, d = bundle.points.shape
    _check_cells(bundle.cells, n, d, path)
    _check_fields(bundle, n, path)
    points = bundle.points.astype(np.float64, copy=False)
    _check_cell_scale(points, bundle.cells, path)
    _check_duplicates(points, bundle.cells, path)
    _check_degenerate(points, bundle.cells, path)
    return bundle


BUNDLE_KEYS = ("points", "cells", "fields", "field_names", "times")
_READ_ERRORS = (OSError, EOFError, KeyError, NotImplementedError, RuntimeError, zipfile.BadZipFile, zlib.error)
_REEXPORT_HINT = "re-export the bundle with numpy.savez from plain numeric arrays"


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The bundle's arrays, each header checked (size, no objects) before numpy reads it."""
    try:
        with zipfile.ZipFile(path) as zf:
            headers = member_headers(zf, BUNDLE_KEYS)
            found = sorted(name.removesuffix(".npy") for name in zf.namelist())
        missing = [k for k in REQUIRED_KEYS if k not in headers]
        if missing:
            raise InputError(path, f"missing required array(s) {missing}, found {found}; a bundle needs 'points' and "
                             "'fields' (README, contract 1)")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in headers}
    except MemberError as exc:
        raise InputError(path, f"cannot read npz: {exc}; {_REEXPORT_HINT}") from None
    except MemoryError:
        raise InputError(path, "cannot read npz: its arrays do not fit in memory; use a machine with more") from None
    except (ValueError, *_READ_ERRORS) as exc:
        raise InputError(path, f"cannot read npz: {exc}; {_REEXPORT_HINT}") from None


def _load_npz(path: Path) -> MeshBundle:
    if not zipfile.is_zipfile(path):
        raise InputError(path, f"cannot read npz: not a zip archive (truncated or not an .npz); {_REEXPORT_HINT}")
    arrays = _read_npz_arrays(path)
    points = np.asarray(arrays["points"])
    cells = arrays.get("cells")
    if cells is None:
        check_points(points, path)
        cells = delaunay_cells(points.astype(np.float64), path)
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
        reason = " ".join(str(exc).split())[:200]
        raise InputError(path, f"meshio cannot read it ({reason}); convert it to an .npz bundle (README, contract 1) "
                         "or a format meshio reads") from None
    d = 3 if any(b.type == "tetra" for b in mesh.cells) else 2
    cell_type = "tetra" if d == 3 else "triangle"
    blocks = [b.data for b in mesh.cells if b.type == cell_type]
    if not blocks:
        raise InputError(path, f"no {cell_type} cells in mesh; export the mesh with {cell_type} cells")
    points = np.asarray(mesh.points, dtype=np.float64)[:, :d]
    names, columns = [], []
    for name, values in mesh.point_data.items():
        values = np.asarray(values, dtype=np.float64).reshape(len(points), -1)
        for j in range(values.shape[1]):
            names.append(name if values.shape[1] == 1 else f"{name}_{j}")
            columns.append(values[:, j])
    if not columns:
        raise InputError(path, "mesh has no point data to use as fields; export the fields as point data")
    fields = np.stack(columns, axis=-1)[None, None]
    return MeshBundle(points=points, cells=np.concatenate(blocks).astype(np.int64), fields=fields, field_names=names)


def load_bundle(path: str | Path) -> MeshBundle:
    """Read and validate a bundle from ``.npz`` or any meshio-readable mesh file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist; check the path")
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
        raise InputError(None, f"mesh bundles disagree on (S, T, F): {listing}; export every resolution with the "
                         "same simulations, frames and fields")


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
        with zipfile.ZipFile(path) as zf:
            header = member_headers(zf, ("fields",)).get("fields")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # the job's own reader reports what is wrong with the file
    return header.shape[:2] if header is not None and len(header.shape) == 4 else None
