"""Atomic file writes: a temporary file in the destination directory, then ``os.replace``.

A crash (even ``kill -9``) leaves at worst a stray ``.tmp-*`` file, never a truncated
file under the final name, and concurrent writers of the same path never tear it.  A write
that the file system refuses (full, read-only, no permission) becomes :class:`WriteError`
through :func:`write_error`: one line with the path, the problem and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from meshsr.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` (uncompressed) to ``path`` atomically; object arrays are refused."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"refusing to write object array {name!r} to {path}")
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


class WriteError(InputError):
    """A write the file system refused (no space, read-only, no permission), with what to do."""


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system of ``path`` or of its nearest existing parent; None if unknown."""
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def size_text(n_bytes: int) -> str:
    """A size for messages: MB (10^6 bytes) with one decimal, kB below 0.1 MB."""
    return f"{n_bytes / 1e3:.0f} kB" if n_bytes < 100_000 else f"{n_bytes / 1e6:.1f} MB"


def space_problem(what: str, needed: int | None, free: int | None, remedy: str) -> str:
    """The message of a write that needs more space than there is."""
    sizes = ""
    if needed is not None and free is not None:
        sizes = f" (about {size_text(needed)} needed, {size_text(free)} free)"
    return f"no space left on device writing {what}{sizes}; free space or {remedy}"


def write_error(exc: OSError, path: str | Path, what: str, remedy: str, needed: int | None = None) -> WriteError | None:
    """One-line :class:`WriteError` for an OSError that says the file system refused a write; None for others.

    ``what`` names what was written ("the pair cache"), ``remedy`` the alternative to
    fixing the file system ("set cache_dir elsewhere"), ``needed`` its size in bytes.
    """
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(path, space_problem(what, needed, free_bytes(path), remedy))
    if exc.errno == errno.EROFS:
        return WriteError(path, f"read-only file system, cannot write {what}; make it writable or {remedy}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return WriteError(path, f"permission denied writing {what}; make it writable or {remedy}")
    return None
