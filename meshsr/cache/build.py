"""Build one pair cache: load both meshes, build the operator, interpolate, describe, write."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from meshsr.cache.format import FORMAT_VERSION, PairCache, package_versions, write_pair_cache
from meshsr.cache.freshness import cache_code_fingerprint
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
) -> PairCache:
    """Build the pair in memory and describe it in ``meta``.

    ``meta["code"]`` is the fingerprint of the code that built it (this module's import
    closure), which readers compare with the running code.

    ``bundles`` are the two inputs already loaded from ``src_path`` and ``dst_path``
    (a caller that needs the meshes anyway passes them, so nothing is read twice).
    """
    src, dst = bundles if bundles is not None else (load_bundle(src_path), load_bundle(dst_path))
    try:
        operator, interpolated, target_fields = build_pair(src, dst)
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
        "code": cache_code_fingerprint(),
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


def build_and_write(
    src_path: str | Path, dst_path: str | Path, src_name: str, dst_name: str, out_path: str | Path, log: logging.Logger
) -> PairCache:
    """Build one pair cache, log its numbers (sizes, extrapolation, interpolation error), write it."""
    start = time.perf_counter()
    cache = make_pair_cache(src_path, dst_path, src_name, dst_name)
    m = cache.meta
    sizes = (m["n_source"], m["n_target"], m["n_simulations"], m["n_frames"], m["n_fields"])
    log.info("pair %s -> %s: %d -> %d nodes, S=%d T=%d F=%d", src_name, dst_name, *sizes)
    log.info("extrapolated target nodes (outside every source cell): %d", m["n_extrapolated"])
    log.info("cache code fingerprint: %s", m["code"])
    errors = relative_l2(cache.interpolated, cache.target_fields, axis=(0, 1, 2))
    for name, err in zip(m["field_names"], errors, strict=True):
        log.info("relative L2 of interpolated %s vs %s, field %s: %.2f %%", src_name, dst_name, name, 100 * err)
    write_pair_cache(out_path, cache)
    log.info("wrote %s in %.2f s", out_path, time.perf_counter() - start)
    return cache
