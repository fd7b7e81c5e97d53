"""Content digests and their stat-keyed memo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from meshsr.provenance import digests as hashing
from meshsr.provenance.digests import file_sha256, memoised_sha256, read_memo


@pytest.fixture
def no_racy_window(monkeypatch):
    """Memoise files written a moment ago (the racy-clean rule has its own test)."""
    monkeypatch.setattr(hashing, "RACY_WINDOW_S", 0.0)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_file_sha256_is_sha256_of_the_bytes(tmp_path):
    data = os.urandom(3 * hashing.CHUNK + 17)  # several chunks and a partial one
    assert file_sha256(write(tmp_path / "f", data)) == hashlib.sha256(data).hexdigest()


def test_memo_records_digest_and_stat(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"abc")
    memo = tmp_path / "memo.json"
    assert memoised_sha256(f, memo) == hashlib.sha256(b"abc").hexdigest()
    entry = read_memo(memo)[str(f.resolve())]
    st = f.stat()
    assert entry["stat"] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def test_unchanged_file_is_not_rehashed(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"abc")
    memo = tmp_path / "memo.json"
    memoised_sha256(f, memo)
    data = read_memo(memo)
    data[str(f.resolve())]["sha256"] = "from-the-memo"  # a rehash would not return this
    memo.write_text(json.dumps(data))
    assert memoised_sha256(f, memo) == "from-the-memo"


def test_touch_rehashes_to_the_same_digest_and_updates_the_stat(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"abc")
    memo = tmp_path / "memo.json"
    first = memoised_sha256(f, memo)
    old_stat = read_memo(memo)[str(f.resolve())]["stat"]
    os.utime(f, (f.stat().st_atime, f.stat().st_mtime + 100))
    assert memoised_sha256(f, memo) == first
    assert read_memo(memo)[str(f.resolve())]["stat"] != old_stat


def test_same_size_rewrite_restored_to_old_mtime_is_rehashed(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"abc")
    memo = tmp_path / "memo.json"
    before = f.stat()
    first = memoised_sha256(f, memo)
    f.write_bytes(b"abd")  # same size, in place (same inode)
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))  # what cp -p / rsync -a do
    assert f.stat().st_mtime_ns == before.st_mtime_ns and f.stat().st_size == before.st_size
    assert memoised_sha256(f, memo) == hashlib.sha256(b"abd").hexdigest() != first


def test_cp_p_over_the_input_is_rehashed(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"one")
    other = write(tmp_path / "other", b"two")
    os.utime(other, (1_000_000_000, 1_000_000_000))
    memo = tmp_path / "memo.json"
    memoised_sha256(f, memo)
    shutil.copy2(other, f)
    assert memoised_sha256(f, memo) == hashlib.sha256(b"two").hexdigest()


def test_recently_changed_file_is_hashed_but_not_memoised(tmp_path):
    f = write(tmp_path / "f", b"abc")  # changed just now: within the racy window
    memo = tmp_path / "memo.json"
    assert memoised_sha256(f, memo) == hashlib.sha256(b"abc").hexdigest()
    assert str(f.resolve()) not in read_memo(memo)


def test_unreadable_memo_is_rebuilt(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"abc")
    memo = write(tmp_path / "memo.json", b"{not json")
    assert memoised_sha256(f, memo) == hashlib.sha256(b"abc").hexdigest()
    assert str(f.resolve()) in read_memo(memo)


def test_memo_in_a_new_directory_is_created(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"abc")
    memo = tmp_path / ".snakemake" / "meshsr" / "memo.json"
    memoised_sha256(f, memo)
    assert str(f.resolve()) in read_memo(memo)


def test_deleted_files_are_forgotten(tmp_path, no_racy_window):
    memo = tmp_path / "memo.json"
    gone = write(tmp_path / "gone", b"x")
    memoised_sha256(gone, memo)
    gone.unlink()
    memoised_sha256(write(tmp_path / "kept", b"y"), memo)
    assert list(read_memo(memo)) == [str((tmp_path / "kept").resolve())]


def test_unwritable_memo_still_gives_the_digest(tmp_path, no_racy_window):
    f = write(tmp_path / "f", b"abc")
    memo = tmp_path / "memo.json"
    memo.mkdir()  # cannot be read or replaced, like a memo in a read-only workdir
    assert memoised_sha256(f, memo) == hashlib.sha256(b"abc").hexdigest()
    assert memo.is_dir()


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        memoised_sha256(tmp_path / "nope", tmp_path / "memo.json")
