"""Bring your own data through the real snakemake CLI: the README's worked example on tiny meshes,
a user's --configfile as the whole configuration, and a quoted rebuild command that runs as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import h5py
import meshio
import numpy as np
import pytest
import yaml
from workflow_helpers import REPO, Workflow, copy_workflow, job_counts, snakemake_executable

from meshsr.cache.freshness import rebuild_command
from meshsr.learn.trained_model import retrain_command
from meshsr.mesh.bundle import load_bundle
from meshsr.provenance.rerun import RUN_OPTIONS, run_options

TINY_SIZES = {"--coarse": "120", "--fine": "300"}


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Bring your own data")
    return text[start : text.index("\n## ", start + 1)]


def fenced(section: str, language: str) -> str:
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def readme_commands() -> list[list[str]]:
    """The worked example's commands, comments dropped, the solver's mesh sizes made tiny."""
    commands = []
    for line in fenced(readme_section(), "bash").splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words[:-1]):
            if word in TINY_SIZES:
                words[i + 1] = TINY_SIZES[word]
        commands.append(words)
    return commands


def snakemake(wf: Workflow, words: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a `snakemake ...` command line as a user would type it (no --cores added)."""
    assert words[0] == "snakemake", words
    env = {"PYTHONPATH": str(wf.root), "PATH": str(REPO / ".venv" / "bin") + ":/usr/bin:/bin"}
    proc = subprocess.run([snakemake_executable(), *words[1:]], cwd=wf.root, env=env, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(words)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dry_run(wf: Workflow, *words: str) -> tuple[dict[str, int], str]:
    """Dry run of ``snakemake --cores 1 WORDS`` (targets first: --configfile takes every word after it)."""
    proc = snakemake(wf, ["snakemake", "--cores", "1", *words, "-n"])
    return job_counts(proc.stdout), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def byod(tmp_path_factory) -> Workflow:
    """The README's worked example up to `caches`: its solver on tiny meshes, its my.yaml, the real run."""
    wf = copy_workflow(tmp_path_factory.mktemp("byod") / "wf")
    (wf.root / "docs").mkdir()
    shutil.copy2(REPO / "docs" / "byod_solver.py", wf.root / "docs")
    config = yaml.safe_load(fenced(readme_section(), "yaml"))
    config["train"] |= {"epochs": 1, "steps_per_epoch": 10, "hidden": 16}  # tiny: the run, not the model, is tested
    (wf.root / "my.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    solver, caches, everything = readme_commands()
    assert solver[:2] == ["python", "docs/byod_solver.py"] and caches[-1] == "caches" and everything[-1] == "all"
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), *solver[1:]], cwd=wf.root, check=True, timeout=300)
    wf.planned_before = dry_run(wf, "all", "--configfile", "my.yaml")
    snakemake(wf, caches)
    return wf


def test_worked_example_ingests_both_resolutions_and_builds_the_cache(byod):
    config = yaml.safe_load((byod.root / "my.yaml").read_text())
    for res in ("coarse", "fine"):
        bundle = load_bundle(byod.root / "results" / "inputs" / f"{res}.npz")
        assert (bundle.n_simulations, bundle.n_frames, bundle.n_fields) == (3, 4, 3)
        assert bundle.field_names == ["c", "flux_x", "flux_y"]
        np.testing.assert_allclose(bundle.times, np.linspace(0, 2, 4))
    assert (byod.root / config["cache_dir"] / "coarse_fine.npz").is_file()
    jobs, output = dry_run(byod, "all", "--configfile", "my.yaml")
    assert jobs.get("train_model") == 1 and "evaluate_model" in jobs and jobs.get("upsample") == 1
    assert not {"pair_cache", "example_data"} & set(jobs)
    assert jobs.get("ingest_mesh") == 1 and "results/inputs/upsample-new-run.npz" in output  # the new run only


def test_worked_example_ends_with_the_new_run_super_resolved_for_paraview(byod, tmp_path):
    wf = byod.clone(tmp_path / "wf")
    everything = readme_commands()[-1]
    snakemake(wf, everything)
    upsampled = load_bundle(wf.root / "results" / "upsampled" / "new-run.npz")
    fine = load_bundle(wf.root / "results" / "inputs" / "fine.npz")
    np.testing.assert_array_equal(upsampled.points, fine.points)
    assert upsampled.field_names == fine.field_names and upsampled.fields.shape == (1, *fine.fields.shape[1:])
    assert np.isfinite(upsampled.fields).all()
    xdmf = wf.root / "results" / "upsampled" / "new-run.xdmf"
    with meshio.xdmf.TimeSeriesReader(xdmf) as reader:
        points, _ = reader.read_points_cells()
        times = [reader.read_data(k)[0] for k in range(reader.num_steps)]
        _, point_data, _ = reader.read_data(reader.num_steps - 1)
    assert len(points) == len(fine.points) and np.allclose(times, fine.times)
    np.testing.assert_allclose(point_data["c_prediction"], upsampled.fields[0, -1, :, 0], rtol=1e-6)
    assert (xdmf.parent / "new-run.h5").is_file()
    assert dry_run(wf, "all", "--configfile", "my.yaml")[0] == {}  # nothing left to do


def test_a_users_config_file_plans_only_its_resolutions(byod):
    jobs, output = byod.planned_before
    assert jobs["ingest_mesh"] == 3 and jobs["pair_cache"] == 1 and jobs["train_model"] == 1  # coarse, fine, new run
    assert "example_data" not in jobs
    assert "medium" not in output and "results/example" not in output
    assert "results/my-cache/coarse_fine.npz" in output


def test_config_overrides_apply_on_top_of_a_users_config_file(byod):
    jobs, output = dry_run(byod, "caches", "--configfile", "my.yaml", "--config", "cache_dir=results/other")
    assert jobs == {"pair_cache": 1, "caches": 1}
    assert "results/other/coarse_fine.npz" in output and "medium" not in output


def test_the_example_config_is_used_without_a_config_file(byod):
    jobs, output = dry_run(byod, "caches")
    assert jobs["example_data"] == 3 and "results/cache/coarse_medium.npz" in output and "ingest_mesh" not in jobs


def test_a_quoted_rebuild_command_runs_as_written(byod, tmp_path):
    wf = byod.clone(tmp_path / "wf")
    cache = wf.root / "results" / "my-cache" / "coarse_fine.npz"
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated: corrupt
    proc = snakemake(wf, ["snakemake", "--cores", "1", "cache_info", "--configfile", "my.yaml"])
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "rebuild it with: " in line]
    assert lines, proc.stdout + proc.stderr
    command = lines[0].split("rebuild it with: ", 1)[1].strip()
    assert command == ("snakemake --cores 1 --force results/my-cache/coarse_fine.npz --configfile my.yaml "
                       "--config cache_dir=results/my-cache")
    snakemake(wf, shlex.split(command))
    after = snakemake(wf, ["snakemake", "--cores", "1", "cache_info", "--configfile", "my.yaml"])
    assert "rebuild it with" not in after.stdout + after.stderr
    assert re.search(r"coarse_fine\S*\s.*\bvalid\b", (wf.root / "results" / "cache_info.tsv").read_text())


def test_quoted_commands_repeat_the_command_lines_config_files_and_words(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    options = run_options([tmp_path / "my.yaml", "/elsewhere/base.yaml"], ["train.epochs=3", "cache_dir=my cache"])
    monkeypatch.setenv(RUN_OPTIONS, options)
    assert retrain_command("results/models/a_b.pt") == (
        "snakemake --cores 1 --force results/models/a_b.pt --configfile my.yaml /elsewhere/base.yaml "
        "--config train.epochs=3 'cache_dir=my cache'")
    # cache_dir given on the command line is not repeated; otherwise a non-default one is added
    assert rebuild_command("my cache/a_b.npz").endswith("--config train.epochs=3 'cache_dir=my cache'")
    monkeypatch.setenv(RUN_OPTIONS, run_options([], None))
    assert rebuild_command("big/a_b.npz") == "snakemake --cores 1 --force big/a_b.npz --config cache_dir=big"


def test_a_meshio_source_that_is_not_there_stops_the_run_before_any_job(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    config = {"meshes": {"coarse": "runs/coarse.vtu", "fine": "runs/fine/frame_*.vtu"}}
    (wf.root / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(wf, ["snakemake", "--cores", "1", "caches", "--configfile", "bad.yaml", "-n"], check=False)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("ERROR ")]
    assert errors == [
        "ERROR config key 'meshes.coarse': runs/coarse.vtu: file does not exist; correct the path or write the file "
        "there",
        "ERROR config key 'meshes.fine': runs/fine/frame_*.vtu: glob pattern matches no file; correct the pattern or "
        "write the frames there",
    ]


def test_caches_follow_the_ingested_bundles_content_not_the_ingestion_job(byod, tmp_path):
    """A rerun of ingest_mesh that writes the same bundle rebuilds no cache; new source data rebuild it in that run."""
    wf = byod.clone(tmp_path / "wf")
    cache = wf.root / "results" / "my-cache" / "coarse_fine.npz"
    bundle = wf.root / "results" / "inputs" / "fine.npz"
    built, ingested = cache.stat().st_mtime_ns, bundle.read_bytes()
    rerun = ["snakemake", "--cores", "2", "caches", "--configfile", "my.yaml", "--forcerun", "ingest_mesh"]
    proc = snakemake(wf, rerun)
    assert "ingest_mesh" in proc.stdout + proc.stderr and bundle.read_bytes() == ingested
    assert cache.stat().st_mtime_ns == built  # same bytes: same key, no rebuild
    with h5py.File(wf.root / "runs" / "fine" / "sim1.h5", "r+") as h5:  # new solver output for one simulation
        step = sorted(k for k in h5 if k.startswith("data"))[-1]
        h5[step][0] += 1.0
    snakemake(wf, ["snakemake", "--cores", "2", "caches", "--configfile", "my.yaml"])
    assert bundle.read_bytes() != ingested and cache.stat().st_mtime_ns != built  # rebuilt in the same run
    jobs, _ = dry_run(wf, "caches", "--configfile", "my.yaml")
    assert jobs == {}
