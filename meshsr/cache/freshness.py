"""Is a valid pair cache still the cache of its inputs and of this code?  And the command that rebuilds it.

A cache records the sha256 digests of the two input files it was built from and the
fingerprint of the code that built it (``code``: :func:`cache_code_fingerprint`, the
import closure of :mod:`meshsr.cache.build`, see :mod:`meshsr.provenance.code`).  A
reader compares them with the current files (through the workflow's digest memo, so an
unchanged multi-GB input is not rehashed) and with the running code, and refuses a stale
cache, naming the pair and the reason and quoting the command that rebuilds it.  (A cache
of another ``format_version`` is refused the same way by the readers in
:mod:`meshsr.cache.format`, which cannot read further.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from meshsr.errors import InputError
from meshsr.provenance.code import OUTPUT_CODE, code_fingerprint
from meshsr.provenance.digests import file_sha256, memoised_sha256
from meshsr.provenance.rerun import snakemake_command

if TYPE_CHECKING:
    from meshsr.cache.format import CacheSummary, PairCache


class StaleCacheError(InputError):
    """A well-formed cache of other inputs, other cache code or another format version."""


DEFAULT_CACHE_DIR = "results/cache"


def rebuild_command(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """The command that rebuilds the cache at ``path``, whatever Snakemake's records say.

    ``--force`` reruns the job even when Snakemake has no reason to (a cache written by
    another working directory sharing the cache dir).  The user's ``--configfile`` and
    ``--config`` come after the target (:func:`meshsr.provenance.rerun.snakemake_command`),
    ``cache_dir`` too when it is not the default; words are quoted for the shell.
    """
    path = Path(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else path.parent
    is_default = os.path.normpath(cache_dir) == os.path.normpath(DEFAULT_CACHE_DIR)
    return snakemake_command(path, () if is_default else (f"cache_dir={cache_dir}",))


def cache_code_fingerprint() -> str:
    """Fingerprint of the running code that makes pair caches (= the ``code`` param of rule pair_cache)."""
    return code_fingerprint(OUTPUT_CODE["pair_cache"])


def _pair(meta: dict, path: str | Path) -> str:
    if "source" in meta and "target" in meta:
        return f"{meta['source']}_{meta['target']}"
    return Path(path).stem


def stale_cache_error(path: str | Path, meta: dict, reason: str, rebuild: str | None = None) -> StaleCacheError:
    """The refusal of a stale cache: the pair, ``reason`` and the command that rebuilds it."""
    rebuild = rebuild or rebuild_command(path)
    return StaleCacheError(path, f"stale cache for pair {_pair(meta, path)}: {reason}; rebuild it with: {rebuild}")


def code_problem(meta: dict) -> str | None:
    """Why ``meta`` says the cache was built by other cache code than the running one; None if it was not."""
    recorded = meta.get("code")
    if not isinstance(recorded, str):
        return "built before code fingerprints were recorded"
    running = cache_code_fingerprint()
    if recorded != running:
        return f"built by other cache code (fingerprint {recorded[:12]}, running {running[:12]})"
    return None


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
    """Refuse a cache built by other cache code or from other input files than the current ones.

    ``rebuild`` is the command quoted in the refusal (default :func:`rebuild_command`);
    ``memo`` reuses the workflow's digest memo instead of rehashing unchanged inputs.
    """
    rebuild = rebuild or rebuild_command(path)
    problem = code_problem(cache.meta)
    if problem is not None:
        raise stale_cache_error(path, cache.meta, problem, rebuild)
    pair = _pair(cache.meta, path)
    for role, current in (("source", src_path), ("target", dst_path)):
        digest = _current_digest(current, memo)
        if digest is None:
            raise StaleCacheError(
                path,
                f"cannot verify cache for pair {pair}: {role} input {current} does not exist; "
                f"rebuild it with: {rebuild}",
            )
        if cache.meta.get(f"{role}_sha256") != digest:
            reason = f"{role} input {current} changed since the cache was built"
            raise stale_cache_error(path, cache.meta, reason, rebuild)
