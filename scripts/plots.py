"""Snakemake entry point: loss curves, prediction panel and error-vs-time plots of one pair."""

from meshsr.evaluate.plots import plot_job
from meshsr.jobs import job_logging

with job_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects it)
    plot_job(
        pair=f"{snakemake.wildcards.src} -> {snakemake.wildcards.dst}",  # noqa: F821
        history_csv=snakemake.input.history,  # noqa: F821
        frames_csv=snakemake.input.frames,  # noqa: F821
        panel_npz=snakemake.input.panel,  # noqa: F821
        dst_path=snakemake.input.dst,  # noqa: F821
        outputs=dict(snakemake.output.items()),  # noqa: F821
        frame=snakemake.params.panel_frame,  # noqa: F821
        log=log,
    )
