"""Snakemake entry point: generate and solve the example problem on one mesh."""

from meshsr.example.solver import ExampleSettings, generate_example
from meshsr.jobs import job_logging
from meshsr.mesh.bundle import save_bundle

p = snakemake.params  # noqa: F821 (snakemake injects it)
with job_logging(snakemake.log[0]) as log:  # noqa: F821
    section = {"simulations": p.simulations, "frames": p.frames, "seed": p.seed, "dim": p.dim}
    settings = ExampleSettings.from_config(section)  # the physical defaults of p.dim
    bundle = generate_example(n_nodes=p.n_nodes, mesh_seed=p.mesh_seed, settings=settings)
    res = snakemake.wildcards.res  # noqa: F821
    log.info("%s: %d nodes, %d cells, fields %s", res, bundle.n_nodes, len(bundle.cells), bundle.fields.shape)
    save_bundle(snakemake.output[0], bundle)  # noqa: F821
