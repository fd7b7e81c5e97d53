"""Pair caches (contract 3): interpolated source fields, destination fields and the operator.

One uncompressed ``.npz`` per ordered resolution pair holds

* ``coarse_interp``  float32 (S, T, N_dst, F)  source fields on destination nodes
* ``fine_features``  float32 (S, T, N_dst, F)  destination fields (ground truth)
* ``op_indptr``, ``op_indices``, ``op_data`` (float64), ``op_shape``  CSR of W
* ``extrapolated``   bool (N_dst,)
* ``meta``           0-d str, JSON: provenance, input sha256 digests, sizes, versions

Readers never unpickle and validate every array before trusting the numbers.  Training
and evaluation (:func:`read_pair_cache`) memory-map the two field arrays in place: the
zip's CRC is not recomputed on every read; the data digest recorded at build time
(``meta.data_sha256``, checked by ``cache_verify``) and the CRC check of ``cache_info``
(:func:`inspect_pair_cache`) find altered bytes instead.  A file
whose ``meta`` names another ``format_version`` is well-formed data of another meshsr,
not damage: it is refused as stale (:class:`~meshsr.cache.freshness.StaleCacheError`)
before anything else of it is read.  Whether a valid cache still belongs to its inputs
and to the running cache code is :mod:`meshsr.cache.freshness`'s question.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import platform
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from meshsr import __version__
from meshsr.atomic import atomic_savez
from meshsr.cache.freshness import rebuild_command, stale_cache_error
from meshsr.errors import InputError
from meshsr.interp.operator import METHOD, InterpolationOperator, operator_problem
from meshsr.mesh.npz import MemberError, NpyHeader, read_npy_header

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

    python = platform.python_version()
    return {"meshsr": __version__, "numpy": np.__version__, "scipy": scipy.__version__, "python": python}


class _Sha256Sink:
    """A write-only file object that hashes what numpy writes to it."""

    def __init__(self, digest: Any) -> None:
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def data_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the members every array but ``meta`` becomes in the ``.npz`` (name, ``.npy`` header and data).

    numpy writes each member with :func:`numpy.lib.format.write_array`; writing the same
    arrays to a hashing sink gives the digest of exactly the bytes stored, so checking
    it (:func:`data_problem`) only needs to stream the members.
    """
    digest = hashlib.sha256()
    for key in ARRAY_KEYS:
        if key != "meta":
            digest.update(f"{key}.npy\n".encode())
            np.lib.format.write_array(_Sha256Sink(digest), np.asanyarray(arrays[key]), allow_pickle=False)
    return digest.hexdigest()


def write_pair_cache(path: str | Path, cache: PairCache) -> None:
    """Write ``cache`` atomically to ``path`` in the contract-3 layout; ``meta`` gets its ``data_sha256``."""
    arrays = {
        "coarse_interp": np.ascontiguousarray(cache.interpolated, dtype=np.float32),
        "fine_features": np.ascontiguousarray(cache.target_fields, dtype=np.float32),
        **cache.operator.arrays(),
    }
    cache.meta["data_sha256"] = data_digest(arrays)
    atomic_savez(path, **arrays, meta=np.array(json.dumps(cache.meta, sort_keys=True)))


def _check(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise CacheError(path, f"corrupt pair cache: {problem}")


def _with_rebuild_hint(exc: CacheError, path: Path) -> CacheError:
    return CacheError(path, f"{exc.problem}; rebuild it with: {rebuild_command(path)}")


# What a damaged or foreign file can raise while zipfile/numpy parse it.
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, NotImplementedError, RuntimeError)
_READ_ERRORS += (zipfile.BadZipFile, struct.error, zlib.error)
BIG_KEYS = ("coarse_interp", "fine_features")
SMALL_KEYS = tuple(k for k in ARRAY_KEYS if k not in (*BIG_KEYS, "meta"))  # the operator and mesh arrays
STREAM_CHUNK = 1 << 24


_Header = NpyHeader


@dataclass
class CacheSummary:
    """What :func:`inspect_pair_cache` learns from a valid cache without loading its fields."""

    meta: dict[str, Any]
    shape: tuple[int, int, int, int]  # (S, T, N_dst, F)
    operator_shape: tuple[int, int]  # (N_dst, N_src)
    n_extrapolated: int


def _read_header(fh: IO[bytes], path: Path, key: str, member_size: int) -> _Header:
    """Parse one ``.npy`` header (shared with bundles: :mod:`meshsr.mesh.npz`)."""
    try:
        return read_npy_header(fh, key, member_size)
    except MemberError as exc:
        raise CacheError(path, f"corrupt pair cache: {exc}") from None


def _read_meta(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    """``meta`` as a dict, read first and without unpickling; another format_version is stale."""
    _check("meta.npy" in zf.namelist(), path, "missing arrays ['meta']")
    info = zf.getinfo("meta.npy")
    with zf.open(info) as fh:
        _read_header(fh, path, "meta", info.file_size)
    with zf.open(info) as fh:
        text = _meta_text(np.lib.format.read_array(fh, allow_pickle=False), path)
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    _check(isinstance(meta, dict), path, "'meta' is not a JSON object")
    version = meta.get("format_version")
    _check(type(version) is int, path, f"'meta' has no integer format_version ({version!r})")
    if version != FORMAT_VERSION:
        raise stale_cache_error(path, meta, f"format_version {version}, this meshsr reads {FORMAT_VERSION}")
    return meta


def _small_arrays(zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """The :data:`SMALL_KEYS` arrays of an open cache, read whole (never the field arrays)."""
    arrays = {}
    for key in SMALL_KEYS:
        with zf.open(f"{key}.npy") as fh:
            arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
    return arrays


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


def _check_layout(path: Path, headers: dict[str, _Header], small: dict[str, np.ndarray]) -> None:
    """Structural checks shared by the full reader and the streaming inspector."""
    ci, ff = headers["coarse_interp"], headers["fine_features"]
    _check(ci.dtype == np.float32 and ff.dtype == np.float32, path, "field arrays must be float32")
    _check(len(ci.shape) == 4 and ci.shape == ff.shape, path, f"field shapes {ci.shape} and {ff.shape} differ")
    problem = operator_problem(small, n_dst=ci.shape[2])
    _check(problem is None, path, str(problem))


def _meta_text(meta: np.ndarray, path: Path) -> str:
    _check(meta.ndim == 0 and meta.dtype.kind == "U", path, "'meta' must be a 0-d string")
    return str(meta)


def _with_hint(reader, path: Path):
    """``reader(path)``, its :class:`CacheError` extended by the command that rebuilds the cache."""
    try:
        return reader(path)
    except CacheError as exc:
        raise _with_rebuild_hint(exc, path) from None


def read_pair_cache(path: str | Path) -> PairCache:
    """Read and validate a pair cache; raise :class:`CacheError` for anything malformed.

    Headers are checked first (object arrays, sizes), so a hostile or truncated file is
    refused before numpy allocates or unpickles anything.  The error names the file, the
    problem and the command that rebuilds it.  A cache of another format version raises
    :class:`~meshsr.cache.freshness.StaleCacheError` (same message shape) instead.
    """
    return _with_hint(_read_pair_cache, Path(path))


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[zipfile.ZipFile, dict[str, Any], dict[str, _Header], dict[str, np.ndarray]]]:
    """The open cache at ``path``, its meta, headers and small arrays, checked; any read error
    (here or in the ``with`` body) becomes one :class:`CacheError` naming the file."""
    if not path.is_file():
        raise CacheError(path, "pair cache does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = _read_meta(zf, path)
            headers = _headers(zf, path)
            small = _small_arrays(zf)
            _check_layout(path, headers, small)
            yield zf, meta, headers, small
    except CacheError:
        raise
    except _READ_ERRORS as exc:
        raise CacheError(path, f"corrupt pair cache: cannot read it as a plain-array npz ({exc})") from None


def _read_pair_cache(path: Path) -> PairCache:
    with _opened(path) as (zf, meta, headers, arrays):
        arrays.update(_field_arrays(zf, path, headers))
    ci, ff = arrays["coarse_interp"], arrays["fine_features"]
    _check(_all_finite(ci) and _all_finite(ff), path, "NaN/Inf in field arrays")
    operator = InterpolationOperator.from_arrays(arrays, method=str(meta.get("method", METHOD)))
    return PairCache(ci, ff, operator, meta)


ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length
FINITE_CHUNK = 1 << 22  # values per finiteness test: a small temporary, and mapped pages released as we go


def _field_arrays(zf: zipfile.ZipFile, path: Path, headers: dict[str, _Header]) -> dict[str, np.ndarray]:
    """The field arrays, read-only views on a memory map of the file (stored members) or read (compressed ones).

    A stored member's ``.npy`` data starts after the zip local header, the member name, the
    extra field and the ``.npy`` header; :func:`read_npy_header` has checked that the member
    holds exactly the bytes its header promises, and the member must lie inside the file.
    """
    infos = {key: zf.getinfo(f"{key}.npy") for key in BIG_KEYS}
    if any(info.compress_type != zipfile.ZIP_STORED for info in infos.values()):
        out = {}
        for key, info in infos.items():
            with zf.open(info) as fh:
                out[key] = np.lib.format.read_array(fh, allow_pickle=False)
        return out
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    out = {}
    for key, info in infos.items():
        local = mapped[info.header_offset : info.header_offset + ZIP_LOCAL_HEADER.size]
        _check(len(local) == ZIP_LOCAL_HEADER.size, path, f"array {key!r} is truncated")
        signature, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(local)
        _check(signature == b"PK\x03\x04", path, f"array {key!r} has no zip local header")
        end = info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length + info.file_size
        _check(end <= size, path, f"array {key!r} is truncated")
        header = headers[key]
        count = math.prod(header.shape)
        start = end - count * header.dtype.itemsize
        flat = np.frombuffer(mapped, dtype=header.dtype, count=count, offset=start)
        out[key] = flat.reshape(header.shape, order="F" if _fortran_order(zf, info) else "C")
    return out


def _fortran_order(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return bool(read(fh)[1])


def _all_finite(array: np.ndarray) -> bool:
    """No NaN/Inf, tested a chunk at a time; pages of a memory-mapped array are released after each chunk.

    Released pages stay in the page cache (the next touch maps them again, no disk read), so
    the check costs one pass over memory and keeps the resident set small.
    """
    flat = array.reshape(-1, order="A")
    mapped = _mapping_of(array)
    for start in range(0, len(flat), FINITE_CHUNK):
        if not np.isfinite(flat[start : start + FINITE_CHUNK]).all():
            return False
        if mapped is not None:
            mapped.madvise(mmap.MADV_DONTNEED)
    return True


def release_pages(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped cache array from this process's memory (they stay in the page cache)."""
    mapped = _mapping_of(array)
    if mapped is not None:
        mapped.madvise(mmap.MADV_DONTNEED)


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The memory map under ``array`` when pages can be released from it (Linux), else None."""
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    base = base.obj if isinstance(base, memoryview) else base
    return base if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") else None


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
    return _with_hint(_inspect_pair_cache, Path(path))


def _inspect_pair_cache(path: Path) -> CacheSummary:
    with _opened(path) as (zf, meta, headers, small):
        for key in BIG_KEYS:
            _stream_finite(zf, path, key)
    s, t, n, f = headers["coarse_interp"].shape
    op_shape = (int(small["op_shape"][0]), int(small["op_shape"][1]))
    n_extrapolated = int(small["extrapolated"].sum())
    return CacheSummary(meta=meta, shape=(s, t, n, f), operator_shape=op_shape, n_extrapolated=n_extrapolated)


def data_problem(path: str | Path, meta: dict[str, Any]) -> str | None:
    """Why the arrays of a well-formed cache are not the ones written at build time; None when they are.

    Streams every member but ``meta`` (bounded memory); costs one read of the whole file,
    so only ``snakemake cache_verify`` does it, never the readers.
    """
    recorded = meta.get("data_sha256")
    if not isinstance(recorded, str):
        return "no data digest recorded (meta has no data_sha256)"
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as zf:
            for key in ARRAY_KEYS:
                if key != "meta":
                    digest.update(f"{key}.npy\n".encode())
                    with zf.open(f"{key}.npy") as fh:
                        while chunk := fh.read(STREAM_CHUNK):
                            digest.update(chunk)
    except _READ_ERRORS as exc:
        return f"cannot read the arrays ({exc})"
    actual = digest.hexdigest()
    if actual != recorded:
        return (
            f"data digest differs: the arrays are not those written at build time "
            f"(sha256 {actual[:12]}, recorded {recorded[:12]})"
        )
    return None
