import mmap

import numpy as np
import pytest

from meshsr.cache.format import release_pages
from meshsr.memory import HUGE_PAGE_MIN_BYTES, AnonymousMap, fresh_array


def test_a_large_fresh_array_is_writable_anonymous_memory_of_the_shape_asked():
    n = HUGE_PAGE_MIN_BYTES // 4 + 7
    a = fresh_array((n, 1), np.float32)
    assert a.shape == (n, 1) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert isinstance(_root(a), AnonymousMap)
    a[:] = 3.0
    assert float(a.sum(dtype=np.float64)) == 3.0 * n


def _root(a: np.ndarray):
    base = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_a_small_fresh_array_is_plain_numpy_memory():
    a = fresh_array((10, 3), np.float64)
    assert a.shape == (10, 3) and a.base is None


def test_interpolation_into_huge_page_memory_gives_scipys_product(monkeypatch):
    from meshsr import memory
    from meshsr.interp.operator import InterpolationOperator

    monkeypatch.setattr(memory, "HUGE_PAGE_MIN_BYTES", 0)  # every output on the mapped path
    rng = np.random.default_rng(3)
    pts = rng.random((80, 2))
    from scipy.spatial import Delaunay

    op = InterpolationOperator.build(pts, Delaunay(pts).simplices, rng.random((300, 2)))
    fields = rng.normal(size=(5, 80, 2)).astype(np.float32)
    out = op.apply(fields)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert isinstance(_root(out), AnonymousMap)
    np.testing.assert_array_equal(out, np.stack([op.matrix @ frame for frame in fields]).astype(np.float32))


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="page release is Linux-only")
def test_releasing_pages_never_drops_the_values_of_anonymous_memory():
    """MADV_DONTNEED on anonymous memory zeroes it: release_pages must only touch file-backed maps."""
    a = fresh_array((HUGE_PAGE_MIN_BYTES // 8,), np.float64)
    a[:] = np.arange(len(a), dtype=np.float64)
    release_pages(a)
    assert a[-1] == len(a) - 1 and a[12345] == 12345.0
