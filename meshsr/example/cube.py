r"""The 3D example: a helical flow through the unit cube, meshed independently per resolution.

The domain is :math:`\Omega = [0, 1]^3`. Each mesh is the Delaunay tetrahedralisation
of a jittered cubic lattice: interior nodes move up to a quarter of the spacing in every
direction, nodes on a face only within it, so meshes of different size (or seed) share
no nodes but the corners and never one is a refinement of another.

The flow is a uniform stream along :math:`x` plus one vortex cell in the cross-section,

.. math::

    b = \left(U,\ \Gamma \sin(\pi y) \cos(\pi z),\ -\Gamma \cos(\pi y) \sin(\pi z)\right),

so :math:`\nabla \cdot b = 0` exactly and :math:`b \cdot n = 0` on the four side walls:
fluid enters at :math:`x = 0` and leaves at :math:`x = 1` only.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay

_JITTER = 0.25  # lattice jitter, in units of the lattice spacing h
_FLAT = 1e-8  # tetrahedra with volume below _FLAT * h^3 are flat (none expected) and dropped


def lattice_size(n_nodes: int) -> int:
    """Nodes per side of the cubic lattice whose node count is closest to ``n_nodes``."""
    return max(int(round(n_nodes ** (1.0 / 3.0))), 3)


def signed_volumes(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    r""":math:`\det E / 6` of every tetrahedron (positive: right-handed)."""
    verts = points[cells]
    return np.linalg.det(verts[:, 1:] - verts[:, :1]) / 6.0


def make_mesh(n_nodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tetrahedralise the unit cube with about ``n_nodes`` nodes (the nearest cube of an integer).

    Returns
    -------
    points : float64 (N, 3)
    cells : int64 (M, 4), positively oriented, conforming, filling the cube.
    """
    if n_nodes < 27:
        raise ValueError(f"n_nodes must be at least 27 in 3D, got {n_nodes}")
    n = lattice_size(n_nodes)
    h = 1.0 / (n - 1)
    rng = np.random.default_rng(seed)
    axis = np.linspace(0.0, 1.0, n)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    jitter = rng.uniform(-_JITTER * h, _JITTER * h, size=points.shape)
    jitter[(points == 0.0) | (points == 1.0)] = 0.0  # a node on a face stays on it
    points = points + jitter
    cells = Delaunay(points).simplices.astype(np.int64)
    volume = signed_volumes(points, cells)
    cells = cells[np.abs(volume) > _FLAT * h**3]
    volume = signed_volumes(points, cells)
    cells[volume < 0] = cells[volume < 0][:, [0, 2, 1, 3]]
    return points, cells


def velocity(x: np.ndarray, y: np.ndarray, z: np.ndarray, speed: float, swirl: float) -> tuple[np.ndarray, ...]:
    """The helical flow of the module docstring, :math:`U` = ``speed``, :math:`\\Gamma` = ``swirl``."""
    by = swirl * np.sin(np.pi * y) * np.cos(np.pi * z)
    bz = -swirl * np.cos(np.pi * y) * np.sin(np.pi * z)
    return speed + 0.0 * x, by, bz


def draw_centres(rng: np.random.Generator, n_sources: int) -> np.ndarray:
    """Source centres (K, 3): in the upstream half, clear of the walls."""
    return rng.uniform((0.15, 0.2, 0.2), (0.5, 0.8, 0.8), size=(n_sources, 3))
