"""One store for every experiment: Snakemake's between-workflow output cache for the pair caches.

Two temporary working directories (two experiments, each with its own ``cache_dir``) share one
store through ``SNAKEMAKE_OUTPUT_CACHE`` and ``snakemake --cache``, through the real CLI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cache_helpers import change_content, user_inputs
from test_workflow_cache import info_rows, meta
from train_helpers import TINY_TRAIN
from workflow_helpers import Workflow, copy_workflow, job_counts

from meshsr.cache.keys import CURRENT, FOREIGN, OUTDATED, built_in, key_status

pytestmark = pytest.mark.integration

TWO = {"coarse": 6, "fine": 9}
CACHE = "results/cache/coarse_fine.npz"
CACHE_LOG = "results/logs/cache/coarse_fine.log"
MODEL = "results/models/coarse_fine.pt"
TRAIN = {**TINY_TRAIN, "epochs": 1, "steps_per_epoch": 2}
FETCHED = f"Symlinking output file {CACHE} from cache"


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Path:
    """The shared store, named to every snakemake run of the test as users do: in the environment."""
    path = tmp_path / "store"
    path.mkdir()
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(path))
    return path


def experiment(root: Path) -> Workflow:
    """A working directory with its own copy of the same user inputs (coarse, fine) and default cache_dir."""
    wf = copy_workflow(root)
    wf.update_config(meshes=user_inputs(root, TWO, n_sim=3, n_frames=4), train=TRAIN)
    return wf


def entries(store: Path) -> list[Path]:
    return sorted(p for p in store.iterdir() if p.suffix == ".npz")


def text(proc) -> str:
    return proc.stdout + proc.stderr


def built_here_and_stored(wf: Workflow, store: Path) -> Path:
    """Run the caches with --cache (after the targets: it takes rule names).

    The cache was built by its job here and now links to its store entry.
    """
    out = text(wf.run("caches", "--cache"))
    assert f"Moving output file {CACHE} to cache" in out, out
    assert "cache key: " in (wf.root / CACHE_LOG).read_text()  # the job ran here
    cache = wf.root / CACHE
    assert cache.is_symlink() and Path(os.path.realpath(cache)).parent == store
    return Path(os.path.realpath(cache))


def test_second_workdir_with_the_same_inputs_takes_the_cache_from_the_store(tmp_path, store):
    a, b = experiment(tmp_path / "a"), experiment(tmp_path / "b")
    entry = built_here_and_stored(a, store)
    assert entries(store) == [entry]

    plan = text(b.run("-n", "caches", "--cache"))
    assert f"Output file {CACHE} will be obtained from global between-workflow cache" in plan, plan

    out = text(b.run(MODEL, "--cache"))
    assert FETCHED in out and "Moving output file" not in out, out
    assert (b.root / CACHE_LOG).read_text() == ""  # Snakemake made the log; the cache script never ran in b
    assert os.path.realpath(b.root / CACHE) == str(entry) and entries(store) == [entry]
    assert meta(b.root / CACHE)["built_in"]["workdir"] == os.path.realpath(a.root)
    batches_log = (b.root / "results/logs/batches/coarse_fine.log").read_text()
    assert CACHE in batches_log and (b.root / MODEL).stat().st_size > 0  # trained from the shared entry

    # Snakemake keeps it: nothing to do in b, with or without --cache.
    for args in (("--cache",), ()):
        jobs = job_counts(b.run("-n", MODEL, "--quiet", "rules", *args).stdout)
        assert jobs == {}, jobs

    # cache_info says where each pair's file lives: the store entry.
    b.run("cache_info")
    row = info_rows(b.root / "results/cache_info.tsv")["coarse_fine"]
    assert row["status"] == "valid" and row["location"] == str(entry)


def test_changed_input_gets_a_new_entry_and_the_other_workdir_keeps_its_own(tmp_path, store):
    a, b = experiment(tmp_path / "a"), experiment(tmp_path / "b")
    entry = built_here_and_stored(a, store)
    assert FETCHED in text(b.run("caches", "--cache"))
    before = entry.read_bytes()

    change_content(b.root / "inputs/coarse.npz")
    new_entry = built_here_and_stored(b, store)
    assert new_entry != entry and entries(store) == sorted([entry, new_entry])
    assert meta(b.root / CACHE)["key"] != meta(a.root / CACHE)["key"]

    # a still links to its own entry, byte for byte, and has nothing to redo.
    assert os.path.realpath(a.root / CACHE) == str(entry) and entry.read_bytes() == before
    assert job_counts(a.run("-n", "caches", "--quiet", "rules", "--cache").stdout) == {}
    a.run("cache_info")
    row = info_rows(a.root / "results/cache_info.tsv")["coarse_fine"]
    assert row["status"] == "valid" and row["location"] == str(entry)

    # Both contents are in the store now: putting the old bytes back in b fetches the old entry.
    shutil.copy(a.root / "inputs/coarse.npz", b.root / "inputs/coarse.npz")
    out = text(b.run("caches", "--cache"))
    assert FETCHED in out and os.path.realpath(b.root / CACHE) == str(entry), out


def test_deleted_records_and_a_changed_input_rebuild_rather_than_refuse(tmp_path, store):
    a, b = experiment(tmp_path / "a"), experiment(tmp_path / "b")
    entry = built_here_and_stored(a, store)
    assert FETCHED in text(b.run("caches", "--cache"))

    shutil.rmtree(b.root / ".snakemake")
    change_content(b.root / "inputs/fine.npz")
    proc = b.run("caches", "--cache", check=False)
    assert proc.returncode == 0 and "ERROR" not in text(proc), text(proc)
    assert "cache key: " in (b.root / CACHE_LOG).read_text()  # rebuilt here, not refused as another's cache
    assert os.path.realpath(b.root / CACHE) not in (str(entry), "") and len(entries(store)) == 2
    assert os.path.realpath(a.root / CACHE) == str(entry)


def test_links_to_one_store_entry_are_two_places_but_one_shared_cache_dir_is_one(tmp_path, monkeypatch):
    """key_status: another directory's link to the same store entry is not 'foreign'; the same file is."""
    store_entry = tmp_path / "store" / "0123.npz"
    store_entry.parent.mkdir()
    store_entry.write_bytes(b"")
    caches = {}
    for name in ("a", "b"):
        (tmp_path / name / "results/cache").mkdir(parents=True)
        caches[name] = tmp_path / name / "results/cache/c_f.npz"
        caches[name].symlink_to(store_entry)
    monkeypatch.chdir(tmp_path / "a")
    theirs = {"key": "1" * 64, "built_in": built_in(caches["a"])}
    assert theirs["built_in"]["cache"] == str(caches["a"])  # the link, not the store entry
    monkeypatch.chdir(tmp_path / "b")
    assert key_status(theirs, "1" * 64, caches["b"]) == CURRENT
    assert key_status(theirs, "2" * 64, caches["b"]) == OUTDATED  # b may rebuild its own link
    assert key_status(theirs, "2" * 64, caches["a"]) == FOREIGN  # a's own file stays a's
