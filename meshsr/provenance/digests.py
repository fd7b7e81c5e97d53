"""Content fingerprints of input files, memoised by (size, mtime, ctime, inode).

Hashing a multi-GB mesh on every ``snakemake`` invocation would dominate start-up, so a
small JSON memo remembers the digest of each file as long as its stat signature is
unchanged.  Any write to a file changes its ctime, which the user cannot set back, so a
content change (even one restored with an old mtime by ``cp -p``) always rehashes.

A digest is only remembered once the file has been quiet for :data:`RACY_WINDOW_S`
seconds before it was hashed (git's "racy clean" rule): a file rewritten within the
same timestamp tick as the hash, with the same size, would otherwise keep a stale digest
on file systems with coarse timestamps.  Such a file is simply hashed again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from meshsr.atomic import atomic_open

CHUNK = 1 << 20
RACY_WINDOW_S = 2.0
# The workflow's memo, relative to its working directory (where Snakemake runs every job).
WORKFLOW_MEMO = ".snakemake/meshsr/sha256-memo.json"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def read_memo(memo_file: str | Path) -> dict[str, Any]:
    """The memo as a dict (empty when missing or unreadable: it is only a cache)."""
    try:
        memo = json.loads(Path(memo_file).read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(memo_file: Path, memo: dict[str, Any]) -> None:
    memo = {k: v for k, v in memo.items() if os.path.exists(k)}  # forget deleted files
    try:
        with atomic_open(memo_file) as fh:
            json.dump(memo, fh, indent=0, sort_keys=True)
    except OSError:
        pass  # a read-only workdir only costs a rehash next time


def memoised_sha256(path: str | Path, memo_file: str | Path) -> str:
    """sha256 of ``path``, reusing the digest in ``memo_file`` while the file's stat is unchanged."""
    path = Path(path).resolve()
    memo_file = Path(memo_file)
    memo = read_memo(memo_file)
    key = str(path)
    signature = _signature(path.stat())
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("stat") == signature and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    started = time.time()
    digest = file_sha256(path)
    after = path.stat()
    quiet = started - after.st_ctime_ns / 1e9 >= RACY_WINDOW_S  # ctime: the last real change
    if _signature(after) == signature and quiet:
        memo[key] = {"stat": signature, "sha256": digest}
        _write_memo(memo_file, memo)
    elif key in memo:
        del memo[key]
        _write_memo(memo_file, memo)
    return digest
