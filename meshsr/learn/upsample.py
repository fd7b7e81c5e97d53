"""Super-resolve a new coarse run with a trained pair: prediction and plain interpolation on the target mesh.

For a run :math:`u_t` (T frames) on the pair's source mesh, with the pair's operator
:math:`W` (its cache's, or built in the job) and trained model :math:`r_\\theta`,

.. math::  b_t = W u_t, \\qquad \\hat u_t = b_t + s_t \\odot r_\\theta(z_t),

where :math:`z_t` and :math:`s_t` are the features and local scales of
:class:`~meshsr.learn.features.FeatureBuilder`, made from the source mesh, the target
points, :math:`W` and :math:`u` alone: no target solution is read.  The baseline
:math:`b_t` is plain interpolation.  The run must lie on the source mesh itself: its points
and cells must have the same digest as the source mesh's (:func:`mesh_digest`), whatever
the file they come in.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from meshsr.cache.freshness import check_fresh
from meshsr.cache.pair_operator import read_pair_operator
from meshsr.errors import InputError
from meshsr.interp.operator import InterpolationOperator
from meshsr.learn.device import pick_device
from meshsr.learn.features import FeatureBuilder
from meshsr.learn.model import mean_adjacency
from meshsr.learn.settings import RunSettings
from meshsr.learn.trained_model import TrainedModel, retrain_command
from meshsr.mesh.bundle import MeshBundle, load_bundle
from meshsr.mesh.xdmf import write_upsampled

log_default = logging.getLogger("meshsr")


@dataclass
class Upsampled:
    """One run on the target mesh: prediction and baseline (T, N_dst, F) float32, per frame ``times``."""

    points: np.ndarray
    cells: np.ndarray
    prediction: np.ndarray
    baseline: np.ndarray
    field_names: list[str]
    times: np.ndarray


def mesh_digest(points: np.ndarray, cells: np.ndarray) -> str:
    """sha256 of a mesh's points (float64) and cells (int64): their shapes and bytes, nothing of the file."""
    digest = hashlib.sha256()
    for array, dtype in ((points, np.float64), (cells, np.int64)):
        array = np.ascontiguousarray(array, dtype=dtype)
        digest.update(f"{array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_on_source(run: MeshBundle, source: MeshBundle, run_path: str | Path, source_name: str) -> None:
    """The run's points and cells must be the source mesh's (same digest), or nothing can be applied."""
    if mesh_digest(run.points, run.cells) != mesh_digest(source.points, source.cells):
        sizes = f"{run.n_nodes} nodes, {len(run.cells)} cells vs {source.n_nodes} nodes, {len(source.cells)} cells"
        raise InputError(
            run_path,
            f"run is not on the mesh of resolution {source_name!r} (points and cells differ: {sizes}); "
            f"solve it on that mesh, or upsample it with a pair whose source is its mesh",
        )


def pick_simulation(run: MeshBundle, simulation: int, run_path: str | Path, key: str) -> np.ndarray:
    """Source fields (T, N_src, F) of simulation ``simulation`` of the run."""
    if not 0 <= simulation < run.n_simulations:
        raise InputError(
            key,
            f"simulation {simulation} but {run_path} holds {run.n_simulations} (0 to {run.n_simulations - 1}); "
            "pick one of those",
        )
    return run.fields[simulation]


def check_fields(run: MeshBundle, trained: TrainedModel, run_path: str | Path, model_path: str | Path) -> None:
    """The run must carry the fields the model predicts, in its order (by name when the run names them)."""
    names = trained.field_names
    if run.field_names and run.field_names != names:
        raise InputError(
            run_path,
            f"run has fields {run.field_names} but the model {model_path} predicts {names}; "
            "export the run with those fields in that order",
        )
    if run.n_fields != len(names):
        raise InputError(
            run_path,
            f"run has {run.n_fields} field components but the model {model_path} predicts {len(names)} "
            f"({', '.join(names)}); export the run with those fields",
        )


def pair_operator(
    source: MeshBundle,
    target: MeshBundle,
    src_path: str | Path,
    dst_path: str | Path,
    cache_path: str | Path | None,
    memo: str | Path | None = None,
) -> InterpolationOperator:
    """The pair's operator: read from its cache (fresh for the current inputs and cache code), or built."""
    if cache_path is None:
        return InterpolationOperator.build(source.points, source.cells, target.points)
    operator, summary = read_pair_operator(cache_path)
    check_fresh(summary, cache_path, src_path, dst_path, memo=memo)
    if operator.shape != (target.n_nodes, source.n_nodes):
        raise InputError(
            cache_path,
            f"pair cache operator is {operator.shape} but the meshes have {target.n_nodes} target and "
            f"{source.n_nodes} source nodes; rebuild it",
        )
    return operator


class Upsampler:
    """A trained pair ready to super-resolve runs on its source mesh: features, graph and network set up once."""

    def __init__(
        self,
        trained: TrainedModel,
        source: MeshBundle,
        target: MeshBundle,
        operator: InterpolationOperator,
        device: torch.device | str = "cpu",
        model_path: str | Path = "model",
    ) -> None:
        self.builder = FeatureBuilder(
            source.points, source.cells, target.points, operator, trained.field_names, **trained.feature_options
        )
        if self.builder.names != trained.feature_names:
            problem = "model was trained on other input features than this pair provides"
            raise InputError(model_path, f"{problem}; retrain it with: {retrain_command(model_path)}")
        self.trained, self.operator, self.device = trained, operator, device
        trained.network.to(device)
        gnn = trained.config.kind == "gnn"
        self.graph = mean_adjacency(target.cells, target.n_nodes, device) if gnn else None

    def __call__(self, fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prediction and baseline (T, N_dst, F) float32 of source ``fields`` (T, N_src, F).

        The baseline is :meth:`InterpolationOperator.apply` to float32, as the pair cache stores
        it, so a run that is one of the pair's simulations gets the evaluation's very numbers.
        """
        baseline = self.operator.apply(fields, dtype=np.float32)
        features, scales = self.builder.simulation(fields, baseline)
        prediction = self.trained.predict(features, scales, baseline, self.graph, self.device)
        return prediction, baseline


def upsample_job(
    name: str,
    source: str,
    target: str,
    run_path: str | Path,
    simulation: int,
    model_path: str | Path,
    src_path: str | Path,
    dst_path: str | Path,
    cache_path: str | Path | None,
    outputs: dict[str, str],
    device: str = RunSettings.device,
    threads: int = RunSettings.threads,
    memo: str | Path | None = None,
    log: logging.Logger = log_default,
) -> Upsampled:
    """The upsample rule: ``outputs`` has the paths ``xdmf`` (its ``.h5`` is written beside it) and ``npz``."""
    torch.set_num_threads(threads)
    trained = TrainedModel.load(model_path)
    if (trained.source, trained.target) != (source, target):
        pairs = f"{trained.source} -> {trained.target}, not {source} -> {target}"
        raise InputError(model_path, f"model was trained for {pairs}; retrain it with: {retrain_command(model_path)}")
    run = load_bundle(run_path)
    src_mesh, dst_mesh = load_bundle(src_path), load_bundle(dst_path)
    check_on_source(run, src_mesh, run_path, source)
    check_fields(run, trained, run_path, model_path)
    fields = pick_simulation(run, simulation, run_path, f"config key 'upsample.{name}.simulation'")
    operator = pair_operator(src_mesh, dst_mesh, src_path, dst_path, cache_path, memo)
    torch_device = pick_device(device)
    prediction, baseline = Upsampler(trained, src_mesh, dst_mesh, operator, torch_device, model_path)(fields)
    times = run.times if run.times is not None else np.arange(run.n_frames, dtype=np.float64)
    result = Upsampled(dst_mesh.points, dst_mesh.cells, prediction, baseline, trained.field_names, times)
    log.info(
        "upsample %s: %s simulation %d, %d frames, %s -> %s (%d -> %d nodes), operator %s",
        name, run_path, simulation, len(times), source, target, src_mesh.n_nodes, dst_mesh.n_nodes,
        "from the pair cache" if cache_path else "built in this job",
    )
    write_upsampled(outputs["npz"], outputs["xdmf"], **vars(result))
    log.info("wrote %s", ", ".join(str(p) for p in outputs.values()))
    return result
