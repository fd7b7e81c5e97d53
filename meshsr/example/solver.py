r"""Offline multi-resolution example data: advection-diffusion past a cylinder.

Every simulation solves, for each field component with its own diffusivity
:math:`\kappa`,

.. math::

    \partial_t c + b \cdot \nabla c - \kappa \Delta c = f(x, t)
    \quad \text{in } \Omega, \qquad c = 0 \text{ on } x = 0, \qquad
    \kappa \partial_n c = 0 \text{ elsewhere}, \qquad c(\cdot, 0) = 0,

with P1 finite elements, SUPG stabilisation and the :math:`\theta`-scheme in time. The
flow :math:`b = (\partial_y \psi, -\partial_x \psi)` comes from the stream function of
potential flow past the cylinder with circulation,

.. math::

    \psi = U (y - y_c) \left(1 - \frac{R^2}{r^2}\right) + \frac{\Gamma}{2 \pi} \log r,

so :math:`\nabla \cdot b = 0` exactly and :math:`b \cdot n = 0` on the cylinder. The
source is a sum of pulsing Gaussians,
:math:`f = \sum_k A_k \tfrac12 (1 + \sin(2 \pi \nu_k t + \phi_k))
\exp(-|x - x_k|^2 / 2 \sigma^2)`.

Physical parameters and output times depend only on :class:`ExampleSettings`, never on
the mesh, so bundles generated at different resolutions describe the same simulations.

With ``settings.dim == 3`` the same equation, boundary conditions and scheme run on
tetrahedra of the unit cube with the helical flow of :mod:`meshsr.example.cube`
(Gaussians in 3D, P1 on tetrahedra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import splu
from skfem import Basis, BilinearForm, ElementTetP1, ElementTriP1, LinearForm, MeshTet, MeshTri, asm

from meshsr.example import cube
from meshsr.example.mesh import HEIGHT, HOLE_CENTRE, HOLE_RADIUS, make_mesh
from meshsr.example.settings import ExampleSettings
from meshsr.mesh.bundle import MeshBundle


@dataclass(frozen=True)
class _SimParams:
    speed: float
    circulation: float
    centres: np.ndarray  # (K, D)
    strengths: np.ndarray  # (K,)
    frequencies: np.ndarray  # (K,)
    phases: np.ndarray  # (K,)


def _draw_parameters(settings: ExampleSettings) -> list[_SimParams]:
    """Per-simulation physical parameters from ``settings.params_seed`` alone."""
    rng = np.random.default_rng(settings.params_seed)
    k, sigma = settings.n_sources, settings.source_width
    sims = []
    for _ in range(settings.n_simulations):
        if settings.dim == 3:
            centres = cube.draw_centres(rng, k)
        else:
            centres = _draw_centres_2d(rng, k, sigma)
        sims.append(
            _SimParams(
                speed=float(rng.uniform(*settings.flow_speed)),
                circulation=float(rng.uniform(*settings.circulation)),
                centres=centres,
                strengths=rng.uniform(*settings.source_strength, size=k),
                frequencies=rng.uniform(*settings.source_frequency, size=k),
                phases=rng.uniform(0.0, 2.0 * np.pi, size=k),
            )
        )
    return sims


def _draw_centres_2d(rng: np.random.Generator, k: int, sigma: float) -> np.ndarray:
    centres = np.empty((k, 2))
    for i in range(k):  # upstream of, beside or just behind the cylinder, clear of it
        while True:
            c = rng.uniform((0.15, 0.15), (1.3, HEIGHT - 0.15))
            if np.hypot(c[0] - HOLE_CENTRE[0], c[1] - HOLE_CENTRE[1]) > HOLE_RADIUS + 2.5 * sigma:
                break
        centres[i] = c
    return centres


def _velocity(x: np.ndarray, y: np.ndarray, speed: float, circulation: float) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`b = (\partial_y \psi, -\partial_x \psi)` for the cylinder stream function."""
    dx, dy = x - HOLE_CENTRE[0], y - HOLE_CENTRE[1]
    r2 = dx * dx + dy * dy
    a = HOLE_RADIUS**2 / r2
    g = circulation / (2.0 * np.pi * r2)
    bx = speed * (1.0 - a + 2.0 * a * dy * dy / r2) + g * dy
    by = -(speed * 2.0 * a * dx * dy / r2 + g * dx)
    return bx, by


def _pulse(sim: _SimParams, t: float) -> np.ndarray:
    return sim.strengths * 0.5 * (1.0 + np.sin(2.0 * np.pi * sim.frequencies * t + sim.phases))


def _flow(coords: np.ndarray, sim: _SimParams) -> tuple[np.ndarray, ...]:
    """The velocity components at ``coords`` (D, ...): the cylinder flow in 2D, the helical flow in 3D."""
    if len(coords) == 3:
        return cube.velocity(*coords, sim.speed, sim.circulation)
    return _velocity(*coords, sim.speed, sim.circulation)


def _sum(terms):
    """Left-to-right sum without a leading zero (2D sums stay bit-identical to the written-out form)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _along_b(w, grad) -> np.ndarray:
    r""":math:`b \cdot \nabla`, with the components ``w.b0, w.b1[, w.b2]``."""
    return _sum([w[f"b{i}"] * grad[i] for i in range(len(grad))])


@BilinearForm
def _supg_mass(u, v, w):
    bv = _along_b(w, v.grad)
    return u * (v + w.tau * bv)


@BilinearForm
def _supg_transport(u, v, w):
    bu = _along_b(w, u.grad)
    bv = _along_b(w, v.grad)
    return bu * (v + w.tau * bv) + w.kappa * _sum([u.grad[i] * v.grad[i] for i in range(len(u.grad))])


@LinearForm
def _supg_load(v, w):
    bv = _along_b(w, v.grad)
    return w.g * (v + w.tau * bv)


def _operators(
    basis: Basis, sim: _SimParams, kappa: float, sigma: float
) -> tuple[csc_matrix, csc_matrix, np.ndarray]:
    r"""SUPG mass ``Mt``, operator ``A`` and per-source loads ``L`` (K, N).

    With the test function :math:`w = v + \tau\, b \cdot \nabla v` (P1: no
    :math:`\Delta c` in the residual) and the steady stabilisation parameter
    :math:`\tau = ((2|b|/h)^2 + 9 (4\kappa/h^2)^2)^{-1/2}`,
    :math:`M_t = (u, w)`, :math:`A = (b \cdot \nabla u, w) + \kappa (\nabla u, \nabla v)`
    and :math:`L_k = (g_k, w)`.
    """
    coords = np.asarray(basis.global_coordinates())
    h = np.asarray(basis.mesh_parameters())
    b = _flow(coords, sim)
    speed = np.hypot(b[0], b[1]) if len(b) == 2 else np.sqrt(b[0] ** 2 + b[1] ** 2 + b[2] ** 2)
    tau = 1.0 / np.sqrt((2.0 * speed / h) ** 2 + 9.0 * (4.0 * kappa / h**2) ** 2)
    w = {**{f"b{i}": bi for i, bi in enumerate(b)}, "tau": tau}
    gaussians = [
        np.exp(-_sum([(x - c) ** 2 for x, c in zip(coords, centre, strict=True)]) / (2.0 * sigma**2))
        for centre in sim.centres
    ]
    loads = [asm(_supg_load, basis, g=g, **w) for g in gaussians]
    mass = asm(_supg_mass, basis, **w)
    transport = asm(_supg_transport, basis, kappa=kappa, **w)
    return mass.tocsc(), transport.tocsc(), np.stack(loads)


def _run(basis: Basis, free: np.ndarray, sim: _SimParams, kappa: float, settings: ExampleSettings) -> np.ndarray:
    r"""Frames (T, N) of one field by the theta-scheme with a once-factorised matrix.

    .. math::

        (M_t / \Delta t + \theta A) c^{n+1}
        = (M_t / \Delta t - (1 - \theta) A) c^n + L^\top (\theta a(t_{n+1}) + (1 - \theta) a(t_n))
    """
    theta, steps = settings.theta, settings.steps_per_frame
    dt = settings.t_end / (settings.n_frames * steps)
    mt, a, loads = _operators(basis, sim, kappa, settings.source_width)
    lhs = (mt / dt + theta * a)[free][:, free]
    rhs_op = (mt / dt - (1.0 - theta) * a)[free][:, free].tocsr()
    loads = loads[:, free]
    solve = splu(lhs.tocsc()).solve
    c = np.zeros(free.size)
    frames = np.zeros((settings.n_frames, basis.N))
    for frame in range(settings.n_frames):
        for step in range(frame * steps, (frame + 1) * steps):
            amp = theta * _pulse(sim, (step + 1) * dt) + (1.0 - theta) * _pulse(sim, step * dt)
            c = solve(rhs_op @ c + amp @ loads)
        frames[frame, free] = c
    return frames


def simulate(points: np.ndarray, cells: np.ndarray, settings: ExampleSettings) -> MeshBundle:
    """Solve every simulation and field of ``settings`` on the mesh ``(points, cells)``.

    Returns
    -------
    MeshBundle
        ``fields`` float32 (S, T, N, F) sampled at ``times = t_end * (1..T) / T``.
    """
    points = np.asarray(points, dtype=np.float64)
    cells = np.asarray(cells, dtype=np.int64)
    if points.shape[1] != settings.dim:
        raise ValueError(f"settings.dim is {settings.dim} but the mesh is {points.shape[1]}D")
    mesh, element = (MeshTet, ElementTetP1) if settings.dim == 3 else (MeshTri, ElementTriP1)
    basis = Basis(mesh(points.T.copy(), cells.T.copy()), element(), intorder=4)
    free = np.flatnonzero(points[:, 0] > 1e-12)  # Dirichlet c = 0 on the inflow wall x = 0
    sims = _draw_parameters(settings)
    fields = np.empty((len(sims), settings.n_frames, len(points), len(settings.diffusivities)), dtype=np.float32)
    for s, sim in enumerate(sims):
        for f, kappa in enumerate(settings.diffusivities):
            fields[s, :, :, f] = _run(basis, free, sim, kappa, settings)
    times = settings.t_end * np.arange(1, settings.n_frames + 1) / settings.n_frames
    return MeshBundle(points=points, cells=cells, fields=fields, field_names=list(settings.field_names), times=times)


def generate_example(n_nodes: int, mesh_seed: int, settings: ExampleSettings) -> MeshBundle:
    """Mesh the domain of ``settings.dim`` with about ``n_nodes`` nodes (seed ``mesh_seed``) and simulate on it."""
    points, cells = (cube.make_mesh if settings.dim == 3 else make_mesh)(n_nodes, mesh_seed)
    return simulate(points, cells, settings)
