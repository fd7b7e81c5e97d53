"""Time series on one mesh as XDMF 3 + HDF5 (what ParaView and meshio open), and the upsampled bundle.

``write_time_series(path, ...)`` writes ``path`` (``name.xdmf``, the XML) and ``name.h5``
beside it (the arrays); the XML names the HDF5 file by its bare name, so the two files can
be moved together.  The layout is a temporal collection of uniform grids, one per frame,
each pointing at the same ``/mesh/points`` and ``/mesh/cells`` datasets and at its own
``/frames/{t}/{array}`` datasets (float32, one value per node).  meshio's
``TimeSeriesWriter`` writes its ``.h5`` into the working directory; this writer never does.

Both files are written to a temporary directory beside ``path`` and renamed into place,
the ``.h5`` first: a crash leaves no half-written file under either name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from meshsr.atomic import atomic_savez

TOPOLOGY = {2: "Triangle", 3: "Tetrahedron"}  # simplices by spatial dimension
GEOMETRY = {2: "XY", 3: "XYZ"}


def _data_item(parent: ET.Element, h5_name: str, dataset: str, array: np.ndarray) -> None:
    kind = "Int" if array.dtype.kind in "iu" else "Float"
    item = ET.SubElement(
        parent,
        "DataItem",
        DataType=kind,
        Precision=str(array.dtype.itemsize),
        Dimensions=" ".join(str(n) for n in array.shape),
        Format="HDF",
    )
    item.text = f"{h5_name}:{dataset}"


def _xdmf_tree(
    h5_name: str,
    points: np.ndarray,
    cells: np.ndarray,
    times: np.ndarray,
    point_data: dict[str, np.ndarray],
) -> ET.ElementTree:
    root = ET.Element("Xdmf", Version="3.0")
    domain = ET.SubElement(root, "Domain")
    series = ET.SubElement(domain, "Grid", Name="TimeSeries", GridType="Collection", CollectionType="Temporal")
    dim = points.shape[1]
    for t, time in enumerate(times):
        grid = ET.SubElement(series, "Grid", Name=f"frame{t}", GridType="Uniform")
        topology = ET.SubElement(grid, "Topology", TopologyType=TOPOLOGY[dim], NumberOfElements=str(len(cells)))
        _data_item(topology, h5_name, "/mesh/cells", cells)
        geometry = ET.SubElement(grid, "Geometry", GeometryType=GEOMETRY[dim])
        _data_item(geometry, h5_name, "/mesh/points", points)
        ET.SubElement(grid, "Time", Value=repr(float(time)))
        for name, values in point_data.items():
            attribute = ET.SubElement(grid, "Attribute", Name=name, AttributeType="Scalar", Center="Node")
            _data_item(attribute, h5_name, f"/frames/{t}/{name}", values[t])
    ET.indent(root)
    return ET.ElementTree(root)


def write_time_series(
    path: str | Path,
    points: np.ndarray,
    cells: np.ndarray,
    times: np.ndarray,
    point_data: dict[str, np.ndarray],
) -> Path:
    """Write ``path`` (.xdmf) and its ``.h5`` beside it; return the ``.h5`` path.

    ``points`` (N, D) with D = 2 or 3, ``cells`` (M, D+1) simplices, ``times`` (T,) and
    ``point_data`` name -> (T, N) values, stored as float32.
    """
    import h5py

    path = Path(path)
    points = np.ascontiguousarray(points, dtype=np.float64)
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    data = {name: np.asarray(v, dtype=np.float32) for name, v in point_data.items()}
    for name, values in data.items():
        if values.shape != (len(times), len(points)):
            raise ValueError(f"point data {name!r} has shape {values.shape}, expected {(len(times), len(points))}")
    h5_path = path.with_suffix(".h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        with h5py.File(tmp / h5_path.name, "w") as h5:
            h5["mesh/points"] = points
            h5["mesh/cells"] = cells
            for t in range(len(times)):
                for name, values in data.items():
                    h5[f"frames/{t}/{name}"] = values[t]
        tree = _xdmf_tree(h5_path.name, points, cells, times, data)
        tree.write(tmp / path.name, encoding="utf-8", xml_declaration=True)
        for written in (tmp / h5_path.name, tmp / path.name):
            with open(written, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(written, 0o644)
        os.replace(tmp / h5_path.name, h5_path)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return h5_path


def write_upsampled(
    npz_path: str | Path,
    xdmf_path: str | Path,
    points: np.ndarray,
    cells: np.ndarray,
    prediction: np.ndarray,
    baseline: np.ndarray,
    field_names: list[str],
    times: np.ndarray,
) -> None:
    """One super-resolved run, both ways: a bundle and a ParaView time series.

    ``prediction`` and ``baseline`` (plain interpolation) are (T, N, F).  The ``.npz`` is a
    contract-1 bundle (``fields`` = the prediction as (1, T, N, F)) plus ``baseline`` of the
    same shape; the XDMF holds ``{field}_prediction`` and ``{field}_baseline`` per frame.
    """
    prediction = np.asarray(prediction, dtype=np.float32)
    baseline = np.asarray(baseline, dtype=np.float32)
    point_data = {}
    for j, name in enumerate(field_names):
        point_data[f"{name}_prediction"] = prediction[..., j]
        point_data[f"{name}_baseline"] = baseline[..., j]
    write_time_series(xdmf_path, points, cells, times, point_data)
    atomic_savez(
        npz_path,
        points=np.asarray(points, dtype=np.float64),
        cells=np.asarray(cells, dtype=np.int64),
        fields=prediction[None],
        baseline=baseline[None],
        field_names=np.array(field_names, dtype=str),
        times=np.asarray(times, dtype=np.float64),
    )
