r"""Unstructured triangulations of the example domain: a channel with a cylindrical hole.

The domain is :math:`\Omega = [0, L] \times [0, H] \setminus B_R(x_c)`. Each mesh is
built independently from a jittered triangular lattice plus exact boundary points, so
meshes of different resolution (or seed) share no interior nodes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay

LENGTH = 3.0
HEIGHT = 1.0
HOLE_CENTRE = (0.7, 0.5)
HOLE_RADIUS = 0.15

_JITTER = 0.2  # lattice jitter, in units of the lattice spacing h
_MARGIN = 0.45  # interior nodes keep this many h away from the boundary
_SLIVER = 1e-3  # triangles with area below _SLIVER * h^2 are dropped


def _domain_area() -> float:
    return LENGTH * HEIGHT - np.pi * HOLE_RADIUS**2


def _spacing_for(n_nodes: int) -> float:
    r"""Lattice spacing h whose expected node count is ``n_nodes``.

    A triangular lattice has :math:`2 / (\sqrt{3} h^2)` nodes per unit area and the
    boundary carries about :math:`P / h` nodes (perimeter :math:`P`); solve
    :math:`(2 A / \sqrt{3}) u^2 + P u = n` for :math:`u = 1/h`.
    """
    a = _domain_area() * 2.0 / np.sqrt(3.0)
    perimeter = 2.0 * (LENGTH + HEIGHT) + 2.0 * np.pi * HOLE_RADIUS
    u = (-perimeter + np.sqrt(perimeter**2 + 4.0 * a * n_nodes)) / (2.0 * a)
    return float(1.0 / u)


def _boundary_points(h: float, rng: np.random.Generator) -> np.ndarray:
    nx = max(int(round(LENGTH / h)), 2)
    ny = max(int(round(HEIGHT / h)), 2)
    xs = np.linspace(0.0, LENGTH, nx + 1)
    ys = np.linspace(0.0, HEIGHT, ny + 1)[1:-1]
    rect = np.concatenate(
        [
            np.column_stack([xs, np.zeros_like(xs)]),
            np.column_stack([xs, np.full_like(xs, HEIGHT)]),
            np.column_stack([np.zeros_like(ys), ys]),
            np.column_stack([np.full_like(ys, LENGTH), ys]),
        ]
    )
    nc = max(int(np.ceil(2.0 * np.pi * HOLE_RADIUS / h)), 8)
    theta = rng.uniform(0.0, 2.0 * np.pi) + 2.0 * np.pi * np.arange(nc) / nc
    circle = np.column_stack(
        [HOLE_CENTRE[0] + HOLE_RADIUS * np.cos(theta), HOLE_CENTRE[1] + HOLE_RADIUS * np.sin(theta)]
    )
    return np.concatenate([rect, circle])


def _interior_points(h: float, rng: np.random.Generator) -> np.ndarray:
    dy = h * np.sqrt(3.0) / 2.0
    x0, y0 = rng.uniform(0.0, h), rng.uniform(0.0, dy)
    rows = np.arange(-1, int(HEIGHT / dy) + 2)
    cols = np.arange(-1, int(LENGTH / h) + 2)
    jj, ii = np.meshgrid(rows, cols, indexing="ij")
    x = x0 + h * (ii + 0.5 * (jj % 2))
    y = y0 + dy * jj
    pts = np.column_stack([x.ravel(), y.ravel()])
    pts += rng.uniform(-_JITTER * h, _JITTER * h, size=pts.shape)
    m = _MARGIN * h
    r = np.hypot(pts[:, 0] - HOLE_CENTRE[0], pts[:, 1] - HOLE_CENTRE[1])
    keep = (
        (pts[:, 0] > m)
        & (pts[:, 0] < LENGTH - m)
        & (pts[:, 1] > m)
        & (pts[:, 1] < HEIGHT - m)
        & (r > HOLE_RADIUS + m)
    )
    return pts[keep]


def _signed_areas(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    a, b, c = (points[cells[:, k]] for k in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _triangulate(h: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate([_boundary_points(h, rng), _interior_points(h, rng)])
    cells = Delaunay(points).simplices.astype(np.int64)
    centroids = points[cells].mean(axis=1)
    outside_hole = np.hypot(centroids[:, 0] - HOLE_CENTRE[0], centroids[:, 1] - HOLE_CENTRE[1]) > HOLE_RADIUS
    cells = cells[outside_hole]
    area = _signed_areas(points, cells)
    cells = cells[np.abs(area) > _SLIVER * h * h]
    area = _signed_areas(points, cells)
    cells[area < 0] = cells[area < 0][:, [0, 2, 1]]  # counter-clockwise orientation
    used, cells = np.unique(cells, return_inverse=True)
    return points[used], cells.reshape(-1, 3).astype(np.int64)


def make_mesh(n_nodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate the channel-with-hole domain with about ``n_nodes`` nodes.

    Parameters
    ----------
    n_nodes
        Target node count; the result is within a few percent of it.
    seed
        Seed of the lattice offset, jitter and the phase of the points on the hole.

    Returns
    -------
    points : float64 (N, 2)
    cells : int64 (M, 3), counter-clockwise, conforming.
    """
    if n_nodes < 50:
        raise ValueError(f"n_nodes must be at least 50, got {n_nodes}")
    h = _spacing_for(n_nodes)
    for _ in range(3):  # the count formula is close; one or two corrections suffice
        points, cells = _triangulate(h, np.random.default_rng(seed))
        ratio = len(points) / n_nodes
        if abs(ratio - 1.0) < 0.02:
            break
        h *= np.sqrt(ratio)
    return points, cells
