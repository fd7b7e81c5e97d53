r"""Simplex geometry shared by point location, gradient recovery, features and the mesh graph.

A simplex :math:`K = [v_0, \dots, v_D]` is the image of the reference simplex under
:math:`x = v_0 + E \hat x` with :math:`E = [v_1 - v_0, \dots, v_D - v_0]`; its
barycentric coordinates are :math:`(\lambda_1, \dots, \lambda_D) = E^{-1} (x - v_0)`,
:math:`\lambda_0 = 1 - \sum_{i \ge 1} \lambda_i`, and :math:`|\det E| = D!\,|K|`.
A cell counts as degenerate when :math:`|\det E|` is below :data:`DEGENERACY` times the
volume of its bounding box: such cells locate nothing and carry no gradient, and
:func:`meshsr.mesh.bundle.load_bundle` refuses a bundle that has any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

DEGENERACY = 1e-12


@dataclass(frozen=True)
class AffineMaps:
    """Per cell: vertex coordinates (M, D+1, D), det E (M,), E^-1 (M, D, D; zero where degenerate)."""

    vertices: np.ndarray
    determinant: np.ndarray
    inverse: np.ndarray
    nondegenerate: np.ndarray


def _edges(verts: np.ndarray) -> np.ndarray:
    """:math:`E` of every cell: columns :math:`v_i - v_0`."""
    return np.swapaxes(verts[:, 1:] - verts[:, :1], 1, 2)


def _nondegenerate(det: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """The degeneracy rule (module docstring): :math:`|\\det E|` against the bounding-box volume."""
    box = np.maximum(np.prod(verts.max(axis=1) - verts.min(axis=1), axis=1), np.finfo(float).tiny)
    return np.abs(det) > DEGENERACY * box


def affine_maps(points: np.ndarray, cells: np.ndarray) -> AffineMaps:
    """:math:`E`, :math:`\\det E` and :math:`E^{-1}` of every cell; degenerate cells get a zero inverse."""
    verts = points[cells]
    edges = _edges(verts)
    det = np.linalg.det(edges)
    good = _nondegenerate(det, verts)
    inv = np.zeros_like(edges)
    inv[good] = np.linalg.inv(edges[good])
    return AffineMaps(vertices=verts, determinant=det, inverse=inv, nondegenerate=good)


def degenerate_cells(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Indices of the cells that :func:`affine_maps` treats as degenerate."""
    verts = points[cells]
    return np.flatnonzero(~_nondegenerate(np.linalg.det(_edges(verts)), verts))


def longest_sides(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Longest bounding-box side :math:`L` of every cell: :math:`|\\det E| \\le (\\sqrt{D} L)^D`."""
    verts = points[cells]
    return (verts.max(axis=1) - verts.min(axis=1)).max(axis=1)


def cell_sizes(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """:math:`|\\det E|^{1/D}` of every cell: a length scale, :math:`(D!\\,|K|)^{1/D}`."""
    verts = points[cells]
    return np.abs(np.linalg.det(verts[:, 1:] - verts[:, :1])) ** (1.0 / points.shape[1])


def mesh_edges(cells: np.ndarray, n_nodes: int) -> np.ndarray:
    """Unique undirected edges (E, 2), i < j, of a simplicial mesh."""
    cells = np.asarray(cells, dtype=np.int64)
    k = cells.shape[1]
    pairs = np.concatenate([cells[:, [i, j]] for i in range(k) for j in range(i + 1, k)])
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    keys = np.unique(pairs[:, 0] * n_nodes + pairs[:, 1])
    return np.column_stack([keys // n_nodes, keys % n_nodes])


def adjacency(cells: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency (N, N) of the mesh graph, sorted CSR."""
    edges = mesh_edges(cells, n_nodes)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    import scipy.sparse as sp  # here, not at the top: bundle checks (and the workflow parse) need no scipy

    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_nodes, n_nodes))


def neighbour_average(cells: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """:math:`S`: the mean of a node and its mesh neighbours."""
    import scipy.sparse as sp

    with_self = adjacency(cells, n_nodes) + sp.eye(n_nodes, format="csr")
    degree = np.asarray(with_self.sum(axis=1)).ravel()
    return (sp.diags(1.0 / degree) @ with_self).tocsr()


def mean_edge_length(points: np.ndarray, cells: np.ndarray) -> float:
    """Mean over the D(D+1)/2 vertex pairs of a cell of the mean edge length over all cells
    (an edge shared by several cells counts once per cell)."""
    k = cells.shape[1]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    return float(np.mean([np.linalg.norm(points[cells[:, i]] - points[cells[:, j]], axis=1).mean() for i, j in pairs]))
