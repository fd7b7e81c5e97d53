"""Build one pair cache: load both meshes, build the operator, interpolate, describe, write.

A write the file system refuses (full disk, read-only cache directory) ends the job with
one line naming the cache, the problem and what to do (:func:`meshsr.atomic.write_error`),
and nothing is left under the cache's name.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from meshsr.atomic import WriteError, free_bytes, space_problem, write_error
from meshsr.cache.format import FORMAT_VERSION, PairCache, package_versions, write_pair_cache
from meshsr.cache.freshness import cache_code_fingerprint
from meshsr.cache.keys import built_in, cache_key, file_identity
from meshsr.errors import InputError
from meshsr.evaluate.norms import relative_l2
from meshsr.interp.operator import METHOD, InterpolationOperator
from meshsr.mesh.bundle import MeshBundle, check_compatible, load_bundle
from meshsr.provenance.digests import file_sha256


def build_pair(src: MeshBundle, dst: MeshBundle) -> tuple[InterpolationOperator, np.ndarray, np.ndarray]:
    """Operator, interpolated source fields and destination fields for one pair (both float32)."""
    check_compatible({"source": src, "target": dst})
    if src.dim != dst.dim:
        raise InputError(None, f"source mesh is {src.dim}D but target mesh is {dst.dim}D")
    operator = InterpolationOperator.build(src.points, src.cells, dst.points)
    coarse_interp = operator.apply(src.fields, dtype=np.float32)
    return operator, coarse_interp, np.asarray(dst.fields, dtype=np.float32)


def make_pair_cache(
    src_path: str | Path,
    dst_path: str | Path,
    src_name: str,
    dst_name: str,
    bundles: tuple[MeshBundle, MeshBundle] | None = None,
    key: str | None = None,
) -> PairCache:
    """Build the pair in memory and describe it in ``meta``.

    ``meta["code"]`` is the fingerprint of the code that built it (this module's import
    closure), which readers compare with the running code.  ``meta["key"]`` is ``key``, the
    workflow's cache key (:mod:`meshsr.cache.keys`); without one, the key of the two input
    files' digests.

    ``bundles`` are the two inputs already loaded from ``src_path`` and ``dst_path``
    (a caller that needs the meshes anyway passes them, so nothing is read twice).
    """
    src, dst = bundles if bundles is not None else (load_bundle(src_path), load_bundle(dst_path))
    try:
        operator, interpolated, target_fields = build_pair(src, dst)
    except InputError as exc:
        raise InputError(f"{src_path} / {dst_path}", exc.problem) from None
    digests = file_sha256(src_path), file_sha256(dst_path)
    code = cache_code_fingerprint()
    meta = {
        "format_version": FORMAT_VERSION,
        "source": src_name,
        "target": dst_name,
        "source_path": str(src_path),
        "target_path": str(dst_path),
        "source_sha256": digests[0],
        "target_sha256": digests[1],
        "method": METHOD,
        "code": code,
        "key": key or cache_key(file_identity(digests[0]), file_identity(digests[1]), code),
        "n_source": src.n_nodes,
        "n_target": dst.n_nodes,
        "n_extrapolated": int(operator.extrapolated.sum()),
        "n_simulations": src.n_simulations,
        "n_frames": src.n_frames,
        "n_fields": src.n_fields,
        "field_names": dst.field_names or src.field_names or [f"field{i}" for i in range(src.n_fields)],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    return PairCache(interpolated=interpolated, target_fields=target_fields, operator=operator, meta=meta)


# An empty file that keeps the cache directory from being empty: Snakemake removes the empty
# directory of a failed job's missing output and its empty parents (os.removedirs), which
# would delete a user's directory, or crash on a mount point.  An empty file needs no data
# block, so it can be created on a full disk.
CACHE_DIR_TAG = ".meshsr-cache-dir"
REMEDY = "set cache_dir elsewhere (--config cache_dir=DIR)"


def _cache_bytes(cache: PairCache) -> int:
    arrays = (cache.interpolated, cache.target_fields, *cache.operator.arrays().values())
    return sum(int(a.nbytes) for a in arrays) + 65536  # npy headers, meta and zip entries


def _tag_cache_dir(out_path: Path) -> None:
    tag = out_path.parent / CACHE_DIR_TAG
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not tag.exists():
            tag.touch()
    except OSError as exc:
        error = write_error(exc, out_path.parent, "in the cache directory", REMEDY)
        if error is None:
            raise
        raise error from None


def build_and_write(
    src_path: str | Path,
    dst_path: str | Path,
    src_name: str,
    dst_name: str,
    out_path: str | Path,
    log: logging.Logger,
    key: str | None = None,
) -> PairCache:
    """Build one pair cache, log its numbers (sizes, extrapolation, interpolation error), write it.

    The cache directory is tagged first (:data:`CACHE_DIR_TAG`, which also finds a
    read-only one before any work), and the free space is checked before writing.
    """
    start = time.perf_counter()
    out_path = Path(out_path)
    _tag_cache_dir(out_path)
    cache = make_pair_cache(src_path, dst_path, src_name, dst_name, key=key)
    cache.meta["built_in"] = built_in(out_path)
    m = cache.meta
    sizes = (m["n_source"], m["n_target"], m["n_simulations"], m["n_frames"], m["n_fields"])
    log.info("pair %s -> %s: %d -> %d nodes, S=%d T=%d F=%d", src_name, dst_name, *sizes)
    log.info("extrapolated target nodes (outside every source cell): %d", m["n_extrapolated"])
    log.info("cache code fingerprint: %s, cache key: %s", m["code"], m["key"])
    errors = relative_l2(cache.interpolated, cache.target_fields, axis=(0, 1, 2))
    for name, err in zip(m["field_names"], errors, strict=True):
        log.info("relative L2 of interpolated %s vs %s, field %s: %.2f %%", src_name, dst_name, name, 100 * err)
    needed, free = _cache_bytes(cache), free_bytes(out_path.parent)
    if free is not None and needed > free:
        raise WriteError(out_path, space_problem("the pair cache", needed, free, REMEDY))
    try:
        write_pair_cache(out_path, cache)
    except OSError as exc:
        error = write_error(exc, out_path, "the pair cache", REMEDY, needed)
        if error is None:
            raise
        raise error from None
    log.info("wrote %s in %.2f s", out_path, time.perf_counter() - start)
    return cache
