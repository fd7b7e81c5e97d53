"""The workflow on a real single-node Slurm cluster through profiles/slurm (snakemake-executor-plugin-slurm).

tests/slurm_cluster.py installs Debian's slurmctld, slurmd and munge when they are missing
(root and apt-get), starts the daemons for this module and stops them by PID afterwards.
Where that cannot be done the cluster test is skipped with the reason, except on CI
(CI=true), where it fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cache_helpers import user_inputs
from slurm_cluster import SlurmCluster, why_unavailable
from train_helpers import TINY_TRAIN
from workflow_helpers import REPO, Workflow, copy_workflow, job_counts

pytestmark = pytest.mark.integration

TARGET = "results/metrics/coarse_fine.csv"
CACHE = "results/cache/coarse_fine.npz"
LOCAL_RULES = {"all", "caches", "cache_info", "cache_verify"}
SLURM_RUN = (
    "--workflow-profile",
    "profiles/slurm",
    "--slurm-status-command",  # no accounting storage here, so no sacct: job states from squeue
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Slurm test, but: {reason}")
        print(f"no Slurm cluster: {reason}")
        pytest.skip(f"no Slurm cluster: {reason}")
    # A short path: Slurm keeps socket paths in its spool directory.
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def experiment(root: Path) -> Workflow:
    wf = copy_workflow(root)
    wf.update_config(
        meshes=user_inputs(root, {"coarse": 6, "fine": 9}, n_sim=3, n_frames=4),
        train={**TINY_TRAIN, "epochs": 1, "steps_per_epoch": 4},
    )
    return wf


def arrays(path: Path) -> dict[str, bytes]:
    """The cache's array members as stored (name -> bytes), without meta (it says where and when)."""
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist() if name != "meta.npy"}


def test_workflow_on_slurm_runs_every_job_as_a_slurm_job_and_equals_a_local_run(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    on_slurm, local = experiment(tmp_path / "slurm"), experiment(tmp_path / "local")
    proc = on_slurm.run(TARGET, *SLURM_RUN)
    out = proc.stdout + proc.stderr
    local.run(TARGET)

    # Every job that is not a local rule was an sbatch job; the pair caches went as one group job.
    jobs = job_counts(out)
    assert jobs == {"pair_cache": 1, "training_batches": 1, "train_model": 1, "evaluate_model": 1}, out
    assert set(re.findall(r"^localrule (\w+):", out, re.MULTILINE)) <= LOCAL_RULES
    submitted = dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", out))
    assert len(submitted) == 4, out
    assert any("group_pair-caches" in log for log in submitted.values())
    # Slurm's own record (squeue, no accounting storage): each of those jobs completed.
    queue = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T"], env=cluster.env(), capture_output=True, text=True
    ).stdout
    states = dict(line.split("|") for line in queue.split())
    assert {job: states.get(job) for job in submitted} == dict.fromkeys(submitted, "COMPLETED"), queue
    for log in submitted.values():  # what Snakemake printed inside each Slurm job
        assert "Finished jobid" in Path(log).read_text(), log

    # The same outputs as the local run: identical cache arrays, the same metrics.
    assert arrays(on_slurm.root / CACHE) == arrays(local.root / CACHE)
    slurm_metrics, local_metrics = pd.read_csv(on_slurm.root / TARGET), pd.read_csv(local.root / TARGET)
    pd.testing.assert_frame_equal(slurm_metrics, local_metrics, check_exact=False, rtol=1e-6, atol=1e-9)


def test_profile_parses_and_asks_slurm_for_what_the_rules_need():
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["latency-wait"] >= 30
    assert profile["groups"] == {"pair_cache": "pair-caches"} and profile["group-components"]["pair-caches"] > 1
    rules = set(profile["set-resources"])
    assert {"pair_cache", "training_batches", "train_model", "evaluate_model"} <= rules
    assert all("runtime" in resources for resources in profile["set-resources"].values())


@pytest.mark.parametrize(("device", "gpu"), [("cuda", 1), ("cpu", 0), ("auto", 0)])
def test_training_asks_for_a_gpu_only_with_device_cuda(workflow, device, gpu):
    workflow.update_config(train={**TINY_TRAIN, "device": device})
    out = workflow.run("-n", "results/models/coarse_fine.pt").stdout
    section = out[out.index("rule train_model:") :]
    resources = next(line for line in section.splitlines() if "resources:" in line)
    assert f"gpu={gpu}" in resources, out
