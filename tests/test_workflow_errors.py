"""Bad configuration, foreign model files and short runs through the real snakemake CLI: one ERROR line each."""

from __future__ import annotations

import re
import shlex

import pandas as pd
import pytest
import torch
from train_helpers import TINY_TRAIN
from workflow_helpers import Workflow

pytestmark = pytest.mark.integration
TOP = "(valid: meshes, cache_dir, use_cache, example, train, upsample)"
SHORT_TRAIN = {**TINY_TRAIN, "epochs": 2, "steps_per_epoch": 10}  # 20 steps: torch's one-cycle divided by zero
# Snakemake's own lines around a configuration error raised at the top level of rules/common.smk.
FRAMING = (r'WorkflowError in file ".*rules/common\.smk", line \d+:', r'  File ".*rules/common\.smk", line \d+, in ')
SNAKEMAKE_NOTES = ("Using workflow specific profile", "Config file config/config.yaml is extended")


def two_meshes(workflow: Workflow, train: dict) -> None:
    config = workflow.config()
    config["meshes"] = {k: v for k, v in config["meshes"].items() if k in ("coarse", "fine")}
    config["example"]["nodes"] = {k: v for k, v in config["example"]["nodes"].items() if k in ("coarse", "fine")}
    config["train"] = train
    workflow.write_config(config)


def config_refusal(proc, workflow: Workflow) -> list[str]:
    """The ERROR lines of a refused parse; asserts that nothing else but Snakemake's short framing was printed."""
    assert proc.returncode != 0
    assert not (workflow.root / "results").exists()  # nothing built
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR ")]
    others = [line for line in lines if line not in errors and not line.startswith(SNAKEMAKE_NOTES)]
    assert len(others) == 2 and all(re.match(p, line) for p, line in zip(FRAMING, others, strict=True)), lines
    return errors


def test_an_unknown_top_level_key_in_the_config_file_is_refused(workflow):
    workflow.update_config(cache_dri="/x")
    errors = config_refusal(workflow.run("-n", "all", check=False), workflow)
    assert errors == [f"ERROR config key 'cache_dri': unknown; did you mean 'cache_dir'? {TOP}"]


def test_unknown_keys_given_with_config_are_refused(workflow):
    errors = config_refusal(workflow.run("-n", "all", "--config", "usecache=false", check=False), workflow)
    assert errors == [f"ERROR config key 'usecache': unknown; did you mean 'use_cache'? {TOP}"]
    errors = config_refusal(workflow.run("-n", "all", "--config", "cache_dri=/x", "usecache=false", check=False),
                            workflow)
    assert [line.split(":")[0] for line in errors] == ["ERROR config key 'cache_dri'", "ERROR config key 'usecache'"]


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"train": {"epochs": 0}}, "ERROR config key 'train.epochs': 0 is too small; use an integer of at least 1"),
        (
            {"meshes": {"coarse": "results/example/coarse.npz"}},
            "ERROR config key 'meshes': needs at least two resolutions (coarsest first), has 1: coarse; "
            "add a finer mesh bundle",
        ),
    ],
    ids=["epochs-0", "one-resolution"],
)
def test_a_schema_error_is_one_line(workflow, changes, line):
    workflow.update_config(**changes)
    assert config_refusal(workflow.run("-n", "all", check=False), workflow) == [line]


def test_twenty_training_steps_run_the_whole_workflow(workflow):
    two_meshes(workflow, SHORT_TRAIN)
    workflow.run("all")
    history = pd.read_csv(workflow.root / "results/models/coarse_fine_history.csv")
    assert history.epoch.tolist() == [1, 2]
    assert (workflow.root / "results/plots/coarse_fine_loss.png").stat().st_size > 0


def test_a_foreign_model_file_is_one_line_and_its_rebuild_command_works(workflow):
    root, model, metrics = workflow.root, "results/models/coarse_fine.pt", "results/metrics/coarse_fine.csv"
    two_meshes(workflow, SHORT_TRAIN)
    workflow.run(model)
    torch.save({"a": 1}, root / model)  # someone else's torch.save, newer than everything: evaluation reruns

    proc = workflow.run(metrics, check=False)
    assert proc.returncode != 0 and not (root / metrics).exists()
    output = proc.stdout + proc.stderr
    expected = f"ERROR {model}: not a meshsr model file (a dict without 'format_version'; keys: a); rebuild it with: "
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("ERROR ")]  # the job's line on the terminal
    assert line.startswith(expected) and "weights_only" not in output and "Traceback" not in output
    assert line in (root / "results/logs/evaluate/coarse_fine.log").read_text()

    command = shlex.split(line.split("; rebuild it with: ")[1])
    assert command[:3] == ["snakemake", "--cores", "1"] and command[-1] == model
    workflow.run(*command[3:], cores=1)  # the quoted command, exactly as written
    assert torch.load(root / model, weights_only=True)["source"] == "coarse"
    workflow.run(metrics)
    assert len(pd.read_csv(root / metrics)) > 0
