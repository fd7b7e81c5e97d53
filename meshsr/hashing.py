"""Content fingerprints of input files, memoised by (size, mtime, ctime, inode).

Hashing a multi-GB mesh on every ``snakemake`` invocation would dominate start-up, so a
small JSON memo remembers the digest of each file as long as its stat signature is
unchanged.  Any write to a file changes its ctime, which the user cannot set back, so a
content change (even one restored with an old mtime by ``cp -p``) always rehashes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from meshsr.atomic import atomic_open

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def memoised_sha256(path: str | Path, memo_file: str | Path) -> str:
    """sha256 of ``path``, reusing the digest in ``memo_file`` while the file's stat is unchanged."""
    path = Path(path).resolve()
    memo_file = Path(memo_file)
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    key = str(path)
    signature = _signature(path)
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("stat") == signature:
        return str(entry["sha256"])
    digest = file_sha256(path)
    memo[key] = {"stat": signature, "sha256": digest}
    try:
        with atomic_open(memo_file) as fh:
            json.dump(memo, fh, indent=0, sort_keys=True)
    except OSError:
        pass  # a read-only workdir only costs a rehash next time
    return digest

