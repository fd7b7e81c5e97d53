"""A pair cache's interpolation operator alone, without its field arrays.

Inference on a new run needs the pair's operator W, not the training arrays
(``coarse_interp``, ``fine_features``) that make up nearly all of a cache's bytes: this
reader checks ``meta`` and every header as :func:`meshsr.cache.format.read_pair_cache` does,
then reads only the operator's members.
"""

from __future__ import annotations

from pathlib import Path

from meshsr.cache.format import CacheSummary, _opened, _with_hint
from meshsr.interp.operator import METHOD, InterpolationOperator


def read_pair_operator(path: str | Path) -> tuple[InterpolationOperator, CacheSummary]:
    """The operator of the pair cache at ``path`` and what the cache says of itself.

    Raises :class:`~meshsr.cache.format.CacheError` (with the rebuild command) for a damaged
    file and :class:`~meshsr.cache.freshness.StaleCacheError` for another format version.
    """
    return _with_hint(_read_pair_operator, Path(path))


def _read_pair_operator(path: Path) -> tuple[InterpolationOperator, CacheSummary]:
    with _opened(path) as (_, meta, headers, arrays):
        s, t, n, f = headers["coarse_interp"].shape
    operator = InterpolationOperator.from_arrays(arrays, method=str(meta.get("method", METHOD)))
    summary = CacheSummary(
        meta=meta,
        shape=(s, t, n, f),
        operator_shape=operator.shape,
        n_extrapolated=int(operator.extrapolated.sum()),
    )
    return operator, summary
