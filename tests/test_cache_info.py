"""The cache inventory: one row per file with its status, the TSV and the terminal table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cache_helpers import change_content, pickled_object_npz, random_bytes, trap_fires, truncate, write_bundle

from meshsr.cache.build import make_pair_cache
from meshsr.cache.format import write_pair_cache
from meshsr.cache.inventory import COLUMNS, format_table, inventory, to_tsv, write_tsv
from meshsr.provenance.digests import read_memo


@pytest.fixture
def setup(tmp_path) -> dict:
    """Three inputs and the caches of all three pairs."""
    sides = [("c", 6), ("m", 9), ("f", 12)]
    inputs = {name: write_bundle(tmp_path / "in" / f"{name}.npz", side, seed=i) for i, (name, side) in enumerate(sides)}
    cache_dir = tmp_path / "cache"
    pairs = {}
    for s, d in [("c", "m"), ("c", "f"), ("m", "f")]:
        write_pair_cache(cache_dir / f"{s}_{d}.npz", make_pair_cache(inputs[s], inputs[d], s, d))
        pairs[f"{s}_{d}"] = (str(inputs[s]), str(inputs[d]))
    return {"inputs": inputs, "cache_dir": cache_dir, "pairs": pairs, "memo": tmp_path / "memo.json"}


def statuses(rows) -> dict[str, str]:
    return {Path(r.file).name: r.status for r in rows}


def test_valid_caches_with_their_numbers(setup):
    rows = inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])
    assert statuses(rows) == {"c_f.npz": "valid", "c_m.npz": "valid", "m_f.npz": "valid"}
    row = next(r for r in rows if r.pair == "c_f")
    assert (row.source_nodes, row.destination_nodes, row.simulations, row.timesteps) == (36, 144, 2, 3)
    assert row.extrapolated_nodes is not None and row.size_mb > 0 and row.modified


def test_changed_input_makes_exactly_its_pairs_stale(setup):
    change_content(setup["inputs"]["m"])
    rows = inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])
    assert statuses(rows) == {"c_f.npz": "valid", "c_m.npz": "stale", "m_f.npz": "stale"}
    detail = next(r.detail for r in rows if r.pair == "c_m")
    assert "stale cache for pair c_m" in detail and "snakemake --cores 1 --force" in detail


def test_damaged_and_hostile_files_are_corrupt_and_nothing_runs(setup, tmp_path):
    assert trap_fires(tmp_path)
    cache_dir = setup["cache_dir"]
    truncate(cache_dir / "c_m.npz")
    random_bytes(cache_dir / "m_f.npz")
    marker = tmp_path / "executed"
    pickled_object_npz(cache_dir / "x_y.npz", marker, template=cache_dir / "c_f.npz")
    pickled_object_npz(cache_dir / "c_f.npz", marker, template=cache_dir / "c_f.npz")
    rows = inventory(cache_dir, setup["pairs"], memo=setup["memo"])
    assert statuses(rows) == {"c_f.npz": "corrupt", "c_m.npz": "corrupt", "m_f.npz": "corrupt", "x_y.npz": "corrupt"}
    assert not marker.exists()
    assert all(r.size_mb > 0 and r.source_nodes is None for r in rows)


def test_temporary_orphan_and_missing_files(setup):
    cache_dir = setup["cache_dir"]
    shutil.copy(cache_dir / "c_m.npz", cache_dir / ".tmp-c_f.npz-abc123.npz")
    shutil.copy(cache_dir / "c_m.npz", cache_dir / "old_pair.npz")
    (cache_dir / "c_f.npz").unlink()
    (cache_dir / "notes.txt").write_text("not a cache")
    rows = inventory(cache_dir, setup["pairs"], memo=setup["memo"])
    assert statuses(rows) == {
        ".tmp-c_f.npz-abc123.npz": "partial",
        "c_f.npz": "missing",
        "c_m.npz": "valid",
        "m_f.npz": "valid",
        "old_pair.npz": "stale",
    }
    assert next(r for r in rows if r.status == "partial").pair == "c_f"


def test_cache_of_another_pair_under_a_configured_name_is_stale(setup):
    shutil.copy(setup["cache_dir"] / "c_m.npz", setup["cache_dir"] / "c_f.npz")
    rows = inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])
    assert statuses(rows)["c_f.npz"] == "stale"
    assert "built for pair c_m" in next(r.detail for r in rows if r.pair == "c_f")


def _rewrite_meta(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta"] = np.array(json.dumps({**json.loads(str(arrays["meta"])), **changes}))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_caches_of_other_code_or_another_format_version_are_stale_with_the_reason(setup):
    _rewrite_meta(setup["cache_dir"] / "c_m.npz", code="0" * 64)
    _rewrite_meta(setup["cache_dir"] / "m_f.npz", format_version=0)
    rows = {r.pair: r for r in inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])}
    assert {pair: r.status for pair, r in rows.items()} == {"c_f": "valid", "c_m": "stale", "m_f": "stale"}
    assert "stale cache for pair c_m: built by other cache code (fingerprint 000000000000" in rows["c_m"].detail
    assert rows["c_m"].source_nodes == 36  # well-formed: its numbers are still listed
    assert "stale cache for pair m_f: format_version 0, this meshsr reads 1" in rows["m_f"].detail
    cache_dir = setup["cache_dir"]
    assert rows["m_f"].detail.endswith(f"--force {cache_dir / 'm_f.npz'} --config cache_dir={cache_dir}")


def test_verify_finds_arrays_rewritten_with_other_values(setup):
    path = setup["cache_dir"] / "c_f.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["fine_features"] = arrays["fine_features"] + np.float32(1)  # same shape, dtype and meta
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    assert statuses(inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])) == dict.fromkeys(
        ["c_f.npz", "c_m.npz", "m_f.npz"], "valid"
    )
    rows = inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"], verify=True)
    assert statuses(rows) == {"c_f.npz": "corrupt", "c_m.npz": "valid", "m_f.npz": "valid"}
    detail = next(r.detail for r in rows if r.pair == "c_f")
    assert detail.startswith("data digest differs") and "rebuild it with: snakemake --cores 1 --force" in detail
    assert "c_f.npz: corrupt: data digest differs" in format_table(rows, setup["cache_dir"])

def test_missing_input_makes_its_pairs_stale(setup):
    setup["inputs"]["f"].unlink()
    rows = inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])
    assert statuses(rows) == {"c_f.npz": "stale", "c_m.npz": "valid", "m_f.npz": "stale"}


@pytest.mark.parametrize("exists", [True, False], ids=["empty", "missing"])
def test_empty_or_missing_cache_dir(exists, tmp_path):
    cache_dir = tmp_path / "cache"
    if exists:
        cache_dir.mkdir()
    rows = inventory(cache_dir, {"a_b": ("a.npz", "b.npz")})
    assert [(r.pair, r.status) for r in rows] == [("a_b", "missing")]
    assert inventory(cache_dir, {}) == []
    assert "no cache files" in format_table([], cache_dir)


def test_inputs_are_hashed_through_the_memo(setup, monkeypatch):
    from meshsr.provenance import digests as hashing

    monkeypatch.setattr(hashing, "RACY_WINDOW_S", 0.0)
    inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])
    assert set(read_memo(setup["memo"])) == {str(p.resolve()) for p in setup["inputs"].values()}


def test_tsv_has_every_column_and_the_total(setup, tmp_path):
    shutil.copy(setup["cache_dir"] / "c_m.npz", setup["cache_dir"] / "old_pair.npz")
    rows = inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"])
    path = tmp_path / "out" / "info.tsv"
    write_tsv(path, rows)
    assert path.read_text() == to_tsv(rows)
    table = list(csv.DictReader(path.open(), delimiter="\t"))
    assert tuple(table[0]) == COLUMNS
    assert list(COLUMNS[:10]) == [
        "file", "pair", "size_mb", "modified", "source_nodes", "destination_nodes",
        "simulations", "timesteps", "extrapolated_nodes", "status",
    ]
    *files, total = table
    assert len(files) == 4 and total["file"] == "TOTAL"
    assert float(total["size_mb"]) == pytest.approx(sum(float(r["size_mb"]) for r in files), abs=0.01)
    on_disk = sum(p.stat().st_size for p in setup["cache_dir"].glob("*.npz")) / 1e6
    assert on_disk == pytest.approx(float(total["size_mb"]), abs=0.01)


def test_terminal_table_lists_files_and_problems(setup):
    random_bytes(setup["cache_dir"] / "m_f.npz")
    text = format_table(inventory(setup["cache_dir"], setup["pairs"], memo=setup["memo"]), setup["cache_dir"])
    assert "status" in text.splitlines()[1] and "TOTAL" in text
    assert "m_f.npz: corrupt: corrupt pair cache" in text
    assert sum(" valid" in line for line in text.splitlines()) == 2
