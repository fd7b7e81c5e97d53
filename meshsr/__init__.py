"""meshsr: cached coarse-to-fine mesh interpolation and learned super-resolution.

Subpackages, one concept each, and what each may import from the others (a test
checks these rules; every package may use ``meshsr.errors`` and ``meshsr.atomic``):

========================  ==========================================================  ==========================
subpackage                holds                                                       may import
========================  ==========================================================  ==========================
``meshsr.provenance``     content digests of files, fingerprints of library code,     nothing else
                          the command that rebuilds an output
``meshsr.mesh``           bundles (contract 1), users' meshio files read into         nothing else
                          bundles, simplex geometry, gradient recovery
``meshsr.interp``         point location and the interpolation operator               mesh
``meshsr.cache``          pair caches (contract 3): format, building, freshness,      mesh, interp, provenance,
                          inventory                                                   evaluate.norms
``meshsr.example``        the example problem: meshes and the PDE solver              mesh
``meshsr.learn``          settings, splits, features, model, training (torch)         all of the above
``meshsr.evaluate``       error norms, evaluation tables (torch), plots (matplotlib)  all of the above
========================  ==========================================================  ==========================

Numerical code (provenance, mesh, interp, cache, example, ``evaluate.norms``) never
imports torch, matplotlib or Snakemake; only ``learn`` and ``evaluate.metrics`` use
torch, only ``evaluate.plots`` matplotlib.  Only ``scripts/`` and ``rules/`` know
Snakemake; ``meshsr.jobs`` is what the scripts share (logging, one-line failures), and
``meshsr.config`` checks the configuration for rules/common.smk (one line per problem).
"""

__version__ = "0.1.0"
