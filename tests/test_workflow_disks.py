"""A full or read-only cache_dir through the real snakemake CLI: one line, nothing half-written, no crash.

Real file systems: a small tmpfs and a read-only bind mount (mount_helpers; skipped where
mounting is not permitted).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from cache_helpers import lattice_bundle, user_inputs
from mount_helpers import read_only, tmpfs
from train_helpers import TINY_TRAIN
from workflow_helpers import Workflow, job_counts

from meshsr.cache.build import CACHE_DIR_TAG
from meshsr.mesh.bundle import save_bundle

pytestmark = pytest.mark.integration

REMEDY = "set cache_dir elsewhere (--config cache_dir=DIR)"


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("ERROR ")]


def assert_one_line_failure(proc, message: str) -> None:
    """Exit 1, the one line (Snakemake's own job report aside), and no traceback of anything."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert set(error_lines(proc)) == {f"ERROR {message}"}, out
    assert "Traceback" not in out and "OSError" not in out and "PermissionError" not in out, out


def use_inputs(wf: Workflow) -> None:
    meshes = user_inputs(wf.root, {"coarse": 6, "medium": 9, "fine": 13}, n_sim=3, n_frames=4)
    wf.update_config(meshes=meshes, train={**TINY_TRAIN, "epochs": 1, "steps_per_epoch": 4})


def info_statuses(wf: Workflow) -> dict[str, str]:
    rows = list(csv.DictReader((wf.root / "results/cache_info.tsv").open(), delimiter="\t"))[:-1]
    return {r["pair"]: r["status"] for r in rows}


def test_read_only_cache_dir_without_caches_stops_in_one_line_and_stays(workflow, tmp_path):
    use_inputs(workflow)
    with read_only(tmp_path / "ro-cache") as ro:
        config = ("--config", f"cache_dir={ro}")
        proc = workflow.run("caches", *config, check=False)
        assert_one_line_failure(
            proc,
            f"{ro}: cache directory is not writable (read-only file system or no permission) and the pair cache "
            f"coarse_medium must be built; make it writable or {REMEDY}",
        )
        assert ro.is_dir() and list(ro.iterdir()) == []
        proc = workflow.run("cache_info", *config)  # listing a read-only cache_dir works
        assert info_statuses(workflow) == dict.fromkeys(["coarse_medium", "coarse_fine", "medium_fine"], "missing")
    assert ro.is_dir()  # the user's directory is never removed


def test_read_only_cache_dir_with_valid_caches_is_used(workflow, tmp_path):
    use_inputs(workflow)
    cache_dir = tmp_path / "caches"
    config = ("--config", f"cache_dir={cache_dir}")
    workflow.run("caches", *config)
    with read_only(cache_dir):
        assert job_counts(workflow.run("-n", "caches", *config).stdout) == {}
        workflow.run("cache_info", *config)
        assert set(info_statuses(workflow).values()) == {"valid"}
        workflow.run("results/models/coarse_fine.pt", *config)  # training reads the read-only cache
    log = (workflow.root / "results/logs/batches/coarse_fine.log").read_text()  # the job that reads the pair
    assert f"inputs: cache {cache_dir}/coarse_fine.npz" in log


def test_full_cache_dir_found_while_planning_stops_in_one_line(workflow, tmp_path):
    use_inputs(workflow)
    with tmpfs(tmp_path / "small-disk", "16k") as disk:
        proc = workflow.run("caches", "--config", f"cache_dir={disk}", check=False)
        assert_one_line_failure(proc, error_lines(proc)[0][len("ERROR ") :])
        line = error_lines(proc)[0]
        assert line.startswith(f"ERROR {disk}: not enough space for the pair caches to build (coarse_medium")
        assert line.endswith(f" kB free); free space or {REMEDY}")
        assert list(disk.iterdir()) == []  # nothing written
    assert disk.is_dir()


def test_cache_dir_filling_up_in_the_job_is_one_line_and_no_crash(workflow, tmp_path):
    """A generated input's size is unknown while planning: the job finds the full disk."""
    workflow.update_config(meshes={"coarse": "results/example/coarse.npz", "fine": "results/example/fine.npz"})
    with tmpfs(tmp_path / "small-disk", "64k") as disk:
        proc = workflow.run("caches", "--config", f"cache_dir={disk}", check=False)
        line = error_lines(proc)[0]
        assert_one_line_failure(proc, line[len("ERROR ") :])
        assert line.startswith(f"ERROR {disk}/coarse_fine.npz: no space left on device writing the pair cache (about ")
        assert line.endswith(f" kB free); free space or {REMEDY}") and " MB needed, " in line
        # Nothing half-written; the tag keeps Snakemake's clean-up (os.removedirs) off the mount point.
        assert sorted(p.name for p in disk.iterdir()) == [CACHE_DIR_TAG]
        assert "Exiting because a job execution failed" in proc.stdout + proc.stderr
    assert disk.is_dir()


def test_a_failed_cache_job_leaves_the_users_empty_cache_dir_in_place(workflow, tmp_path):
    """Snakemake removes the empty directory of a failed job's missing output, and its empty parents."""
    use_inputs(workflow)
    bad = lattice_bundle(6, n_sim=3, n_frames=4)
    bad.fields[0, 0, 0, 0] = np.nan
    save_bundle(workflow.root / "inputs/coarse.npz", bad)
    cache_dir = tmp_path / "project" / "cache"
    cache_dir.mkdir(parents=True)
    proc = workflow.run("results/models/coarse_fine.pt", "--config", f"cache_dir={cache_dir}", check=False)
    assert proc.returncode == 1 and "NaN/Inf" in proc.stderr
    assert sorted(p.name for p in cache_dir.iterdir()) == [CACHE_DIR_TAG]
