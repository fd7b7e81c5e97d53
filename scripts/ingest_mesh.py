"""Snakemake entry point: read a user's meshio simulations into the canonical bundle of one resolution."""

from meshsr.jobs import job_logging
from meshsr.mesh.sources import read_entry, save_canonical

with job_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects it)
    entry = snakemake.params.entry  # noqa: F821
    bundle = read_entry(entry)
    log.info("%s: %d nodes, %d cells, S x T x F = %d x %d x %d, fields %s", snakemake.wildcards.name,  # noqa: F821
             bundle.n_nodes, len(bundle.cells), bundle.n_simulations, bundle.n_frames, bundle.n_fields,
             ", ".join(bundle.field_names))
    save_canonical(snakemake.output[0], bundle)  # noqa: F821
