"""Members of plain-array ``.npz`` files, judged by their ``.npy`` headers before any data is read.

``np.load`` trusts a member's header: one that claims more data than the member holds makes
it allocate the claimed size (a ``MemoryError`` for a hostile header) or fail half-way
through the read, and an object dtype needs unpickling.  Reading the header first lets
bundle and cache readers refuse both with a clear message before numpy allocates anything.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np


class MemberError(ValueError):
    """A member whose header cannot be trusted; the message is the problem, without a file name."""


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype


def read_npy_header(fh: IO[bytes], key: str, member_size: int) -> NpyHeader:
    """Parse one ``.npy`` header; refuse object dtypes and sizes that disagree with the member.

    numpy's own ``ValueError`` for a garbled header passes through unchanged.
    """
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise MemberError(f"array {key!r} has unsupported npy version {version}")
    if dtype.hasobject:
        raise MemberError(f"array {key!r} holds Python objects (pickled data), which are never loaded")
    if any(n < 0 for n in shape):
        raise MemberError(f"array {key!r} has a negative dimension in its header shape {shape}")
    expected = fh.tell() + math.prod(shape) * dtype.itemsize  # Python ints: a hostile shape cannot overflow
    if member_size != expected:
        raise MemberError(f"array {key!r} has {member_size} bytes, its header says {expected} (truncated or altered)")
    return NpyHeader(tuple(int(n) for n in shape), dtype)


def member_name(zf: zipfile.ZipFile, key: str) -> str | None:
    """The member ``np.load(...)[key]`` reads (``key`` itself before ``key.npy``), or None."""
    names = set(zf.namelist())
    return key if key in names else f"{key}.npy" if f"{key}.npy" in names else None


def member_headers(zf: zipfile.ZipFile, keys: tuple[str, ...]) -> dict[str, NpyHeader]:
    """Checked headers of those of ``keys`` that the archive holds."""
    headers = {}
    for key in keys:
        name = member_name(zf, key)
        if name is not None:
            info = zf.getinfo(name)
            with zf.open(info) as fh:
                headers[key] = read_npy_header(fh, key, info.file_size)
    return headers
