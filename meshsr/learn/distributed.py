"""Several training processes: PyTorch DistributedDataParallel (DDP) launched by ``torchrun``.

With ``train.processes`` :math:`P > 1` the train job runs
``python -m torch.distributed.run --standalone --nproc-per-node P -m meshsr.learn.distributed JOB.json``
(:func:`run_under_torchrun`); each of the :math:`P` ranks runs :func:`meshsr.learn.training.train_job`
on its own device (``cuda:LOCAL_RANK`` with NCCL, else the CPU with gloo) and rank 0 writes the outputs.

Every rank draws the same global batch :math:`B` from the same seeded permutation and computes only
its rows :math:`B_r = B[r::P]` (:meth:`Ranks.shard`); its loss is

.. math::  L_r = \\frac{P}{|B|\\,F} \\sum_{b \\in B_r,\\, f} e_{b,f}^2,

so DDP's average of the ranks' gradients, :math:`\\frac1P \\sum_r \\nabla L_r`, is the gradient of the
one-process loss :math:`\\frac{1}{|B|F}\\sum_{b\\in B, f} e_{b,f}^2`.  Batch composition, schedule and
checkpoint choice do not depend on :math:`P`: ``processes`` is a run-time resource like ``threads``
(only the order of floating-point sums differs), not provenance.  Every rank computes the training
split's source quantities and statistics itself, assembles only its own rows of each batch
(:mod:`meshsr.learn.samples`) and computes the (cheap) validation loss in full, so all ranks pick the
same checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from meshsr.errors import InputError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 without DDP)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs progress and writes the outputs."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``cuda:LOCAL_RANK`` (one GPU per process) under DDP on CUDA; ``device`` otherwise."""
        if self.world == 1 or device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise InputError(
                None, f"config key 'train.processes': {self.world} processes but {torch.cuda.device_count()} "
                "GPU(s) on this node; use at most one process per GPU"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        """The network behind DDP (which averages gradients across ranks in ``backward``); itself for one process."""
        if self.world == 1:
            return network
        on_gpu = next(network.parameters()).device.type == "cuda"
        ids = [self.local_rank] if on_gpu else None
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=ids, broadcast_buffers=False)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's rows ``rows[rank::world]`` of a global batch."""
        return rows if self.world == 1 else rows[self.rank :: self.world]

    def loss(self, squared: torch.Tensor, global_rows: int) -> torch.Tensor:
        """The mean of ``squared`` over the global batch of ``global_rows`` rows, as this rank's share (see above).

        One process: ``squared.mean()`` exactly as before DDP existed.
        """
        if self.world == 1:
            return squared.mean()
        per_row = squared[0].numel() if len(squared) else 1
        return squared.sum() * (self.world / (global_rows * per_row))

    def mean(self, value: float) -> float:
        """The mean of a per-rank number over all ranks (the epoch's logged training loss)."""
        if self.world == 1:
            return value
        on_gpu = dist.get_backend() == "nccl"
        total = torch.tensor([value], dtype=torch.float64, device="cuda" if on_gpu else "cpu")
        dist.all_reduce(total)
        return float(total) / self.world


def current() -> Ranks:
    """This process's ranks: from the initialised process group, else one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(device: str) -> Ranks:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = device in ("cuda", "auto") and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


def run_under_torchrun(job: dict, processes: int, log: logging.Logger) -> None:
    """Run ``train_job(**job)`` in ``processes`` DDP ranks; their output goes to ``log``.

    ``job``: :func:`meshsr.learn.training.train_job`'s keyword arguments as JSON data; ``threads``
    is the job's total and is split between the ranks.  A rank's one-line refusal is raised here.
    """
    job = {**job, "threads": max(1, int(job.get("threads", 1)) // processes)}
    with tempfile.TemporaryDirectory(prefix="meshsr-ddp-") as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps(job))
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "meshsr.learn.distributed", str(spec),
        ]
        log.info("training in %d processes: %s", processes, " ".join(command))
        refusal = None
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith("ERROR "):
                    refusal = refusal or line.removeprefix("ERROR ")
                log.info("| %s", line)
        if proc.returncode != 0:
            failed = f"config key 'train.processes': torchrun failed (exit {proc.returncode})"
            raise InputError(None, refusal or f"{failed}; read the ranks' output in the job's log, or use 1 process")


def _worker(spec: str) -> None:
    """One rank: join the group, train, and let rank 0 write (:func:`meshsr.learn.training.train_job`)."""
    from meshsr.learn.training import train_job  # training imports this module

    job = json.loads(Path(spec).read_text())
    ranks = init_from_env(job.get("device", "auto"))
    logging.basicConfig(
        level=logging.INFO if ranks.main else logging.WARNING, format=f"rank {ranks.rank}: %(message)s",
        stream=sys.stdout,
    )
    log = logging.getLogger("meshsr")
    try:
        train_job(**job, log=log, progress=False)
    except InputError as exc:  # every rank checks the same inputs and refuses them alike
        print(f"ERROR {exc}", flush=True)
        sys.exit(1)
    if dist.is_initialized():
        dist.barrier()  # the other ranks wait for rank 0's writes, then all leave together
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
