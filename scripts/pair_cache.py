"""Snakemake entry point: build the interpolation cache of one resolution pair."""

from meshsr.cache.build import build_and_write
from meshsr.jobs import job_logging

with job_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects it)
    build_and_write(
        src_path=snakemake.input.src,  # noqa: F821
        dst_path=snakemake.input.dst,  # noqa: F821
        src_name=snakemake.wildcards.src,  # noqa: F821
        dst_name=snakemake.wildcards.dst,  # noqa: F821
        out_path=snakemake.output[0],  # noqa: F821
        log=log,
        key=snakemake.params.key,  # noqa: F821
    )
