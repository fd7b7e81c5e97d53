"""Is a valid pair cache still the cache of its inputs?  And the command that rebuilds it.

A cache records the sha256 digests of the two input files it was built from; a reader
compares them with the current files (through the workflow's digest memo, so an
unchanged multi-GB input is not rehashed) and refuses a stale cache, quoting the
command that rebuilds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from meshsr.errors import InputError
from meshsr.provenance.digests import file_sha256, memoised_sha256

if TYPE_CHECKING:
    from meshsr.cache.format import CacheSummary, PairCache


class StaleCacheError(InputError):
    """A valid cache whose recorded input digests no longer match the inputs."""


DEFAULT_CACHE_DIR = "results/cache"


def rebuild_command(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """The command that rebuilds the cache at ``path``, whatever Snakemake's records say.

    ``--force`` reruns the job even when Snakemake has no reason to (a cache written by
    another working directory sharing the cache dir, or records lost with ``.snakemake``).
    """
    path = Path(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else path.parent
    is_default = os.path.normpath(cache_dir) == os.path.normpath(DEFAULT_CACHE_DIR)
    config = "" if is_default else f" --config cache_dir={cache_dir}"
    return f"snakemake --cores 1 --force{config} {path}"


def _current_digest(path: str | Path, memo: str | Path | None) -> str | None:
    try:
        return memoised_sha256(path, memo) if memo is not None else file_sha256(path)
    except FileNotFoundError:
        return None


def check_fresh(
    cache: PairCache | CacheSummary,
    path: str | Path,
    src_path: str | Path,
    dst_path: str | Path,
    rebuild: str | None = None,
    *,
    memo: str | Path | None = None,
) -> None:
    """Refuse a cache whose recorded input digests differ from the current input files.

    ``rebuild`` is the command quoted in the refusal (default :func:`rebuild_command`);
    ``memo`` reuses the workflow's digest memo instead of rehashing unchanged inputs.
    """
    rebuild = rebuild or rebuild_command(path)
    pair = f"{cache.meta.get('source')}_{cache.meta.get('target')}"
    for role, current in (("source", src_path), ("target", dst_path)):
        digest = _current_digest(current, memo)
        if digest is None:
            raise StaleCacheError(
                path,
                f"cannot verify cache for pair {pair}: {role} input {current} does not exist; "
                f"rebuild it with: {rebuild}",
            )
        if cache.meta.get(f"{role}_sha256") != digest:
            raise StaleCacheError(
                path,
                f"stale cache for pair {pair}: {role} input {current} changed since the cache was built; "
                f"rebuild it with: {rebuild}",
            )
