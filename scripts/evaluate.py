"""Snakemake entry point: errors of interpolation and of the trained model of one pair."""

from meshsr.evaluate.metrics import evaluate_job
from meshsr.jobs import job_logging
from meshsr.provenance.digests import WORKFLOW_MEMO

with job_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects it)
    evaluate_job(
        source=snakemake.wildcards.src,  # noqa: F821
        target=snakemake.wildcards.dst,  # noqa: F821
        model_path=snakemake.input.model,  # noqa: F821
        src_path=snakemake.input.src,  # noqa: F821
        dst_path=snakemake.input.dst,  # noqa: F821
        cache_path=snakemake.input.get("cache"),  # noqa: F821
        outputs=dict(snakemake.output.items()),  # noqa: F821
        device=snakemake.resources.device,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        memo=WORKFLOW_MEMO,
        log=log,
    )
