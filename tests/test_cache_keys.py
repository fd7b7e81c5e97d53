"""Cache keys and ownership (meshsr.cache.keys), and what a cache job does on a full or read-only cache_dir."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from cache_helpers import pickled_object_npz, random_bytes, trap_fires, truncate, write_bundle
from mount_helpers import read_only, tmpfs

from meshsr.atomic import WriteError
from meshsr.cache import build
from meshsr.cache.build import CACHE_DIR_TAG, build_and_write, make_pair_cache
from meshsr.cache.format import write_pair_cache
from meshsr.cache.freshness import cache_code_fingerprint
from meshsr.cache.keys import (
    CURRENT,
    FOREIGN,
    OUTDATED,
    built_in,
    cache_key,
    estimated_cache_bytes,
    example_identity,
    file_identity,
    key_status,
    read_meta,
)
from meshsr.provenance.digests import file_sha256

LOG = logging.getLogger("test")


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    src = write_bundle(tmp_path / "in" / "a.npz", 8, n_sim=2, n_frames=3, n_fields=2)
    dst = write_bundle(tmp_path / "in" / "b.npz", 13, n_sim=2, n_frames=3, n_fields=2, seed=1)
    return src, dst


def test_the_key_depends_on_both_inputs_their_roles_and_the_code():
    a, b = file_identity("1" * 64), file_identity("2" * 64)
    key = cache_key(a, b, "code")
    assert len(key) == 64 and key == cache_key(a, b, "code")
    assert len({key, cache_key(b, a, "code"), cache_key(a, a, "code"), cache_key(a, b, "other code")}) == 4
    assert example_identity({"n": 1, "seed": 2}) == example_identity({"seed": 2, "n": 1})
    assert example_identity({"n": 1}) != example_identity({"n": 2})


def test_a_built_cache_records_the_key_of_its_inputs_or_the_one_it_was_given(inputs):
    src, dst = inputs
    meta = make_pair_cache(src, dst, "a", "b").meta
    code = cache_code_fingerprint()
    assert meta["key"] == cache_key(file_identity(file_sha256(src)), file_identity(file_sha256(dst)), code)
    assert make_pair_cache(src, dst, "a", "b", key="f" * 64).meta["key"] == "f" * 64


def test_read_meta_reads_only_a_plain_meta(inputs, tmp_path):
    assert trap_fires(tmp_path)
    path = tmp_path / "cache" / "a_b.npz"
    write_pair_cache(path, make_pair_cache(*inputs, "a", "b"))
    assert read_meta(path)["source"] == "a"
    assert read_meta(tmp_path / "missing.npz") is None
    marker = tmp_path / "executed"
    pickled_object_npz(tmp_path / "hostile.npz", marker, template=path)
    assert read_meta(tmp_path / "hostile.npz") is None and not marker.exists()
    for damage in (truncate, random_bytes):
        shutil.copy(path, tmp_path / "damaged.npz")
        damage(tmp_path / "damaged.npz")
        assert read_meta(tmp_path / "damaged.npz") is None


def test_key_status(tmp_path, monkeypatch):
    here, other = tmp_path / "here", tmp_path / "other"
    here.mkdir()
    other.mkdir()
    cache = tmp_path / "shared" / "a_b.npz"
    monkeypatch.chdir(here)
    mine = {"key": "1" * 64, "built_in": built_in(cache)}
    assert key_status(mine, "1" * 64, cache) == CURRENT
    assert key_status(mine, "2" * 64, cache) == OUTDATED  # built here from other inputs: rebuild
    assert key_status(None, "2" * 64, cache) == OUTDATED  # unreadable
    assert key_status({"key": "1" * 64}, "2" * 64, cache) == OUTDATED  # no builder recorded
    monkeypatch.chdir(other)
    theirs = {"key": "1" * 64, "built_in": built_in(cache)}
    monkeypatch.chdir(here)
    assert key_status(theirs, "1" * 64, cache) == CURRENT  # same inputs: shared
    assert key_status(theirs, "2" * 64, cache) == FOREIGN  # at this very path, by a directory still there
    assert key_status(theirs, "2" * 64, tmp_path / "copy" / "a_b.npz") == OUTDATED  # a copied cache
    other.rmdir()
    assert key_status(theirs, "2" * 64, cache) == OUTDATED  # its builder is gone


def test_the_size_estimate_from_the_headers_covers_the_cache(inputs, tmp_path):
    src, dst = inputs
    path = tmp_path / "a_b.npz"
    write_pair_cache(path, make_pair_cache(src, dst, "a", "b"))
    estimate = estimated_cache_bytes(dst)
    assert path.stat().st_size <= estimate <= path.stat().st_size + 40_000
    assert estimated_cache_bytes(tmp_path / "missing.npz") is None


def test_a_job_records_where_it_built_the_cache_and_tags_the_cache_dir(inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cache" / "a_b.npz"
    cache = build_and_write(*inputs, "a", "b", out, LOG, key="e" * 64)
    assert cache.meta["key"] == "e" * 64
    assert cache.meta["built_in"] == {"workdir": os.path.realpath(tmp_path), "cache": os.path.realpath(out)}
    assert read_meta(out) == json.loads(json.dumps(cache.meta))
    assert sorted(p.name for p in out.parent.iterdir()) == [CACHE_DIR_TAG, "a_b.npz"]


def test_full_disk_found_before_writing_is_one_line(inputs, tmp_path):
    with tmpfs(tmp_path / "full", "16k") as full:
        with pytest.raises(WriteError) as info:
            build_and_write(*inputs, "a", "b", full / "a_b.npz", LOG)
        assert sorted(p.name for p in full.iterdir()) == [CACHE_DIR_TAG]  # nothing half-written
    message = str(info.value)
    assert message.startswith(f"{full / 'a_b.npz'}: no space left on device writing the pair cache (about ")
    assert " kB needed, " in message and "\n" not in message
    assert message.endswith("free); free space or set cache_dir elsewhere (--config cache_dir=DIR)")


def test_disk_full_during_the_write_is_one_line_and_leaves_no_temporary_file(inputs, tmp_path, monkeypatch):
    """The free space looked sufficient (or unknown) but the write itself hits ENOSPC."""
    monkeypatch.setattr(build, "free_bytes", lambda path: None)
    with tmpfs(tmp_path / "full", "16k") as full:
        with pytest.raises(WriteError, match="no space left on device writing the pair cache") as info:
            build_and_write(*inputs, "a", "b", full / "a_b.npz", LOG)
        assert sorted(p.name for p in full.iterdir()) == [CACHE_DIR_TAG]
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_read_only_cache_dir_is_one_line_before_any_work(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "make_pair_cache", lambda *a, **k: pytest.fail("built despite a read-only cache dir"))
    with read_only(tmp_path / "ro") as ro:
        with pytest.raises(WriteError) as info:
            build_and_write(*inputs, "a", "b", ro / "a_b.npz", LOG)
        assert list(ro.iterdir()) == []
    assert str(info.value) == (
        f"{ro}: read-only file system, cannot write in the cache directory; make it writable or set cache_dir "
        "elsewhere (--config cache_dir=DIR)"
    )


def test_other_os_errors_are_not_disguised(inputs, tmp_path, monkeypatch):
    def broken(path, cache):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(build, "write_pair_cache", broken)
    with pytest.raises(OSError, match="Input/output error") as info:
        build_and_write(*inputs, "a", "b", tmp_path / "a_b.npz", LOG)
    assert not isinstance(info.value, WriteError)
