"""Users' simulation output (meshio files) read into one mesh bundle per resolution.

A *source* is one simulation: an XDMF time series (meshio's ``TimeSeriesWriter``: an
``.xdmf`` and the ``.h5`` files it names), a ParaView ``.pvd`` collection, a glob pattern
of per-frame files in any format meshio reads (frames sorted by file name), or one mesh
file (one frame).  A resolution's *entry* in the configuration is one source, or a
mapping ``{simulations: [source, ...], fields: [name, ...]}``.  Reading an entry gives a
:class:`~meshsr.mesh.bundle.MeshBundle` with

* the mesh shared by every simulation and frame (points and cells compared exactly),
* ``fields[s, t, :, :]`` = the selected point data of frame t of simulation s; an array
  with k > 1 columns becomes k components named ``{name}_x, {name}_y(, {name}_z)``
  (``{name}_0 ...`` when k > 3),
* ``times`` from the files: XDMF ``Time`` values, ``.pvd`` timesteps, a per-frame file's
  ``TimeValue``/``TIME`` field data; otherwise the frame index 0, 1, ...

Cells: the cells of the highest dimension in the file are used (lines and faces on the
boundary of a volume mesh are ignored).  Triangles and tetrahedra are kept as they are;
a quadrilateral (a, b, c, d) becomes two triangles and a hexahedron six tetrahedra by
one rule: every quadrilateral face is cut along the diagonal through its vertex of the
lowest global index, and a hexahedron is the cone from its lowest-index vertex v over the
six triangles of the three faces not containing v.  Two cells sharing a face cut it
alike, so the split mesh is conforming, and every split cell lies in its cell (the sum of
their areas or volumes is the cell's for convex cells), so piecewise-linear interpolation
of a linear field stays exact.  Any other cell type is refused, naming it.
"""

from __future__ import annotations

import glob
import os
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshsr.atomic import atomic_path
from meshsr.errors import InputError
from meshsr.mesh.bundle import MeshBundle, validate_bundle

GLOB_CHARS = set("*?[")
COMPONENTS = ("x", "y", "z")
TIME_KEYS = ("timevalue", "time")
# Quadrilateral faces of a hexahedron in meshio/VTK order, each as a cycle of local vertices.
HEX_FACES = ((0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7))
KEPT = {2: {"triangle": 3, "quad": 4}, 3: {"tetra": 4, "hexahedron": 8}}
CELL_DIM = {"vertex": 0, "line": 1, "triangle": 2, "quad": 2, "polygon": 2, "tetra": 3, "hexahedron": 3,
            "wedge": 3, "pyramid": 3}
_CELL_HINT = "export triangles, quadrilaterals, tetrahedra or hexahedra (linear cells), or convert the mesh"


@dataclass
class Frame:
    """One frame as read from a file: its mesh, its point data and its time (None: not in the file)."""

    points: np.ndarray
    cells: list[tuple[str, np.ndarray]]
    point_data: dict[str, np.ndarray]
    time: float | None
    path: Path


def is_glob(source: str) -> bool:
    return bool(GLOB_CHARS & set(str(source)))


def entry_simulations(entry: str | Mapping) -> list[str]:
    """The sources of a ``meshes`` entry, one per simulation."""
    if isinstance(entry, Mapping):
        return [str(s) for s in entry.get("simulations", [])]
    return [str(entry)]


def entry_fields(entry: str | Mapping) -> list[str] | None:
    return list(entry["fields"]) if isinstance(entry, Mapping) and entry.get("fields") else None


def is_bundle_entry(entry: str | Mapping) -> bool:
    """An ``.npz`` path, read in place (contract 1); anything else is ingested from meshio sources."""
    return isinstance(entry, str) and entry.endswith(".npz") and not is_glob(entry)


def _xdmf_is_series(root: ET.Element) -> bool:
    return any(g.get("GridType") == "Collection" and g.get("CollectionType") == "Temporal" for g in root.iter("Grid"))


def _xml_root(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(path, f"cannot read it as XML ({exc}); write it again with meshio or ParaView") from None


def _xdmf_data_files(path: Path) -> list[Path]:
    """The heavy-data files an XDMF file names (HDF5 relative to the XDMF file, as meshio reads them)."""
    files: list[Path] = []
    for item in _xml_root(path).iter("DataItem"):
        text = (item.text or "").strip()
        if item.get("Format") == "HDF" and text:
            name = text.split(":")[0]
            files.append(Path(os.path.normpath(path.parent / name)))
        elif item.get("Format") == "Binary" and text:
            files.append(Path(text))
    return list(dict.fromkeys(files))


def _pvd_datasets(path: Path) -> list[tuple[float | None, Path]]:
    root = _xml_root(path)
    sets = list(root.iter("DataSet"))
    if root.tag != "VTKFile" or not sets:
        raise InputError(path, "not a ParaView collection (no VTKFile DataSet entries); write one DataSet per frame")
    parts = {s.get("part", "0") for s in sets}
    if len(parts) > 1:
        raise InputError(path, f"multi-part collection (parts {sorted(parts)}); merge the parts into one mesh per "
                         "frame")
    out = []
    for s in sets:
        if not s.get("file"):
            raise InputError(path, "a DataSet has no 'file'; name one mesh file per frame")
        step = s.get("timestep")
        out.append((float(step) if step is not None else None, Path(os.path.normpath(path.parent / s.get("file")))))
    return out


def _glob_files(source: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
    if not files:
        raise InputError(source, "glob pattern matches no file; correct the pattern or write the frames there")
    return files


def source_files(source: str) -> list[Path]:
    """Every file that reading ``source`` opens (what an ingestion job depends on)."""
    if is_glob(source):
        return _glob_files(source)
    path = Path(source)
    if not path.is_file():
        raise InputError(path, "file does not exist; correct the path or write the file there")
    if path.suffix == ".xdmf":
        return [path, *_xdmf_data_files(path)]
    if path.suffix == ".pvd":
        files = [f for _, f in _pvd_datasets(path)]
        return [path, *dict.fromkeys(files)]
    return [path]


def entry_files(entry: str | Mapping) -> list[str]:
    """Every file that ingesting a ``meshes`` entry reads, in order, without repeats."""
    return list(dict.fromkeys(str(f) for s in entry_simulations(entry) for f in source_files(s)))


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _read_mesh(path: Path):
    import meshio

    if not path.is_file():
        raise InputError(path, "file does not exist; correct the path or write the file there")
    try:
        return meshio.read(path)
    except Exception as exc:  # meshio raises many types for unreadable files
        raise InputError(path, f"meshio cannot read it ({_reason(exc)}); write it in a format meshio reads") from None


def _file_time(mesh) -> float | None:
    for key, value in mesh.field_data.items():
        if key.lower() in TIME_KEYS and np.size(value) == 1:
            return float(np.asarray(value).ravel()[0])
    return None


def _frame(path: Path, time: float | None = None) -> Frame:
    mesh = _read_mesh(path)
    cells = [(block.type, np.asarray(block.data)) for block in mesh.cells]
    return Frame(np.asarray(mesh.points), cells, dict(mesh.point_data), time if time is not None else
                 _file_time(mesh), path)


def _xdmf_frames(path: Path) -> list[Frame]:
    from meshio.xdmf import TimeSeriesReader

    if not _xdmf_is_series(_xml_root(path)):
        return [_frame(path)]
    missing = [f for f in _xdmf_data_files(path) if not f.is_file()]
    if missing:
        raise InputError(path, f"its data file {missing[0]} does not exist; keep the .h5 file next to the .xdmf "
                         "(meshio's TimeSeriesWriter writes it to the working directory)")
    try:
        with TimeSeriesReader(path) as reader:
            points, blocks = reader.read_points_cells()
            cells = [(block.type, np.asarray(block.data)) for block in blocks]
            frames = []
            for k in range(reader.num_steps):
                t, point_data, _ = reader.read_data(k)
                frames.append(Frame(np.asarray(points), cells, dict(point_data), t, path))
    except InputError:
        raise
    except Exception as exc:  # h5py and meshio raise many types for broken files
        raise InputError(path, f"cannot read the XDMF time series ({_reason(exc)}); write it with meshio's "
                         "TimeSeriesWriter") from None
    if not frames:
        raise InputError(path, "time series holds no time step; write at least one step")
    return frames


def read_source(source: str) -> list[Frame]:
    """The frames of one simulation, in time order."""
    if is_glob(source):
        return [_frame(p) for p in _glob_files(source)]
    path = Path(source)
    if not path.is_file():
        raise InputError(path, "file does not exist; correct the path or write the file there")
    if path.suffix == ".xdmf":
        return _xdmf_frames(path)
    if path.suffix == ".pvd":
        return [_frame(f, t) for t, f in _pvd_datasets(path)]
    return [_frame(path)]


def _split_quads(quads: np.ndarray) -> np.ndarray:
    """Two triangles per quadrilateral, cut along the diagonal through its lowest-index vertex."""
    k = np.argmin(quads, axis=1)
    rolled = quads[np.arange(len(quads))[:, None], (k[:, None] + np.arange(4)) % 4]
    return np.concatenate([rolled[:, [0, 1, 2]], rolled[:, [0, 2, 3]]])


def _split_hexahedra(hexes: np.ndarray) -> np.ndarray:
    """Six tetrahedra per hexahedron: the cone from its lowest-index vertex over the faces without it."""
    apex = np.argmin(hexes, axis=1)
    tets = []
    for v in range(8):
        group = hexes[apex == v]
        if not len(group):
            continue
        for face in (f for f in HEX_FACES if v not in f):
            tri = _split_quads(group[:, list(face)])
            tets.append(np.column_stack([np.tile(group[:, v], 2), tri]))
    return np.concatenate(tets) if tets else np.empty((0, 4), dtype=np.int64)


def simplices(cells: Sequence[tuple[str, np.ndarray]], path: str | Path) -> tuple[int, np.ndarray]:
    """(dimension, simplices) of a file's cell blocks; refuses cell types other than those of KEPT."""
    types = [name for name, _ in cells]
    dims = [CELL_DIM.get(name.rstrip("0123456789"), -1) for name in types]
    if not types or max(dims) < 2:
        found = ", ".join(dict.fromkeys(types)) or "none"
        raise InputError(path, f"no 2D or 3D cells (cell types: {found}); {_CELL_HINT}")
    dim = max(dims)
    if dim == -1 or any(d == -1 for d in dims):
        other = next(t for t, d in zip(types, dims, strict=True) if d == -1)
        raise InputError(path, f"cell type {other!r} is not supported; {_CELL_HINT}")
    blocks = []
    for (name, data), d in zip(cells, dims, strict=True):
        if d != dim:
            continue  # boundary lines or faces of the mesh
        if name not in KEPT[dim]:
            raise InputError(path, f"cell type {name!r} is not supported; {_CELL_HINT}")
        data = np.asarray(data, dtype=np.int64).reshape(len(data), -1)
        blocks.append(data if name in ("triangle", "tetra") else
                      _split_quads(data) if name == "quad" else _split_hexahedra(data))
    return dim, np.concatenate(blocks)


def _mesh_points(points: np.ndarray, dim: int, path: Path) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < dim:
        raise InputError(path, f"points of shape {points.shape} for {dim}D cells; write {dim} coordinates per point")
    extra = points[:, dim:]
    if extra.size and np.ptp(extra, axis=0).max() > 0:
        raise InputError(path, f"{dim}D cells whose points vary in coordinate {dim + 1}: a surface in space, not "
                         f"supported; write a planar mesh (constant z) or a volume mesh")
    return np.ascontiguousarray(points[:, :dim])


def _columns(name: str, values: np.ndarray, n: int, path: Path) -> list[tuple[str, np.ndarray]]:
    values = np.asarray(values)
    if values.shape[:1] != (n,) or not np.issubdtype(values.dtype, np.number):
        raise InputError(path, f"point data {name!r} has shape {values.shape} and type {values.dtype} for {n} points; "
                         "write one number (or vector) per point")
    values = values.reshape(n, -1).astype(np.float64)
    k = values.shape[1]
    if k == 1:
        return [(name, values[:, 0])]
    suffixes = COMPONENTS[:k] if k <= 3 else [str(j) for j in range(k)]
    return [(f"{name}_{s}", values[:, j]) for j, s in enumerate(suffixes)]


def _frame_fields(frame: Frame, selected: list[str] | None) -> tuple[list[str], np.ndarray]:
    available = list(frame.point_data)
    names = selected if selected is not None else available
    missing = [n for n in names if n not in frame.point_data]
    if missing:
        raise InputError(frame.path, f"no point data {missing[0]!r} (point data: {', '.join(available) or 'none'}); "
                         "correct 'fields' in the config or write that field as point data")
    if not names:
        raise InputError(frame.path, "no point data to use as fields; write the fields as point data")
    columns = [c for n in names for c in _columns(n, frame.point_data[n], len(frame.points), frame.path)]
    values = np.stack([v for _, v in columns], axis=-1)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(frame.path, f"point data hold {bad} NaN/Inf values; fix or drop them in the solver output")
    return [c for c, _ in columns], values


def _same_mesh(points: np.ndarray, cells: np.ndarray, ref: tuple[np.ndarray, np.ndarray, Path], path: Path,
               what: str) -> None:
    ref_points, ref_cells, ref_path = ref
    if points.shape != ref_points.shape or cells.shape != ref_cells.shape:
        problem = f"{len(points)} points and {len(cells)} cells, {ref_path} has {len(ref_points)} and {len(ref_cells)}"
    elif not np.array_equal(points, ref_points):
        problem = f"point {int(np.argmax((points != ref_points).any(axis=1)))} differs from {ref_path}"
    elif not np.array_equal(cells, ref_cells):
        problem = f"cell {int(np.argmax((cells != ref_cells).any(axis=1)))} differs from {ref_path}"
    else:
        return
    raise InputError(path, f"{what} has another mesh than the first ({problem}); every simulation and frame of one "
                     "resolution must use one mesh (same points and cells in the same order)")


def read_entry(entry: str | Mapping) -> MeshBundle:
    """The validated bundle of a ``meshes`` entry (module docstring); InputError naming the file at fault."""
    sources = entry_simulations(entry)
    if not sources:
        raise InputError(None, "'simulations' is empty; list one meshio source per simulation")
    selected = entry_fields(entry)
    ref = None
    names: list[str] | None = None
    fields, times = [], None
    for s, source in enumerate(sources):
        frames = read_source(source)
        values, frame_times = [], []
        for t, frame in enumerate(frames):
            dim, cells = simplices(frame.cells, frame.path)
            points = _mesh_points(frame.points, dim, frame.path)
            what = f"frame {t} of simulation {s}"
            if ref is None:
                ref = (points, cells, frame.path)
            else:
                _same_mesh(points, cells, ref, frame.path, what)
            frame_names, frame_values = _frame_fields(frame, selected)
            if names is None:
                names, first = frame_names, frame.path
            elif frame_names != names:
                raise InputError(frame.path, f"{what} has fields {frame_names}, {first} has {names}; write the same "
                                 "point data in every frame and simulation, or choose them with 'fields'")
            values.append(frame_values)
            frame_times.append(frame.time if frame.time is not None else float(t))
        if fields and len(values) != len(fields[0]):
            raise InputError(source, f"simulation {s} has {len(values)} frames, simulation 0 has {len(fields[0])}; "
                             "write every simulation with the same number of frames")
        frame_times = np.asarray(frame_times, dtype=np.float64)
        if times is not None and not np.array_equal(frame_times, times):
            raise InputError(source, f"simulation {s} has other frame times than simulation 0 ({frame_times[:4]}... vs "
                             f"{times[:4]}...); write every simulation at the same times")
        times = frame_times
        fields.append(np.stack(values))
    points, cells, path = ref
    bundle = MeshBundle(points=points, cells=cells, fields=np.stack(fields), field_names=names, times=times)
    return validate_bundle(bundle, path)


def save_canonical(path: str | Path, bundle: MeshBundle) -> None:
    """Write ``bundle`` as a contract-1 ``.npz``, atomically and byte for byte the same for the same arrays.

    ``np.savez`` stamps each member with the time of writing; fixed stamps make the file's
    digest (what the pair caches are keyed on) depend on the arrays alone.
    """
    arrays = {
        "points": np.ascontiguousarray(bundle.points, dtype=np.float64),
        "cells": np.ascontiguousarray(bundle.cells, dtype=np.int64),
        "fields": np.ascontiguousarray(bundle.fields),
        "field_names": np.array(bundle.field_names, dtype=str),
    }
    if bundle.times is not None:
        arrays["times"] = np.ascontiguousarray(bundle.times, dtype=np.float64)
    with atomic_path(path, suffix=".npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)
