"""A cache is rebuilt exactly when its key changes, with or without Snakemake's records (real snakemake CLI).

Issue 10: lost records (.snakemake/ deleted), `cp -p` with an old mtime, copied working
directories and two working directories sharing one cache_dir.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
from cache_helpers import change_content, cp_p, set_old_mtime, snapshot, user_inputs
from train_helpers import TINY_TRAIN
from workflow_helpers import Workflow, copy_workflow, job_counts

pytestmark = pytest.mark.integration

THREE = {"coarse": 6, "medium": 9, "fine": 13}
PAIRS_OF_COARSE = {"coarse_medium", "coarse_fine"}
QUICK_TRAIN = {**TINY_TRAIN, "epochs": 1, "steps_per_epoch": 4}


def setup(wf: Workflow, inputs_root: Path | None = None, **config) -> dict[str, Path]:
    """User bundles (S=3, so that `all` can train) under inputs_root (default: the workdir); config 'meshes'."""
    root = inputs_root or wf.root
    meshes = user_inputs(root, THREE, n_sim=3, n_frames=4)
    if inputs_root is not None:
        meshes = {name: str(root / path) for name, path in meshes.items()}
    wf.update_config(meshes=meshes, train=QUICK_TRAIN, **config)
    return {name: root / f"inputs/{name}.npz" for name in THREE}


def cache_files(cache_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(cache_dir.glob("*.npz"))}


def change_keeping_an_old_mtime(path: Path, tmp: Path, factor: float = 1.5) -> None:
    """New content, restored with `cp -p` from a copy whose mtime is far older than any cache."""
    edited = tmp / f"edited-{path.name}"
    cp_p(path, edited)
    change_content(edited, factor)
    set_old_mtime(edited)
    cp_p(edited, path)


def plan(wf: Workflow, target: str) -> dict[str, int]:
    return job_counts(wf.run("-n", target).stdout)


def test_without_records_a_content_change_rebuilds_exactly_its_pairs_and_retrains(workflow, tmp_path):
    inputs = setup(workflow)
    workflow.run("all")
    before = {pair: snapshot(path) for pair, path in cache_files(workflow.root / "results/cache").items()}
    model = snapshot(workflow.root / "results/models/coarse_fine.pt")
    shutil.rmtree(workflow.root / ".snakemake")
    assert plan(workflow, "all") == {}  # nothing changed: the caches are kept without records

    change_keeping_an_old_mtime(inputs["coarse"], tmp_path)
    assert plan(workflow, "caches") == {"pair_cache": 2, "caches": 1}
    planned = plan(workflow, "all")
    assert planned["pair_cache"] == 2 and planned["train_model"] == 1, planned
    workflow.run("caches")
    after = {pair: snapshot(path) for pair, path in cache_files(workflow.root / "results/cache").items()}
    assert {pair for pair in after if after[pair] != before[pair]} == PAIRS_OF_COARSE
    assert plan(workflow, "caches") == {}
    assert plan(workflow, "all").get("train_model") == 1  # the rebuilt cache retrains
    workflow.run("all")
    assert snapshot(workflow.root / "results/models/coarse_fine.pt") != model
    assert plan(workflow, "all") == {}


def test_with_records_one_rebuild_per_change_and_going_back_is_a_change_too(workflow, tmp_path):
    inputs = setup(workflow)
    workflow.run("caches")
    original = tmp_path / "original-coarse.npz"
    cp_p(inputs["coarse"], original)
    first = {pair: snapshot(path) for pair, path in cache_files(workflow.root / "results/cache").items()}

    change_keeping_an_old_mtime(inputs["coarse"], tmp_path)
    assert plan(workflow, "caches") == {"pair_cache": 2, "caches": 1}
    assert plan(workflow, "caches") == {"pair_cache": 2, "caches": 1}  # a dry run changes nothing
    workflow.run("caches")
    assert plan(workflow, "caches") == {}  # params, inputs and mtimes agree: exactly one rebuild

    cp_p(original, inputs["coarse"])  # the old content again, with its old mtime: no old marker counts
    assert plan(workflow, "caches") == {"pair_cache": 2, "caches": 1}
    workflow.run("caches")
    assert plan(workflow, "caches") == {}
    keys = sorted(p.name.split(".")[0] for p in (workflow.root / "results/.cache-keys").iterdir())
    assert keys == ["coarse_fine", "coarse_medium", "medium_fine"]  # one marker per pair
    again = {pair: snapshot(path) for pair, path in cache_files(workflow.root / "results/cache").items()}
    assert again["medium_fine"] == first["medium_fine"]


def test_a_copied_working_directory_rebuilds_its_own_caches(workflow, tmp_path):
    """The copy's caches record the original directory, which still exists: a copy, not a shared cache."""
    inputs = setup(workflow)
    workflow.run("caches")
    copy = workflow.clone(tmp_path / "copy")
    change_keeping_an_old_mtime(copy.root / "inputs/coarse.npz", tmp_path)
    assert plan(copy, "caches") == {"pair_cache": 2, "caches": 1}
    assert plan(workflow, "caches") == {}
    assert inputs["coarse"].exists()


def shared_pair(tmp_path: Path, same_inputs: bool) -> tuple[Workflow, Workflow, Path]:
    """Two working directories whose cache_dir is one absolute directory."""
    shared = tmp_path / "shared-cache"
    a, b = copy_workflow(tmp_path / "wf-a"), copy_workflow(tmp_path / "wf-b")
    inputs_a = setup(a, tmp_path / "data-a", cache_dir=str(shared))
    if same_inputs:
        b.update_config(meshes={k: str(v) for k, v in inputs_a.items()}, train=QUICK_TRAIN, cache_dir=str(shared))
    else:
        inputs_b = setup(b, tmp_path / "data-b", cache_dir=str(shared))
        change_content(inputs_b["coarse"])
    return a, b, shared


def test_two_workdirs_with_other_inputs_refuse_each_others_cache_and_never_ping_pong(tmp_path):
    a, b, shared = shared_pair(tmp_path, same_inputs=False)
    a.run("caches")
    built = {pair: snapshot(path) for pair, path in cache_files(shared).items()}

    for _ in range(2):  # again: still refused, nothing rebuilt
        proc = b.run("caches", check=False)
        assert proc.returncode == 1
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
        assert len(errors) == 1, proc.stdout + proc.stderr
        line = errors[0]
        assert line.startswith(f"ERROR {shared}/coarse_")
        assert f"cache_dir {shared} holds the cache of pair coarse_" in line
        assert f"the working directory {a.root} built from other inputs or code" in line
        assert "own cache_dir" in line and "SNAKEMAKE_OUTPUT_CACHE" in line
        assert "Traceback" not in proc.stdout + proc.stderr
        assert plan(a, "caches") == {}  # the first still uses its caches
        assert {pair: snapshot(path) for pair, path in cache_files(shared).items()} == built

    # The quoted command runs as written and rebuilds the pair here; now the first refuses it.
    pair = line.split(" holds the cache of pair ")[1].split()[0]
    command = shlex.split(line.split("rebuild it here")[1].split(": ", 1)[1])
    assert command[:3] == ["snakemake", "--cores", "1"]
    b.run(*command[3:])
    assert snapshot(shared / f"{pair}.npz") != built[pair]
    proc = a.run("caches", check=False)
    assert proc.returncode == 1 and f"the working directory {b.root} built" in proc.stderr
    assert snapshot(shared / f"{pair}.npz") != built[pair]  # and did not rebuild over it


def test_two_workdirs_with_the_same_inputs_share_the_caches(tmp_path):
    a, b, shared = shared_pair(tmp_path, same_inputs=True)
    a.run("caches")
    built = {pair: snapshot(path) for pair, path in cache_files(shared).items()}
    planned = plan(b, "all")
    assert "pair_cache" not in planned and planned["train_model"] == 1, planned
    b.run("results/models/coarse_fine.pt")
    log = (b.root / "results/logs/batches/coarse_fine.log").read_text()  # the job that reads the pair
    assert f"inputs: cache {shared}/coarse_fine.npz" in log
    assert not (b.root / "results/logs/cache").exists()  # b built no cache
    assert {pair: snapshot(path) for pair, path in cache_files(shared).items()} == built
    assert plan(a, "caches") == {} and plan(b, "caches") == {}
