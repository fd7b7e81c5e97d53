"""Real full and read-only file systems for the disk tests: a small tmpfs, a read-only bind mount.

Both need root (CI and this machine run as root); where mounting is not permitted the test
is skipped with the reason printed.  Always unmounted on the way out.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = f"mounting is not permitted here (mount {' '.join(args)}: {proc.stderr.strip() or proc.returncode})"
        print(reason)
        pytest.skip(reason)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: "64k", "1m") mounted on ``path`` (created if needed)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (created if needed) bind-mounted read-only onto itself: no write, even as root."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(path), str(path))
    try:
        proc = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"remounting read-only is not permitted here: {proc.stderr.strip()}")
            pytest.skip(f"remounting read-only is not permitted here: {proc.stderr.strip()}")
        yield path
    finally:
        _umount(path)

