"""The residual networks: per-node MLP, or message passing over the destination mesh.

Both map standardised node features :math:`z` (:mod:`meshsr.learn.normalisation`) of the
frames (B, N, K) to an output :math:`r_\\theta(z)` (B, N, F), and the prediction is

.. math::  \\hat u(x) = I u(x) + s(x) \\odot r_\\theta(z(x)),

with :math:`s` the local scale of :mod:`meshsr.learn.features`: the network predicts the
residual :math:`u_{dst} - I u` in units of the local amplitude.  (The training loss
weighs fields by the residual's RMS :math:`\\rho_r`; it does not enter the prediction.)

* ``mlp``: :math:`r = \\mathrm{MLP}(z)` node by node.
* ``gnn``: an encoder MLP, then ``message_passing`` residual blocks
  :math:`h \\leftarrow h + \\mathrm{MLP}([h, \\bar A h])` with the row-normalised
  adjacency :math:`\\bar A` of the destination mesh's edges (mean over neighbours), then a
  linear decoder.

Inference over many frames runs through :func:`infer`, a bounded number of node-frames at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from meshsr.learn.settings import KINDS
from meshsr.mesh.geometry import mesh_edges

CHUNK_NODES = 1 << 18  # node-frames per inference chunk


@dataclass(frozen=True)
class ModelConfig:
    """Plain-data architecture description, stored with the weights."""

    kind: str
    n_inputs: int
    n_outputs: int
    hidden: int = 64
    layers: int = 3
    message_passing: int = 2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {KINDS}, got {self.kind!r}")
        if min(self.n_inputs, self.n_outputs, self.hidden, self.layers) < 1 or self.message_passing < 0:
            raise ValueError(f"invalid model sizes: {self}")

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` with SiLU, then a linear output."""
    modules: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    modules.append(nn.Linear(width, n_out))
    return nn.Sequential(*modules)


class ResidualMLP(nn.Module):
    """Node-wise residual: (..., K) -> (..., F)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.net = mlp(config.n_inputs, config.hidden, config.n_outputs, config.layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, graph: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class MeshGNN(nn.Module):
    """Message passing over the destination mesh: (B, N, K) frames -> (B, N, F)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h = config.hidden
        self.encoder = mlp(config.n_inputs, h, h, max(config.layers - 1, 1))
        self.blocks = nn.ModuleList(mlp(2 * h, h, h, 1) for _ in range(config.message_passing))
        self.decoder = nn.Linear(h, config.n_outputs)
        nn.init.zeros_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x: torch.Tensor, graph: torch.Tensor | None = None) -> torch.Tensor:
        if graph is None:
            raise ValueError("MeshGNN needs the mesh graph (mean-aggregation matrix)")
        b, n, _ = x.shape
        h = self.encoder(x)
        for block in self.blocks:
            width = h.shape[-1]
            flat = h.permute(1, 0, 2).reshape(n, b * width)
            with torch.autocast(x.device.type, enabled=False):  # fp32 under mixed precision: no half sparse kernels
                agg = torch.sparse.mm(graph, flat.to(graph.dtype)).reshape(n, b, width).permute(1, 0, 2)
            h = h + block(torch.cat([h, agg], dim=-1))
        return self.decoder(h)


def build_model(config: ModelConfig) -> nn.Module:
    return ResidualMLP(config) if config.kind == "mlp" else MeshGNN(config)


@torch.no_grad()
def infer(
    network: nn.Module,
    inputs: Callable[[slice], torch.Tensor],
    n_frames: int,
    n_nodes: int,
    graph: torch.Tensor | None = None,
    chunk_nodes: int = CHUNK_NODES,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Network output (C, N, F) of ``inputs(chunk)`` (C, N, K) for frame slices of about ``chunk_nodes`` node-frames.

    Runs in eval mode without gradients, and restores the network's mode when done.
    """
    was_training = network.training
    network.eval()
    try:
        per_chunk = max(1, chunk_nodes // n_nodes)
        for start in range(0, n_frames, per_chunk):
            chunk = slice(start, min(start + per_chunk, n_frames))
            yield chunk, network(inputs(chunk), graph)
    finally:
        network.train(was_training)


def mean_adjacency(cells: np.ndarray, n_nodes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Row-normalised adjacency :math:`\\bar A` (sparse COO, float32) of the mesh graph."""
    edges = mesh_edges(cells, n_nodes)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    degree = np.bincount(rows, minlength=n_nodes).astype(np.float64)
    values = 1.0 / np.maximum(degree[rows], 1.0)
    return torch.sparse_coo_tensor(
        torch.as_tensor(np.stack([rows, cols])),
        torch.as_tensor(values, dtype=torch.float32),
        size=(n_nodes, n_nodes),
        is_coalesced=True,
        check_invariants=True,
    ).to(device)
