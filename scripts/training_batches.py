"""Snakemake entry point: write the training batches of one resolution pair (rules/train.smk)."""

from meshsr.jobs import job_logging
from meshsr.learn.training import batches_job
from meshsr.provenance.digests import WORKFLOW_MEMO

with job_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects it)
    batches_job(
        source=snakemake.wildcards.src,  # noqa: F821
        target=snakemake.wildcards.dst,  # noqa: F821
        src_path=snakemake.input.src,  # noqa: F821
        dst_path=snakemake.input.dst,  # noqa: F821
        cache_path=snakemake.input.get("cache"),  # noqa: F821
        rows_path=snakemake.output.rows,  # noqa: F821
        side_path=snakemake.output.side,  # noqa: F821
        fit=snakemake.params.sampling,  # noqa: F821
        memo=WORKFLOW_MEMO,
        log=log,
    )
