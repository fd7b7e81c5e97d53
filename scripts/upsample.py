"""Snakemake entry point: super-resolve one configured coarse run with its pair's trained model."""

from meshsr.jobs import job_logging
from meshsr.learn.upsample import upsample_job
from meshsr.provenance.digests import WORKFLOW_MEMO

with job_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects it)
    source, target = snakemake.params.pair  # noqa: F821
    upsample_job(
        name=snakemake.wildcards.name,  # noqa: F821
        source=source,
        target=target,
        run_path=snakemake.input.run,  # noqa: F821
        simulation=snakemake.params.simulation,  # noqa: F821
        model_path=snakemake.input.model,  # noqa: F821
        src_path=snakemake.input.src,  # noqa: F821
        dst_path=snakemake.input.dst,  # noqa: F821
        cache_path=snakemake.input.get("cache"),  # noqa: F821
        outputs={"xdmf": snakemake.output.xdmf, "npz": snakemake.output.npz},  # noqa: F821
        device=snakemake.resources.device,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        memo=WORKFLOW_MEMO,
        log=log,
    )
