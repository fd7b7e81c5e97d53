"""Interpolation between meshes: point location and the sparse operator."""
