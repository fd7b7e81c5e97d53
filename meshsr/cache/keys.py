"""Cache keys: which inputs and code a pair cache belongs to, decided before any job runs.

The key of a pair cache is the hex digest

    key = sha256("source " id(src) LF "target " id(dst) LF "code " F LF)

where F is the cache code fingerprint (:func:`meshsr.cache.freshness.cache_code_fingerprint`)
and id(x) identifies one input:

* ``sha256:<hex digest of the file's bytes>`` for a user's file (it exists before the run);
* ``example:<hex digest of the example rule's settings and code>`` for a generated example
  file, which may not exist when the workflow plans the run.  Its key is the same before and
  after the file is generated; its content is tracked by Snakemake itself (a workflow output
  that is regenerated is newer than the caches made from it).

The workflow gives the key to the cache job, which records it in ``meta["key"]`` together
with where it was built (``meta["built_in"]``: the working directory and the cache file,
both resolved).  ``rules/cache.smk`` makes each cache depend on a marker file named by its
current key; :func:`key_status` is the check the workflow runs on an existing cache when it
plans a run.  Everything here reads at most the small ``meta`` member of a cache (never
unpickling) and the ``.npy`` headers of a mesh bundle, and imports neither scipy nor torch:
the workflow calls it while it parses.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from meshsr.mesh.npz import MemberError, member_headers, read_npy_header

CURRENT = "current"  # built from the current inputs by the current code
OUTDATED = "outdated"  # another key, unreadable, or of no (other) working directory: rebuild it here
FOREIGN = "foreign"  # another key, written at this very path by another existing working directory


def file_identity(digest: str) -> str:
    """id() of a user's input file with this sha256 digest."""
    return f"sha256:{digest}"


def example_identity(settings: dict[str, Any]) -> str:
    """id() of a generated example input: a digest of what generates it (JSON-serialisable settings)."""
    text = json.dumps(settings, sort_keys=True)
    return f"example:{hashlib.sha256(text.encode()).hexdigest()}"


def cache_key(source: str, target: str, code: str) -> str:
    """The key of the cache of inputs with ids ``source`` and ``target``, built by code fingerprint ``code``."""
    return hashlib.sha256(f"source {source}\ntarget {target}\ncode {code}\n".encode()).hexdigest()


def location(cache_path: str | Path) -> str:
    """Where a cache file is: its directory resolved, its own name kept.

    A cache file that Snakemake's output cache (``--cache``) moved into its store is a
    symlink to the store entry; the entry is not followed, so the caches of two working
    directories that link to one entry are still two places.
    """
    path = Path(cache_path)
    return os.path.join(os.path.realpath(path.parent), path.name)


def built_in(cache_path: str | Path) -> dict[str, str]:
    """Where a cache is being built: this working directory (resolved) and the cache file's :func:`location`."""
    return {"workdir": os.path.realpath(os.getcwd()), "cache": location(cache_path)}


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The ``meta`` of a cache file as a dict; None when there is no file or it cannot be read as one."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("meta.npy")
            with zf.open(info) as fh:
                read_npy_header(fh, "meta", info.file_size)
            with zf.open(info) as fh:
                meta = np.lib.format.read_array(fh, allow_pickle=False)
        meta = json.loads(str(meta)) if meta.ndim == 0 and meta.dtype.kind == "U" else None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, MemberError):
        return None
    return meta if isinstance(meta, dict) else None


def key_status(meta: dict[str, Any] | None, key: str, cache_path: str | Path) -> str:
    """:data:`CURRENT`, :data:`OUTDATED` or :data:`FOREIGN` for an existing cache whose meta is ``meta``.

    Foreign means: another key, and the cache was written at this very path (a shared
    cache directory) by a working directory that is not this one and still exists.  A
    cache whose recorded path is elsewhere (a copied working directory or cache directory,
    or another working directory's link to the same entry of Snakemake's output cache) or
    whose builder is gone (or unknown) is outdated: rebuilding it here harms nobody (a
    rebuild replaces a link, never the store entry it points to).
    """
    if meta is None:
        return OUTDATED
    if meta.get("key") == key:
        return CURRENT
    built = meta.get("built_in")
    if not isinstance(built, dict) or not all(isinstance(built.get(k), str) for k in ("workdir", "cache")):
        return OUTDATED
    if os.path.realpath(built["workdir"]) == os.path.realpath(os.getcwd()):
        return OUTDATED
    if location(built["cache"]) != location(cache_path):
        return OUTDATED
    return FOREIGN if os.path.isdir(built["workdir"]) else OUTDATED


def foreign_problem(meta: dict[str, Any], key: str, cache_dir: str | Path, rebuild: str) -> str:
    """Why a foreign cache is neither used nor rebuilt, and what to do (one line, without the path)."""
    pair = f"{meta.get('source')}_{meta.get('target')}"
    other = meta["built_in"]["workdir"]
    inputs = f"{meta.get('source_path')} and {meta.get('target_path')}"
    recorded = str(meta.get("key") or "none")[:12]
    return (
        f"cache_dir {cache_dir} holds the cache of pair {pair} that the working directory {other} built "
        f"from other inputs or code ({inputs} there; key {recorded}, here {key[:12]}), so this run neither "
        "uses it nor rebuilds over it; give each experiment its own cache_dir, or share caches through "
        "Snakemake's output cache (SNAKEMAKE_OUTPUT_CACHE and --cache), or rebuild it here "
        f"(then {other} refuses it): {rebuild}"
    )


def estimated_cache_bytes(target_path: str | Path) -> int | None:
    """Size of a pair cache with this destination bundle, from its ``.npy`` headers; None when unknown.

    Two float32 field arrays of shape (S, T, N_dst, F), the operator (at most D+1 int64
    indices and float64 weights per destination row), the flags and the zip overhead.
    """
    try:
        with zipfile.ZipFile(target_path) as zf:
            headers = member_headers(zf, ("fields", "points"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    fields, points = headers.get("fields"), headers.get("points")
    if fields is None or points is None or len(fields.shape) != 4 or len(points.shape) != 2:
        return None
    n_dst, dim = points.shape
    return 8 * math.prod(fields.shape) + 16 * n_dst * (dim + 1) + 9 * n_dst + 16384
