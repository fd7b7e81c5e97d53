"""Pair cache files: round trip, validation of damaged or hostile files, freshness."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cache_helpers import (
    change_content,
    pickled_object_npz,
    random_bytes,
    rewrite_npz,
    trap_fires,
    truncate,
    write_bundle,
)

from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import (
    CacheError,
    PairCache,
    data_problem,
    inspect_pair_cache,
    read_pair_cache,
    release_pages,
    write_pair_cache,
)
from meshsr.cache.freshness import StaleCacheError, cache_code_fingerprint, check_fresh, rebuild_command
from meshsr.example.mesh import make_mesh
from meshsr.interp.operator import InterpolationOperator
from meshsr.learn.pair_data import load_pair_data

READERS = [read_pair_cache, inspect_pair_cache]


def _write_repeatedly(src: str, dst: str, out: str, times: int) -> None:
    cache = make_pair_cache(src, dst, "a", "b")
    for _ in range(times):
        write_pair_cache(out, cache)


@pytest.fixture
def pair(tmp_path) -> dict[str, Path]:
    """Two small bundles and a valid cache of the pair built from them."""
    src = write_bundle(tmp_path / "in" / "a.npz", 8, n_sim=2, n_frames=3, n_fields=2)
    dst = write_bundle(tmp_path / "in" / "b.npz", 13, n_sim=2, n_frames=3, n_fields=2, seed=1)
    cache = tmp_path / "cache" / "a_b.npz"
    write_pair_cache(cache, make_pair_cache(src, dst, "a", "b"))
    return {"src": src, "dst": dst, "cache": cache}


def test_round_trip_and_inspect_agree(pair):
    cache = read_pair_cache(pair["cache"])
    summary = inspect_pair_cache(pair["cache"])
    assert cache.interpolated.dtype == np.float32 and cache.interpolated.shape == (2, 3, 169, 2)
    assert summary.shape == cache.interpolated.shape
    assert summary.operator_shape == cache.operator.matrix.shape == (169, 64)
    assert summary.n_extrapolated == int(cache.extrapolated.sum())
    assert summary.meta == cache.meta
    assert (cache.meta["source"], cache.meta["target"]) == ("a", "b")


def test_write_leaves_no_temporary_file(pair):
    assert [p.name for p in pair["cache"].parent.iterdir()] == ["a_b.npz"]


@pytest.mark.parametrize("reader", READERS)
def test_missing_file_is_refused(reader, tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        reader(tmp_path / "a_b.npz")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("damage", [truncate, random_bytes], ids=["truncated", "random-bytes"])
def test_unreadable_file_is_corrupt_with_rebuild_command(reader, damage, pair):
    damage(pair["cache"])
    with pytest.raises(CacheError) as info:
        reader(pair["cache"])
    message = str(info.value)
    assert str(pair["cache"]) in message and "corrupt pair cache" in message
    assert f"--force {pair['cache']} --config cache_dir={pair['cache'].parent}" in message


@pytest.mark.parametrize("reader", READERS)
def test_pickled_object_array_is_refused_without_running_it(reader, pair, tmp_path):
    assert trap_fires(tmp_path), "the trap must be live for this test to mean anything"
    marker = tmp_path / "executed"
    hostile = pair["cache"].with_name("x_y.npz")
    pickled_object_npz(hostile, marker, template=pair["cache"])
    with pytest.raises(CacheError, match="holds Python objects"):
        reader(hostile)
    assert not marker.exists()


def flip_field_byte(path):
    """Flip one bit in the middle of the fine_features data: a valid npz whose zip CRC no longer matches."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("fine_features.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_data_byte_fails_the_crc_of_cache_info(pair):
    flip_field_byte(pair["cache"])
    with pytest.raises(CacheError, match="CRC"):
        inspect_pair_cache(pair["cache"])


def test_the_training_reader_maps_the_fields_and_the_data_digest_finds_a_flipped_byte(pair):
    before = read_pair_cache(pair["cache"]).target_fields.copy()
    flip_field_byte(pair["cache"])
    cache = read_pair_cache(pair["cache"])  # no CRC pass over every byte: the fields are mapped in place
    assert not cache.target_fields.flags.writeable and not cache.target_fields.flags.owndata
    assert (cache.target_fields != before).sum() == 1
    assert "CRC" in data_problem(pair["cache"], cache.meta)  # cache_verify finds it


def test_compressed_members_are_read_too(pair):
    cache = read_pair_cache(pair["cache"])
    with zipfile.ZipFile(pair["cache"]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    compressed = pair["cache"].with_suffix(".tmp")
    with zipfile.ZipFile(compressed, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    os.replace(compressed, pair["cache"])  # as meshsr writes: the mapped old file stays intact
    again = read_pair_cache(pair["cache"])
    np.testing.assert_array_equal(again.interpolated, cache.interpolated)
    np.testing.assert_array_equal(again.target_fields, cache.target_fields)
    assert data_problem(pair["cache"], again.meta) is None


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"extrapolated": None}, "missing arrays"),
        ({"coarse_interp": np.zeros((2, 3, 169, 2))}, "float32"),
        ({"fine_features": np.zeros((2, 3, 5, 2), np.float32)}, "field shapes"),
        ({"coarse_interp": np.full((2, 3, 169, 2), np.nan, np.float32)}, "NaN/Inf"),
        ({"op_indices": np.full(169 * 3, 64)}, "out of range"),
        ({"op_shape": np.array([168, 64])}, "operator shape"),
        ({"meta": np.array("not json")}, "JSON"),
        ({"meta": np.array(json.dumps({"source": "a"}))}, "no integer format_version"),
        ({"extrapolated": np.zeros(3, bool)}, "'extrapolated'"),
    ],
    ids=["missing-key", "float64", "shape", "nan", "index", "op-shape", "meta-json", "meta-no-version", "extrapolated"],
)
def test_malformed_layout_is_corrupt(reader, change, problem, pair):
    rewrite_npz(pair["cache"], **change)
    with pytest.raises(CacheError, match=problem):
        reader(pair["cache"])


@pytest.mark.parametrize("reader", READERS)
def test_header_disagreeing_with_member_size_is_refused(reader, pair):
    """A header that claims more data than the member holds is refused before any allocation."""
    with zipfile.ZipFile(pair["cache"]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    lying = io.BytesIO()
    np.lib.format.write_array_header_1_0(lying, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    members["op_data.npy"] = lying.getvalue() + b"\0" * 64  # a valid zip member (CRC fine), a lying header
    with zipfile.ZipFile(pair["cache"], "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CacheError, match="header says"):
        reader(pair["cache"])


@pytest.mark.parametrize("reader", READERS)
def test_fortran_ordered_fields_are_valid(reader, pair):
    expected = read_pair_cache(pair["cache"]).interpolated.copy()  # the file is rewritten in place
    rewrite_npz(pair["cache"], coarse_interp=np.asfortranarray(expected))
    assert reader(pair["cache"]).meta["source"] == "a"
    np.testing.assert_array_equal(read_pair_cache(pair["cache"]).interpolated, expected)


def test_the_recorded_data_digest_is_that_of_the_stored_arrays(pair):
    meta = read_pair_cache(pair["cache"]).meta
    assert len(meta["data_sha256"]) == 64
    assert data_problem(pair["cache"], meta) is None


@pytest.mark.parametrize("reader", READERS)
def test_arrays_rewritten_with_other_values_pass_the_readers_but_not_the_data_digest(reader, pair):
    """Same shapes, dtypes and meta, other numbers: the cheap structural checks cannot tell, the digest can."""
    cache = read_pair_cache(pair["cache"])
    rewrite_npz(pair["cache"], coarse_interp=cache.interpolated * np.float32(1.01))
    assert reader(pair["cache"]).meta == cache.meta
    assert data_problem(pair["cache"], cache.meta).startswith("data digest differs: the arrays are not those")
    no_digest = {k: v for k, v in cache.meta.items() if k != "data_sha256"}
    assert data_problem(pair["cache"], no_digest) == "no data digest recorded (meta has no data_sha256)"


def test_fresh_cache_passes(pair):
    cache = read_pair_cache(pair["cache"])
    check_fresh(cache, pair["cache"], pair["src"], pair["dst"])
    memo = pair["cache"].parent / "m.json"
    check_fresh(inspect_pair_cache(pair["cache"]), pair["cache"], pair["src"], pair["dst"], memo=memo)


@pytest.mark.parametrize("role", ["src", "dst"])
def test_changed_input_is_refused_naming_pair_and_command(role, pair):
    cache = read_pair_cache(pair["cache"])
    change_content(pair[role])
    with pytest.raises(StaleCacheError) as info:
        check_fresh(cache, pair["cache"], pair["src"], pair["dst"], rebuild="REBUILD-CMD")
    message = str(info.value)
    assert "stale cache for pair a_b" in message and str(pair[role]) in message
    assert message.endswith("rebuild it with: REBUILD-CMD")


def test_swapped_inputs_are_refused(pair):
    cache = read_pair_cache(pair["cache"])
    with pytest.raises(StaleCacheError, match="source input"):
        check_fresh(cache, pair["cache"], pair["dst"], pair["src"])


def test_missing_input_is_refused(pair):
    cache = read_pair_cache(pair["cache"])
    pair["src"].unlink()
    with pytest.raises(StaleCacheError, match="does not exist"):
        check_fresh(cache, pair["cache"], pair["src"], pair["dst"])


def test_default_refusal_quotes_the_rebuild_command(pair):
    cache = read_pair_cache(pair["cache"])
    change_content(pair["src"])
    with pytest.raises(StaleCacheError, match="rebuild it with: snakemake --cores 1 --force"):
        check_fresh(cache, pair["cache"], pair["src"], pair["dst"])


def rewrite_meta(path: Path, **changes) -> None:
    """Rewrite a cache's meta with some keys changed (None: removed)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
    meta.update(changes)
    rewrite_npz(path, meta=np.array(json.dumps({k: v for k, v in meta.items() if v is not None})))


def test_a_cache_records_the_fingerprint_of_the_code_that_built_it(pair):
    assert read_pair_cache(pair["cache"]).meta["code"] == cache_code_fingerprint()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"code": "1a2b3c4d" * 8}, "built by other cache code (fingerprint 1a2b3c4d1a2b, running "),
        ({"code": None}, "built before code fingerprints were recorded"),
    ],
    ids=["other-code", "no-code"],
)
def test_a_cache_of_other_code_is_refused_by_its_readers_with_the_rebuild_command(change, reason, pair):
    rewrite_meta(pair["cache"], **change)
    cache = read_pair_cache(pair["cache"])  # well-formed: the reader itself accepts it
    with pytest.raises(StaleCacheError) as info:
        check_fresh(cache, pair["cache"], pair["src"], pair["dst"], rebuild="REBUILD-CMD")
    assert f"stale cache for pair a_b: {reason}" in str(info.value)
    assert str(info.value).endswith("rebuild it with: REBUILD-CMD")
    with pytest.raises(StaleCacheError) as info:  # what training and evaluation call
        load_pair_data("a", "b", pair["src"], pair["dst"], pair["cache"], rebuild="REBUILD-CMD")
    assert reason in str(info.value) and str(info.value).endswith("rebuild it with: REBUILD-CMD")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("trap_in", ["fine_features", "op_data"])
def test_a_cache_of_another_format_version_is_stale_and_nothing_else_of_it_is_read(reader, trap_in, pair, tmp_path):
    assert trap_fires(tmp_path)
    marker = tmp_path / "executed"
    current = pair["cache"].with_name("x_y.npz")
    pickled_object_npz(current, marker, template=pair["cache"], key=trap_in)
    with pytest.raises(CacheError, match="holds Python objects"):  # this version: structure checked
        reader(current)
    rewrite_meta(pair["cache"], format_version=0)
    pickled_object_npz(pair["cache"], marker, template=pair["cache"], key=trap_in)
    with pytest.raises(StaleCacheError) as info:
        reader(pair["cache"])
    message = str(info.value)
    assert "stale cache for pair a_b: format_version 0, this meshsr reads 1; rebuild it with: " in message
    assert message.endswith(rebuild_command(pair["cache"]))
    with pytest.raises(StaleCacheError, match="format_version 0"):
        load_pair_data("a", "b", pair["src"], pair["dst"], pair["cache"])
    assert not marker.exists()


def test_rebuild_command():
    assert rebuild_command("results/cache/a_b.npz") == "snakemake --cores 1 --force results/cache/a_b.npz"
    # The target before --config, which would take it for one more key=value.
    expected = "snakemake --cores 1 --force /big/disk/a_b.npz --config cache_dir=/big/disk"
    assert rebuild_command("/big/disk/a_b.npz") == expected
    spaced = "snakemake --cores 1 --force '/my disk/a_b.npz' --config 'cache_dir=/my disk'"
    assert rebuild_command("/my disk/a_b.npz") == spaced


def test_concurrent_writers_never_leave_a_torn_file(pair, tmp_path):
    """Two processes rewrite the same cache (different contents) while this one reads it."""
    other_src = write_bundle(tmp_path / "in" / "a2.npz", 8, n_sim=2, n_frames=3, n_fields=2, seed=7)
    versions = {
        read_pair_cache(pair["cache"]).meta["source_sha256"],
        make_pair_cache(other_src, pair["dst"], "a", "b").meta["source_sha256"],
    }
    ctx = multiprocessing.get_context("spawn")
    writers = [
        ctx.Process(target=_write_repeatedly, args=(str(src), str(pair["dst"]), str(pair["cache"]), 40))
        for src in (pair["src"], other_src)
    ]
    for w in writers:
        w.start()
    seen = set()
    while any(w.is_alive() for w in writers):
        seen.add(read_pair_cache(pair["cache"]).meta["source_sha256"])  # raises on a torn file
    for w in writers:
        w.join()
    assert [w.exitcode for w in writers] == [0, 0]
    assert seen <= versions and read_pair_cache(pair["cache"]).meta["source_sha256"] in versions
    assert [p.name for p in pair["cache"].parent.iterdir()] == ["a_b.npz"]


def resident_file_kb() -> int:
    """This process's resident file-backed memory (Linux /proc), kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux only")
def test_mapped_fields_leave_memory_once_checked_and_when_released(tmp_path):
    src, cells = make_mesh(200, seed=1)
    dst, _ = make_mesh(2000, seed=2)
    operator = InterpolationOperator.build(src, cells, dst)
    fields = np.ones((2, 400, len(dst), 2), np.float32)  # about 13 MB each
    path = tmp_path / "a_b.npz"
    write_pair_cache(path, PairCache(fields, fields, operator, {"format_version": 1}))
    before = resident_file_kb()
    cache = read_pair_cache(path)  # the finiteness check touches every page, then releases them
    assert resident_file_kb() - before < fields.nbytes / 1024 / 2
    assert float(cache.target_fields.sum(dtype=np.float64)) == fields.size
    assert resident_file_kb() - before > fields.nbytes / 1024 * 0.8  # mapped while used
    release_pages(cache.target_fields)
    assert resident_file_kb() - before < fields.nbytes / 1024 / 2
