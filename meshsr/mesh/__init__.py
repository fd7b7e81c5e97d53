"""Meshes: bundles (contract 1), simplex geometry and recovered derivatives."""
