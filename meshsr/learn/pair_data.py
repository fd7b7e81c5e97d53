"""What training and evaluation read for one resolution pair: the cache plus both meshes.

The pair cache holds the interpolated and the destination fields and the operator; the
features also need the source fields at the source nodes, the source cells (for
recovered derivatives) and the destination nodes and cells, which come from the two
mesh bundles.  With ``use_cache`` the cache file is read, checked against the current
bundles (digests, names, sizes) and trusted only then; without it the same arrays are
built in memory by :func:`meshsr.cache.make_pair_cache` and nothing touches the cache
directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import PairCache, read_pair_cache
from meshsr.cache.freshness import check_fresh
from meshsr.errors import InputError
from meshsr.learn.features import FeatureBuilder
from meshsr.mesh.bundle import MeshBundle, load_bundle


@dataclass
class PairData:
    """One pair's cache and the two meshes it was built from."""

    source: str
    target: str
    cache: PairCache
    source_mesh: MeshBundle
    target_mesh: MeshBundle

    @property
    def field_names(self) -> list[str]:
        names = self.cache.meta.get("field_names")
        n_fields = self.cache.target_fields.shape[3]
        if isinstance(names, list) and len(names) == n_fields:
            return [str(x) for x in names]
        return [f"field{i}" for i in range(n_fields)]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(S, T, N_dst, F)."""
        return tuple(self.cache.target_fields.shape)  # type: ignore[return-value]

    def feature_builder(self, **options) -> FeatureBuilder:
        """A feature builder on this pair's meshes and operator; ``options`` as :attr:`FeatureBuilder.options`."""
        src, dst = self.source_mesh, self.target_mesh
        return FeatureBuilder(src.points, src.cells, dst.points, self.cache.operator, self.field_names, **options)

    def features(self, builder: FeatureBuilder, sim: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and local scales of simulation ``sim`` (:meth:`FeatureBuilder.simulation`)."""
        return builder.simulation(self.source_mesh.fields[sim], self.cache.interpolated[sim])


def check_cache_matches(
    cache: PairCache,
    path: str | Path,
    source: str,
    target: str,
    src: MeshBundle,
    dst: MeshBundle,
    rebuild: str | None = None,
) -> None:
    """Refuse a (fresh) cache that belongs to another configuration: names, S/T/F or node counts.

    ``rebuild``: the command that rebuilds it, quoted in the error.
    """
    meta = cache.meta
    todo = f"rebuild it with: {rebuild}" if rebuild else "rebuild it"
    if (meta.get("source"), meta.get("target")) != (source, target):
        raise InputError(
            path,
            f"pair cache was built for {meta.get('source')} -> {meta.get('target')}, "
            f"but this job trains {source} -> {target}; {todo}",
        )
    s, t, n, f = cache.target_fields.shape
    expected = {"n_simulations": src.n_simulations, "n_frames": src.n_frames, "n_fields": src.n_fields}
    recorded = {k: meta.get(k) for k in expected}
    actual = {"n_simulations": s, "n_frames": t, "n_fields": f}
    if recorded != expected or actual != expected:
        raise InputError(
            path,
            f"pair cache has S,T,F = {s},{t},{f} (meta {recorded}) but the mesh bundles have "
            f"{src.n_simulations},{src.n_frames},{src.n_fields}: it comes from another configuration; {todo}",
        )
    if cache.operator.shape != (dst.n_nodes, src.n_nodes) or n != dst.n_nodes:
        raise InputError(
            path,
            f"pair cache operator is {cache.operator.shape} but the meshes have {dst.n_nodes} target and "
            f"{src.n_nodes} source nodes: it comes from another configuration; {todo}",
        )


def load_pair_data(
    source: str,
    target: str,
    src_path: str | Path,
    dst_path: str | Path,
    cache_path: str | Path | None,
    rebuild: str | None = None,
    memo: str | Path | None = None,
) -> PairData:
    """Read (``cache_path`` given) or build (``cache_path=None``) the pair and load both meshes.

    ``memo`` is the workflow's digest memo: the freshness check then rehashes an input
    only when its stat changed since Snakemake fingerprinted it.
    """
    src, dst = load_bundle(src_path), load_bundle(dst_path)
    if cache_path is None:
        cache = make_pair_cache(src_path, dst_path, source, target, bundles=(src, dst))
    else:
        cache = read_pair_cache(cache_path)
        check_cache_matches(cache, cache_path, source, target, src, dst, rebuild)
        check_fresh(cache, cache_path, src_path, dst_path, rebuild=rebuild, memo=memo)
        # The target's fields are read from the cache (target_fields): keep the bundle's shape, not its memory.
        dst.fields = np.broadcast_to(np.zeros((), dtype=dst.fields.dtype), dst.fields.shape)
    if src.dim != dst.dim:
        problem = f"source mesh is {src.dim}D but target mesh is {dst.dim}D"
        raise InputError(f"{src_path} / {dst_path}", f"{problem}; pair meshes of the same dimension")
    return PairData(source=source, target=target, cache=cache, source_mesh=src, target_mesh=dst)

