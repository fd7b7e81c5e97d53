"""DDP training under a real torchrun on the CPU (gloo): 2 processes train the model 1 process trains."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from train_helpers import TINY, TINY_TRAIN, write_tiny_pair

from meshsr.errors import InputError
from meshsr.evaluate.metrics import evaluate_pair
from meshsr.learn.distributed import Ranks, run_under_torchrun
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.trained_model import TrainedModel
from meshsr.learn.training import train_job

# Both runs compute the same batches and the same mean gradient; only the order of the sums
# differs (2 x 1 thread against 1 thread), so the metrics agree far inside this.
METRIC_RTOL = 0.01


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_pair(tmp_path_factory.mktemp("tiny"))


def job(tiny, out, **fit) -> dict:
    return {
        "source": "coarse", "target": "fine", "src_path": str(tiny.src), "dst_path": str(tiny.dst),
        "cache_path": str(tiny.cache), "out_path": str(out / "model.pt"), "history_path": str(out / "history.csv"),
        "fit": TINY.fit.to_dict() | fit, "device": "cpu", "threads": 1,
    }


def test_the_ranks_losses_average_to_the_global_batch_mean():
    squared = torch.rand(7, 2, dtype=torch.float64)  # an odd batch: shards of 4 and 3 rows
    rows = torch.arange(7)
    shares = [Ranks(r, 2).loss(squared[Ranks(r, 2).shard(rows)], len(rows)) for r in range(2)]
    assert torch.allclose(sum(shares) / 2, squared.mean())
    assert torch.equal(Ranks().loss(squared, 7), squared.mean())  # one process: the mean, bit for bit


def test_two_gloo_processes_give_the_metrics_of_one(tiny, tmp_path, caplog):
    one, two = tmp_path / "one", tmp_path / "two"
    train_job(**job(tiny, one), progress=False)
    log = logging.getLogger("test_distributed")
    with caplog.at_level(logging.INFO, logger="test_distributed"):
        run_under_torchrun(job(tiny, two) | {"threads": 2}, 2, log)  # 1 thread per rank
    assert "training in 2 processes" in caplog.text
    assert "rank 0:" in caplog.text and "kept epoch" in caplog.text  # rank 0's log came through
    data = load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)
    summaries = []
    for out in (one, two):
        trained = TrainedModel.load(out / "model.pt")
        summaries.append(evaluate_pair(data, trained, out / "model.pt", "cpu").summary)
    a, b = (s.set_index(["split", "field"]).rel_l2_model for s in summaries)
    assert (a.loc["test"] < summaries[0].set_index(["split", "field"]).rel_l2_interp.loc["test"]).all()
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=METRIC_RTOL)


def test_a_ranks_refusal_comes_back_as_one_line(tiny, tmp_path):
    bad = job(tiny, tmp_path, lr=1e9) | {"device": "cuda"}
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 'cuda' is no refusal here")
    with pytest.raises(InputError, match="no CUDA device is available") as info:
        run_under_torchrun(bad, 2, logging.getLogger("test_distributed"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.integration
def test_the_train_rule_runs_torchrun_and_processes_is_a_resource_precision_a_param(workflow):
    config = workflow.config()
    config["meshes"] = {k: v for k, v in config["meshes"].items() if k in ("coarse", "fine")}
    config["example"]["nodes"] = {k: v for k, v in config["example"]["nodes"].items() if k in ("coarse", "fine")}
    config["train"] = TINY_TRAIN | {"processes": 2, "threads": 2, "device": "cpu"}
    workflow.write_config(config)
    model = "results/models/coarse_fine.pt"
    workflow.run(model)
    log = (workflow.root / "results/logs/train/coarse_fine.log").read_text()
    assert "training in 2 processes" in log and "rank 0: kept epoch" in log
    assert TrainedModel.load(workflow.root / model).settings["precision"] == "fp32"
    workflow.update_config(train=config["train"] | {"processes": 1})
    assert workflow.planned_jobs(model) == {}  # a run-time resource: nothing reruns
    workflow.update_config(train=config["train"] | {"precision": "bf16"})
    # provenance: it retrains, from batches drawn again (they are temp(): removed once the model was written)
    assert workflow.planned_jobs(model) == {"training_batches": 1, "train_model": 1}


def test_more_processes_than_gpus_is_refused():
    if torch.cuda.device_count() >= 8:
        pytest.skip("a node with 8 GPUs")
    with pytest.raises(InputError, match="train.processes.*one process per GPU"):
        Ranks(rank=7, world=8, local_rank=7).device(torch.device("cuda"))
