"""Cache invalidation and cache management through the real snakemake CLI (issue 3)."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cache_helpers import (
    change_content,
    cp_p,
    pickled_object_npz,
    random_bytes,
    set_old_mtime,
    snapshot,
    trap_fires,
    truncate,
    user_inputs,
    wait_until_quiet,
)
from workflow_helpers import Workflow, copy_workflow, job_counts, snakemake_executable

from meshsr.cache.build import CACHE_DIR_TAG
from meshsr.cache.format import read_pair_cache
from meshsr.cache.freshness import StaleCacheError, check_fresh
from meshsr.cache.keys import cache_key, file_identity
from meshsr.provenance.digests import file_sha256, read_memo

pytestmark = pytest.mark.integration

MEMO = ".snakemake/meshsr/sha256-memo.json"
INFO = "results/cache_info.tsv"
KEYS = "results/.cache-keys"
PAIRS_OF = {
    "coarse": {"coarse_medium", "coarse_fine"},
    "medium": {"coarse_medium", "medium_fine"},
    "fine": {"coarse_fine", "medium_fine"},
}
CLEAR_CACHES = ("caches", "--delete-all-output", "--allowed-rules", "pair_cache")


def use_user_inputs(wf: Workflow, sides: dict[str, int], **kwargs) -> dict[str, Path]:
    """Write user bundles under wf.root/inputs and point config 'meshes' at them."""
    meshes = user_inputs(wf.root, sides, **kwargs)
    wf.update_config(meshes=meshes)
    return {name: wf.root / path for name, path in meshes.items()}


def caches(wf: Workflow, cache_dir: str = "results/cache") -> dict[str, Path]:
    return {p.stem: p for p in sorted((wf.root / cache_dir).glob("*.npz"))}


def dry_run(wf: Workflow, *args: str) -> str:
    proc = wf.run("-n", *args)
    return proc.stdout + proc.stderr


def plan(wf: Workflow, *args: str) -> tuple[dict[str, int], str]:
    """One dry run: rule -> planned job count (as Workflow.planned_jobs), and the text with the reasons."""
    out = dry_run(wf, *args)
    return job_counts(out), out


def updated_caches(out: str) -> set[str]:
    """Pair caches named in 'Input files updated by another job' reasons of a dry run."""
    reasons = [line.split("another job: ", 1)[1] for line in out.splitlines() if "updated by another job: " in line]
    files = {f for reason in reasons for f in reason.split(", ")}
    return {Path(f).stem for f in files if f.endswith(".npz") and "cache/" in f}


TRIGGERS = ("Updated input files", "Params have changed", "Code has changed", "Set of input files has changed")


def assert_nothing_to_redo(wf: Workflow, target: str = "all") -> None:
    """``snakemake -n target`` reruns nothing: no cache or example job, and no job for a reason
    other than a missing output (stages added to ``all`` later, never run in these tests)."""
    jobs, out = plan(wf, target)
    assert "pair_cache" not in jobs and "example_data" not in jobs, jobs
    assert not [line for line in out.splitlines() if any(t in line for t in TRIGGERS)], out


def info_rows(path: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    assert rows[-1]["file"] == "TOTAL"
    return {r["pair"]: r for r in rows[:-1]}


def meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["meta"]))


THREE = {"coarse": 6, "medium": 9, "fine": 13}


def test_touch_of_a_50mb_input_plans_nothing_and_the_memo_spares_the_rehash(workflow):
    inputs = use_user_inputs(workflow, {"coarse": 14, "fine": 64}, n_sim=4, n_frames=400)
    assert inputs["fine"].stat().st_size > 50e6  # far above Snakemake's 1 MB checksum limit
    workflow.run("caches")
    built = snapshot(caches(workflow)["coarse_fine"])

    for path in inputs.values():
        path.touch()
    wait_until_quiet(*inputs.values())  # so that this run may memoise the new stat
    assert_nothing_to_redo(workflow, "all")
    memo_path = workflow.root / MEMO
    memo = read_memo(memo_path)
    key = str(inputs["fine"].resolve())
    st = inputs["fine"].stat()
    signature = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    assert memo[key] == {"stat": signature, "sha256": file_sha256(inputs["fine"])}

    # Proof that a planning run takes the digest from the memo instead of rehashing 50 MB:
    # a doctored memo entry (same stat, other digest) is believed and shows as a new cache key.
    memo[key]["sha256"] = "0" * 64
    memo_path.write_text(json.dumps(memo))
    jobs, out = plan(workflow, "all")
    assert jobs.get("pair_cache") == 1
    code = meta(caches(workflow)["coarse_fine"])["code"]
    doctored = cache_key(file_identity(file_sha256(inputs["coarse"])), file_identity("0" * 64), code)
    assert f"Updated input files: {KEYS}/coarse_fine.{doctored}" in out
    assert snapshot(caches(workflow)["coarse_fine"]) == built


def test_content_change_rebuilds_exactly_the_pairs_of_that_resolution(workflow, tmp_path):
    inputs = use_user_inputs(workflow, THREE)
    workflow.run("caches")
    before = {pair: snapshot(path) for pair, path in caches(workflow).items()}
    assert set(before) == {"coarse_medium", "coarse_fine", "medium_fine"}
    for changed in ("coarse", "medium", "fine"):
        original = tmp_path / f"original-{changed}.npz"
        cp_p(inputs[changed], original)
        change_content(inputs[changed])
        jobs, out = plan(workflow, "all")
        assert jobs.get("pair_cache") == 2, changed
        assert out.count(f"Updated input files: {KEYS}/") == 2  # the new keys' markers
        assert updated_caches(out) == PAIRS_OF[changed], changed  # and what depends on them follows
        if changed != "fine":
            cp_p(original, inputs[changed])  # the original bytes again: up to date again

    workflow.run("caches")
    after = {pair: snapshot(path) for pair, path in caches(workflow).items()}
    assert after["coarse_medium"] == before["coarse_medium"], "a pair without fine was rebuilt"
    for pair in PAIRS_OF["fine"]:
        assert after[pair] != before[pair], pair
        assert meta(caches(workflow)[pair])["target_sha256"] == file_sha256(inputs["fine"])
    assert_nothing_to_redo(workflow, "all")


def test_cp_p_restore_with_old_mtime_is_stale_and_planned_for_rebuild(workflow, tmp_path):
    inputs = use_user_inputs(workflow, THREE)
    workflow.run("caches")
    cache_mtime = caches(workflow)["coarse_fine"].stat().st_mtime
    edited = tmp_path / "edited-coarse.npz"
    cp_p(inputs["coarse"], edited)
    change_content(edited)
    set_old_mtime(edited)
    cp_p(edited, inputs["coarse"])  # new content, mtime far older than the caches
    assert inputs["coarse"].stat().st_mtime < cache_mtime

    # Before any rebuild, readers see the stale caches for what they are.
    workflow.run("cache_info")
    rows = info_rows(workflow.root / INFO)
    expected = {"coarse_medium": "stale", "coarse_fine": "stale", "medium_fine": "valid"}
    assert {p: r["status"] for p, r in rows.items()} == expected
    detail = rows["coarse_fine"]["detail"]
    assert "stale cache for pair coarse_fine" in detail
    assert detail.endswith("rebuild it with: snakemake --cores 1 --force results/cache/coarse_fine.npz")
    with pytest.raises(StaleCacheError, match="stale cache for pair coarse_fine"):
        path = caches(workflow)["coarse_fine"]
        check_fresh(read_pair_cache(path), path, inputs["coarse"], inputs["fine"])

    # ... and Snakemake rebuilds exactly those (the rebuild itself: content-change test).
    jobs, out = plan(workflow, "caches")
    assert jobs == {"pair_cache": 2, "caches": 1}
    code = meta(caches(workflow)["coarse_fine"])["code"]
    for pair, other in (("coarse_medium", "medium"), ("coarse_fine", "fine")):
        key = cache_key(file_identity(file_sha256(inputs["coarse"])), file_identity(file_sha256(inputs[other])), code)
        assert f"Updated input files: {KEYS}/{pair}.{key}" in out


def test_regenerated_example_rebuilds_its_caches_in_the_same_run(workflow):
    workflow.update_config(meshes={"coarse": "results/example/coarse.npz", "fine": "results/example/fine.npz"})
    workflow.run("caches")
    # The example did not exist when the DAG was built; the recorded params are still the
    # real digests (Snakemake evaluates params again before the job), so nothing is planned.
    assert workflow.planned_jobs("caches") == {}
    cache = caches(workflow)["coarse_fine"]
    config = workflow.config()
    config["example"]["nodes"]["coarse"] += 40
    workflow.write_config(config)
    assert workflow.planned_jobs("caches") == {"example_data": 1, "pair_cache": 1, "caches": 1}
    workflow.run("caches")
    assert meta(cache)["source_sha256"] == file_sha256(workflow.root / "results/example/coarse.npz")

    # A generated file replaced by hand with an old mtime is older than its script, so
    # Snakemake regenerates it ("Code has changed") and rebuilds the cache after it.
    coarse = workflow.root / "results/example/coarse.npz"
    edited = workflow.root / "edited.npz"
    cp_p(coarse, edited)
    change_content(edited)
    set_old_mtime(edited)
    cp_p(edited, coarse)
    jobs, out = plan(workflow, "caches")
    assert "Code has changed since last execution" in out
    assert jobs == {"example_data": 1, "pair_cache": 1, "caches": 1}  # regenerated, and its cache with it


def test_corrupt_caches_are_reported_refused_and_never_executed(workflow, tmp_path):
    assert trap_fires(tmp_path)
    use_user_inputs(workflow, THREE)
    workflow.run("caches")
    files = caches(workflow)
    marker = tmp_path / "pickle-was-executed"
    pickled_object_npz(files["coarse_fine"], marker, template=files["coarse_fine"])
    truncate(files["coarse_medium"])
    random_bytes(files["medium_fine"])

    proc = workflow.run("cache_info")
    assert not marker.exists()
    rows = info_rows(workflow.root / INFO)
    assert {p: r["status"] for p, r in rows.items()} == {p: "corrupt" for p in files}
    for pair in files:
        assert f"{pair}.npz" in proc.stdout and "corrupt" in proc.stdout
    assert "holds Python objects" in rows["coarse_fine"]["detail"]

    # The refusal's rebuild command works (Snakemake's own records still say up to date).
    command = rows["coarse_fine"]["detail"].split("rebuild it with: ")[1]
    args = shlex.split(command)
    assert args[:3] == ["snakemake", "--cores", "1"]
    workflow.run(*args[3:])
    assert not marker.exists()
    fixed = caches(workflow)["coarse_fine"]
    check_fresh(read_pair_cache(fixed), fixed, workflow.root / "inputs/coarse.npz", workflow.root / "inputs/fine.npz")


def test_verify_finds_a_cache_rewritten_with_other_numbers_that_cache_info_calls_valid(workflow):
    use_user_inputs(workflow, {"coarse": 6, "fine": 9})
    workflow.run("caches")
    path = caches(workflow)["coarse_fine"]
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["coarse_interp"] = arrays["coarse_interp"] * np.float32(0.5)  # same shapes, dtypes and meta
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)

    proc = workflow.run("cache_info")  # the cheap structural checks: nothing to see
    assert info_rows(workflow.root / INFO)["coarse_fine"]["status"] == "valid"
    assert "problems:" not in proc.stdout
    proc = workflow.run("cache_verify")
    row = info_rows(workflow.root / INFO)["coarse_fine"]
    assert row["status"] == "corrupt" and row["detail"].startswith("data digest differs")
    assert "coarse_fine.npz: corrupt: data digest differs" in proc.stdout

def test_info_on_missing_cache_dir_runs_nothing_else(workflow):
    proc = workflow.run("cache_info")
    assert not (workflow.root / "results/example").exists()
    assert not (workflow.root / "results/cache").exists()  # the table goes to the working directory
    rows = info_rows(workflow.root / INFO)
    pairs = ("coarse_medium", "coarse_fine", "medium_fine")
    assert {p: r["status"] for p, r in rows.items()} == dict.fromkeys(pairs, "missing")
    assert "TOTAL" in proc.stdout and "missing" in proc.stdout and f"wrote {INFO}" in proc.stdout
    (workflow.root / INFO).unlink()
    assert "TOTAL" in workflow.run("cache_info").stdout  # runs every time it is asked for
    assert (workflow.root / INFO).is_file()


def test_precompute_builds_only_caches_and_clear_removes_only_caches(workflow):
    assert workflow.planned_jobs("caches") == {"example_data": 3, "pair_cache": 3, "caches": 1}
    workflow.run("caches")
    assert sorted(p.name for p in (workflow.root / "results").iterdir()) == [
        ".cache-keys", "benchmarks", "cache", "example", "logs"
    ]
    examples = sorted((workflow.root / "results/example").glob("*.npz"))
    assert len(caches(workflow)) == 3 and len(examples) == 3

    # Plain --delete-all-output on the target would also delete the generated example upstream.
    assert "results/example/coarse.npz" in dry_run(workflow, "--delete-all-output", "caches")
    workflow.run(*CLEAR_CACHES)
    assert caches(workflow) == {}
    assert sorted((workflow.root / "results/example").glob("*.npz")) == examples


def test_custom_cache_dir_end_to_end(workflow, tmp_path):
    use_user_inputs(workflow, THREE)
    elsewhere = tmp_path / "big-disk" / "meshsr-cache"
    config = ("--config", f"cache_dir={elsewhere}")
    workflow.run("caches", *config)
    assert set(caches(workflow, str(elsewhere))) == {"coarse_medium", "coarse_fine", "medium_fine"}
    assert not (workflow.root / "results/cache").exists()
    proc = workflow.run("cache_info", *config)
    assert str(elsewhere) in proc.stdout
    rows = info_rows(workflow.root / INFO)
    assert {r["status"] for r in rows.values()} == {"valid"}
    assert all(r["file"].startswith(str(elsewhere)) for r in rows.values())
    workflow.run(*CLEAR_CACHES, *config)
    assert caches(workflow, str(elsewhere)) == {}


def test_two_workdirs_sharing_a_cache_dir_build_the_same_pair_at_once(tmp_path):
    """Both runs start together and build the pair (~0.5 s of work each, so they usually
    overlap; test_cache.py interleaves writers deterministically)."""
    shared_inputs = user_inputs(tmp_path, {"coarse": 30, "fine": 60}, n_sim=4, n_frames=200)
    shared = tmp_path / "shared-cache"
    workdirs = [copy_workflow(tmp_path / name) for name in ("wf-a", "wf-b")]
    for wf in workdirs:
        wf.update_config(meshes={k: str(tmp_path / v) for k, v in shared_inputs.items()}, cache_dir=str(shared))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = [
        subprocess.Popen(
            [snakemake_executable(), "--cores", "1", "caches"],
            cwd=wf.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for wf in workdirs
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    for wf in workdirs:
        assert "wrote" in (wf.root / "results/logs/cache/coarse_fine.log").read_text()  # each built it
    assert sorted(p.name for p in shared.iterdir()) == [CACHE_DIR_TAG, "coarse_fine.npz"]  # no temporary file
    cache = read_pair_cache(shared / "coarse_fine.npz")
    check_fresh(cache, shared / "coarse_fine.npz", tmp_path / shared_inputs["coarse"], tmp_path / shared_inputs["fine"])
