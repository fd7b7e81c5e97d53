"""Pair caches (contract 3): interpolated source fields, destination fields and the operator.

One uncompressed ``.npz`` per ordered resolution pair holds

* ``coarse_interp``  float32 (S, T, N_dst, F)  source fields on destination nodes
* ``fine_features``  float32 (S, T, N_dst, F)  destination fields (ground truth)
* ``op_indptr``, ``op_indices``, ``op_data`` (float64), ``op_shape``  CSR of W
* ``extrapolated``   bool (N_dst,)
* ``meta``           0-d str, JSON: provenance, input sha256 digests, sizes, versions

Readers never unpickle, validate every array, and compare the recorded input digests
with the current inputs before trusting the numbers.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from meshsr import __version__
from meshsr.atomic import atomic_savez
from meshsr.bundle import MeshBundle, check_compatible, load_bundle
from meshsr.errors import InputError
from meshsr.hashing import file_sha256
from meshsr.operator import METHOD, InterpolationOperator

FORMAT_VERSION = 1
ARRAY_KEYS = (
    "coarse_interp",
    "fine_features",
    "op_indptr",
    "op_indices",
    "op_data",
    "op_shape",
    "extrapolated",
    "meta",
)


class CacheError(InputError):
    """A cache file that cannot be read as a valid pair cache (truncated, foreign, hostile)."""


class StaleCacheError(InputError):
    """A valid cache whose recorded input digests no longer match the inputs."""


@dataclass
class PairCache:
    coarse_interp: np.ndarray
    fine_features: np.ndarray
    operator: InterpolationOperator
    meta: dict[str, Any]

    @property
    def extrapolated(self) -> np.ndarray:
        return self.operator.extrapolated


def package_versions() -> dict[str, str]:
    """Versions of what shapes a cache's numbers."""
    import scipy

    return {"meshsr": __version__, "numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version()}


def relative_l2(estimate: np.ndarray, truth: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    r"""Relative L2 error :math:`\|e - t\|_2 / \|t\|_2` over ``axis`` (all axes when None)."""
    estimate = np.asarray(estimate, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    num = np.sqrt(np.sum((estimate - truth) ** 2, axis=axis))
    den = np.sqrt(np.sum(truth**2, axis=axis))
    return num / np.maximum(den, np.finfo(float).tiny)


def build_pair(src: MeshBundle, dst: MeshBundle) -> tuple[InterpolationOperator, np.ndarray, np.ndarray]:
    """Operator, interpolated source fields and destination fields for one pair (both float32)."""
    check_compatible({"source": src, "target": dst})
    if src.dim != dst.dim:
        raise InputError(None, f"source mesh is {src.dim}D but target mesh is {dst.dim}D")
    operator = InterpolationOperator.build(src.points, src.cells, dst.points)
    coarse_interp = operator.apply(src.fields, dtype=np.float32)
    return operator, coarse_interp, np.asarray(dst.fields, dtype=np.float32)


def make_pair_cache(src_path: str | Path, dst_path: str | Path, src_name: str, dst_name: str) -> PairCache:
    """Load both bundles, build the pair in memory and describe it in ``meta``."""
    src, dst = load_bundle(src_path), load_bundle(dst_path)
    try:
        operator, coarse_interp, fine_features = build_pair(src, dst)
    except InputError as exc:
        raise InputError(f"{src_path} / {dst_path}", exc.problem) from None
    meta = {
        "format_version": FORMAT_VERSION,
        "source": src_name,
        "target": dst_name,
        "source_path": str(src_path),
        "target_path": str(dst_path),
        "source_sha256": file_sha256(src_path),
        "target_sha256": file_sha256(dst_path),
        "method": METHOD,
        "n_source": src.n_nodes,
        "n_target": dst.n_nodes,
        "n_extrapolated": int(operator.extrapolated.sum()),
        "n_simulations": src.n_simulations,
        "n_frames": src.n_frames,
        "n_fields": src.n_fields,
        "field_names": dst.field_names or src.field_names or [f"field{i}" for i in range(src.n_fields)],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    return PairCache(coarse_interp=coarse_interp, fine_features=fine_features, operator=operator, meta=meta)


def write_pair_cache(path: str | Path, cache: PairCache) -> None:
    """Write ``cache`` atomically to ``path`` in the contract-3 layout."""
    matrix = cache.operator.matrix
    atomic_savez(
        path,
        coarse_interp=np.asarray(cache.coarse_interp, dtype=np.float32),
        fine_features=np.asarray(cache.fine_features, dtype=np.float32),
        op_indptr=matrix.indptr.astype(np.int64),
        op_indices=matrix.indices.astype(np.int64),
        op_data=matrix.data.astype(np.float64),
        op_shape=np.array(matrix.shape, dtype=np.int64),
        extrapolated=np.asarray(cache.operator.extrapolated, dtype=bool),
        meta=np.array(json.dumps(cache.meta, sort_keys=True)),
    )


def _check(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise CacheError(path, f"corrupt pair cache: {problem}")


def read_pair_cache(path: str | Path) -> PairCache:
    """Read and validate a pair cache; raise :class:`CacheError` for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(path, "pair cache does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ARRAY_KEYS if k not in data.files]
            _check(not missing, path, f"missing arrays {missing}")
            arrays = {k: data[k] for k in ARRAY_KEYS}
    except CacheError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CacheError(path, f"corrupt pair cache: cannot read it as a plain-array npz ({exc})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError:
        meta = None
    _check(isinstance(meta, dict), path, "'meta' is not a JSON object")
    _check(meta.get("format_version") == FORMAT_VERSION, path, f"format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    ci, ff = arrays["coarse_interp"], arrays["fine_features"]
    _check(ci.dtype == np.float32 and ff.dtype == np.float32, path, "field arrays must be float32")
    _check(ci.ndim == 4 and ci.shape == ff.shape, path, f"field shapes {ci.shape} and {ff.shape} differ")
    shape = tuple(int(x) for x in arrays["op_shape"])
    _check(len(shape) == 2 and shape[0] == ci.shape[2], path, f"operator shape {shape} does not match {ci.shape[2]} target nodes")
    indptr, indices, weights = arrays["op_indptr"], arrays["op_indices"], arrays["op_data"]
    _check(indptr.ndim == 1 and len(indptr) == shape[0] + 1, path, "op_indptr has the wrong length")
    _check(len(indices) == len(weights) == indptr[-1], path, "operator index/data lengths disagree")
    _check(bool(np.all(np.diff(indptr) >= 0)), path, "op_indptr is not monotone")
    _check(len(indices) == 0 or (indices.min() >= 0 and indices.max() < shape[1]), path, "operator indices out of range")
    _check(bool(np.isfinite(ci).all() and np.isfinite(ff).all()), path, "NaN/Inf in field arrays")
    extrapolated = arrays["extrapolated"]
    _check(extrapolated.dtype == bool and extrapolated.shape == (shape[0],), path, "'extrapolated' has the wrong shape")
    matrix = sp.csr_matrix((weights, indices, indptr), shape=shape)
    return PairCache(ci, ff, InterpolationOperator(matrix=matrix, extrapolated=extrapolated), meta)


def check_fresh(cache: PairCache, path: str | Path, src_path: str | Path, dst_path: str | Path, rebuild: str) -> None:
    """Refuse a cache whose recorded input digests differ from the current input files."""
    pair = f"{cache.meta.get('source')}_{cache.meta.get('target')}"
    for role, current in (("source", src_path), ("target", dst_path)):
        if cache.meta.get(f"{role}_sha256") != file_sha256(current):
            raise StaleCacheError(
                path,
                f"stale cache for pair {pair}: {role} input {current} changed since the cache was built; "
                f"rebuild it with: {rebuild}",
            )


def build_and_write(
    src_path: str | Path, dst_path: str | Path, src_name: str, dst_name: str, out_path: str | Path, log: logging.Logger
) -> PairCache:
    """Build one pair cache, log its numbers (sizes, extrapolation, interpolation error), write it."""
    start = time.perf_counter()
    cache = make_pair_cache(src_path, dst_path, src_name, dst_name)
    m = cache.meta
    log.info("pair %s -> %s: %d -> %d nodes, S=%d T=%d F=%d", src_name, dst_name, m["n_source"], m["n_target"], m["n_simulations"], m["n_frames"], m["n_fields"])
    log.info("extrapolated target nodes (outside every source cell): %d", m["n_extrapolated"])
    errors = relative_l2(cache.coarse_interp, cache.fine_features, axis=(0, 1, 2))
    for name, err in zip(m["field_names"], errors):
        log.info("relative L2 of interpolated %s vs %s, field %s: %.2f %%", src_name, dst_name, name, 100 * err)
    write_pair_cache(out_path, cache)
    log.info("wrote %s in %.2f s", out_path, time.perf_counter() - start)
    return cache
