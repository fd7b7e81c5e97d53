"""Pair caches (contract 3): interpolated source fields, destination fields and the operator.

One uncompressed ``.npz`` per ordered resolution pair holds

* ``coarse_interp``  float32 (S, T, N_dst, F)  source fields on destination nodes
* ``fine_features``  float32 (S, T, N_dst, F)  destination fields (ground truth)
* ``op_indptr``, ``op_indices``, ``op_data`` (float64), ``op_shape``  CSR of W
* ``extrapolated``   bool (N_dst,)
* ``meta``           0-d str, JSON: provenance, input sha256 digests, sizes, versions

Readers never unpickle and validate every array before trusting the numbers; whether a
valid cache still belongs to its inputs is :mod:`meshsr.cache.freshness`'s question.
"""

from __future__ import annotations

import json
import platform
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import scipy.sparse as sp

from meshsr import __version__
from meshsr.atomic import atomic_savez
from meshsr.cache.freshness import rebuild_command
from meshsr.errors import InputError
from meshsr.interp.operator import InterpolationOperator

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


@dataclass
class PairCache:
    interpolated: np.ndarray  # source fields on the target nodes: array 'coarse_interp'
    target_fields: np.ndarray  # the target's own fields (ground truth): array 'fine_features'
    operator: InterpolationOperator
    meta: dict[str, Any]

    @property
    def extrapolated(self) -> np.ndarray:
        return self.operator.extrapolated


def package_versions() -> dict[str, str]:
    """Versions of what shapes a cache's numbers."""
    import scipy

    return {"meshsr": __version__, "numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version()}


def write_pair_cache(path: str | Path, cache: PairCache) -> None:
    """Write ``cache`` atomically to ``path`` in the contract-3 layout."""
    matrix = cache.operator.matrix
    atomic_savez(
        path,
        coarse_interp=np.ascontiguousarray(cache.interpolated, dtype=np.float32),
        fine_features=np.ascontiguousarray(cache.target_fields, dtype=np.float32),
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


def _with_rebuild_hint(exc: CacheError, path: Path) -> CacheError:
    return CacheError(path, f"{exc.problem}; rebuild it with: {rebuild_command(path)}")


# What a damaged or foreign file can raise while zipfile/numpy parse it.
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, NotImplementedError, RuntimeError)
_READ_ERRORS += (zipfile.BadZipFile, struct.error, zlib.error)
BIG_KEYS = ("coarse_interp", "fine_features")
STREAM_CHUNK = 1 << 24


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class CacheSummary:
    """What :func:`inspect_pair_cache` learns from a valid cache without loading its fields."""

    meta: dict[str, Any]
    shape: tuple[int, int, int, int]  # (S, T, N_dst, F)
    operator_shape: tuple[int, int]  # (N_dst, N_src)
    n_extrapolated: int


def _read_header(fh: IO[bytes], path: Path, key: str, member_size: int) -> _Header:
    """Parse one ``.npy`` header; refuse object dtypes and sizes that disagree with the member."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise CacheError(path, f"corrupt pair cache: array {key!r} has unsupported npy version {version}")
    _check(not dtype.hasobject, path, f"array {key!r} holds Python objects (pickled data); it is never loaded")
    expected = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    problem = f"array {key!r} has {member_size} bytes, its header says {expected} (truncated or altered)"
    _check(member_size == expected, path, problem)
    return _Header(tuple(int(n) for n in shape), dtype)


def _headers(zf: zipfile.ZipFile, path: Path) -> dict[str, _Header]:
    """Headers of every contract array, checked before any array data is read."""
    names = set(zf.namelist())
    missing = [k for k in ARRAY_KEYS if f"{k}.npy" not in names]
    _check(not missing, path, f"missing arrays {missing}")
    headers = {}
    for key in ARRAY_KEYS:
        info = zf.getinfo(f"{key}.npy")
        with zf.open(info) as fh:
            headers[key] = _read_header(fh, path, key, info.file_size)
    return headers


def _check_layout(
    path: Path, meta_text: str, headers: dict[str, _Header], small: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Structural checks shared by the full reader and the streaming inspector; returns ``meta``."""
    try:
        meta = json.loads(meta_text)
    except ValueError:
        meta = None
    _check(isinstance(meta, dict), path, "'meta' is not a JSON object")
    version = meta.get("format_version")
    _check(version == FORMAT_VERSION, path, f"format_version {version!r}, expected {FORMAT_VERSION}")
    ci, ff = headers["coarse_interp"], headers["fine_features"]
    _check(ci.dtype == np.float32 and ff.dtype == np.float32, path, "field arrays must be float32")
    _check(len(ci.shape) == 4 and ci.shape == ff.shape, path, f"field shapes {ci.shape} and {ff.shape} differ")
    op_shape = small["op_shape"]
    _check(op_shape.shape == (2,) and np.issubdtype(op_shape.dtype, np.integer), path, "op_shape must be 2 integers")
    shape = (int(op_shape[0]), int(op_shape[1]))
    problem = f"operator shape {shape} does not match {ci.shape[2]} target nodes"
    _check(shape[0] == ci.shape[2] and shape[1] > 0, path, problem)
    indptr, indices, weights = small["op_indptr"], small["op_indices"], small["op_data"]
    integer = all(np.issubdtype(a.dtype, np.integer) for a in (indptr, indices))
    _check(integer, path, "operator indices must be integers")
    _check(np.issubdtype(weights.dtype, np.floating), path, "operator weights must be floating point")
    _check(indptr.ndim == 1 and len(indptr) == shape[0] + 1 and indptr[0] == 0, path, "op_indptr has the wrong length")
    _check(indices.ndim == weights.ndim == 1, path, "operator indices/data must be 1-D")
    _check(len(indices) == len(weights) == indptr[-1], path, "operator index/data lengths disagree")
    _check(bool(np.all(np.diff(indptr) >= 0)), path, "op_indptr is not monotone")
    in_range = len(indices) == 0 or (indices.min() >= 0 and indices.max() < shape[1])
    _check(in_range, path, "operator indices out of range")
    _check(bool(np.isfinite(weights).all()), path, "NaN/Inf in operator weights")
    extrapolated = small["extrapolated"]
    _check(extrapolated.dtype == bool and extrapolated.shape == (shape[0],), path, "'extrapolated' has the wrong shape")
    return meta


def _meta_text(meta: np.ndarray, path: Path) -> str:
    _check(meta.ndim == 0 and meta.dtype.kind == "U", path, "'meta' must be a 0-d string")
    return str(meta)


def read_pair_cache(path: str | Path) -> PairCache:
    """Read and validate a pair cache; raise :class:`CacheError` for anything malformed.

    Headers are checked first (object arrays, sizes), so a hostile or truncated file is
    refused before numpy allocates or unpickles anything.  The error names the file, the
    problem and the command that rebuilds it.
    """
    try:
        return _read_pair_cache(Path(path))
    except CacheError as exc:
        raise _with_rebuild_hint(exc, Path(path)) from None


def _read_pair_cache(path: Path) -> PairCache:
    if not path.is_file():
        raise CacheError(path, "pair cache does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            headers = _headers(zf, path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ARRAY_KEYS}
    except CacheError:
        raise
    except _READ_ERRORS as exc:
        raise CacheError(path, f"corrupt pair cache: cannot read it as a plain-array npz ({exc})") from None
    meta = _check_layout(path, _meta_text(arrays["meta"], path), headers, arrays)
    ci, ff = arrays["coarse_interp"], arrays["fine_features"]
    _check(bool(np.isfinite(ci).all() and np.isfinite(ff).all()), path, "NaN/Inf in field arrays")
    shape = tuple(int(x) for x in arrays["op_shape"])
    matrix = sp.csr_matrix((arrays["op_data"], arrays["op_indices"], arrays["op_indptr"]), shape=shape)
    return PairCache(ci, ff, InterpolationOperator(matrix=matrix, extrapolated=arrays["extrapolated"]), meta)


def _stream_finite(zf: zipfile.ZipFile, path: Path, key: str) -> None:
    """Read one field array in chunks: every value finite, and the zip CRC checked at the end."""
    info = zf.getinfo(f"{key}.npy")
    with zf.open(info) as fh:
        header = _read_header(fh, path, key, info.file_size)
        step = max(1, STREAM_CHUNK // header.dtype.itemsize) * header.dtype.itemsize
        while chunk := fh.read(step):
            _check(len(chunk) % header.dtype.itemsize == 0, path, f"array {key!r} is truncated")
            _check(bool(np.isfinite(np.frombuffer(chunk, dtype=header.dtype)).all()), path, f"NaN/Inf in {key!r}")


def inspect_pair_cache(path: str | Path) -> CacheSummary:
    """Validate a pair cache as thoroughly as :func:`read_pair_cache`, in bounded memory.

    The field arrays are streamed (finiteness, zip CRC) instead of loaded, so listing a
    cache directory of multi-GB files stays cheap in memory.
    """
    try:
        return _inspect_pair_cache(Path(path))
    except CacheError as exc:
        raise _with_rebuild_hint(exc, Path(path)) from None


def _inspect_pair_cache(path: Path) -> CacheSummary:
    if not path.is_file():
        raise CacheError(path, "pair cache does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            headers = _headers(zf, path)
            small = {}
            for key in ARRAY_KEYS:
                if key not in BIG_KEYS:
                    with zf.open(f"{key}.npy") as fh:
                        small[key] = np.lib.format.read_array(fh, allow_pickle=False)
            meta = _check_layout(path, _meta_text(small["meta"], path), headers, small)
            for key in BIG_KEYS:
                _stream_finite(zf, path, key)
    except CacheError:
        raise
    except _READ_ERRORS as exc:
        raise CacheError(path, f"corrupt pair cache: cannot read it as a plain-array npz ({exc})") from None
    s, t, n, f = headers["coarse_interp"].shape
    op_shape = (int(small["op_shape"][0]), int(small["op_shape"][1]))
    n_extrapolated = int(small["extrapolated"].sum())
    return CacheSummary(meta=meta, shape=(s, t, n, f), operator_shape=op_shape, n_extrapolated=n_extrapolated)


