"""Snakemake entry point: train the residual super-resolution model of one resolution pair
(the mlp from the batches of the training_batches job, the gnn from the pair's data).

With resources ``processes`` > 1 the job trains in that many DDP ranks that torchrun starts
(:func:`meshsr.learn.distributed.run_under_torchrun`); their output goes to this job's log.
"""

from meshsr.jobs import job_logging
from meshsr.learn.distributed import run_under_torchrun
from meshsr.learn.training import train_job
from meshsr.provenance.digests import WORKFLOW_MEMO

with job_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects it)
    job = dict(
        source=snakemake.wildcards.src,  # noqa: F821
        target=snakemake.wildcards.dst,  # noqa: F821
        src_path=snakemake.input.get("src"),  # noqa: F821
        dst_path=snakemake.input.get("dst"),  # noqa: F821
        cache_path=snakemake.input.get("cache"),  # noqa: F821
        batches=[snakemake.input.rows, snakemake.input.side] if "rows" in snakemake.input.keys() else None,  # noqa: F821
        out_path=snakemake.output.model,  # noqa: F821
        history_path=snakemake.output.history,  # noqa: F821
        fit=snakemake.params.fit,  # noqa: F821
        device=snakemake.resources.device,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        memo=WORKFLOW_MEMO,
    )
    processes = int(snakemake.resources.get("processes", 1))  # noqa: F821
    if processes > 1:
        run_under_torchrun(job, processes, log)
    else:
        train_job(**job, log=log)
