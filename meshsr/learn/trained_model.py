"""A trained model as one file: weights, plain-data config and normalisation statistics.

The file is a ``torch.save`` of a dict holding only tensors, strings, numbers, lists
and dicts, so ``torch.load(path, weights_only=True)`` reads it without unpickling code.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meshsr.atomic import atomic_path
from meshsr.errors import InputError
from meshsr.learn.model import CHUNK_NODES, ModelConfig, build_model, infer
from meshsr.learn.normalisation import Normalisation
from meshsr.provenance.rerun import snakemake_command

FORMAT_VERSION = 1


def retrain_command(path: str | Path) -> str:
    """The command that rebuilds the model file at ``path`` (a workflow path, results/models/{src}_{dst}.pt).

    ``--force`` is a flag, so the target can follow it; ``--forcerun`` would take it as one of its own values.
    The user's ``--configfile`` and ``--config`` follow the target (:mod:`meshsr.provenance.rerun`).
    """
    return snakemake_command(path)


def _unreadable_reason(exc: Exception) -> str:
    """torch.load's refusal in a few words (its own text runs to six lines and suggests an unsafe load)."""
    text = str(exc)
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if isinstance(exc, pickle.UnpicklingError) and code:
        return f"it holds pickled code, {code.group(1)}, which is never loaded"
    return _short(exc)


def _short(exc: Exception) -> str:
    """An exception's text on one line, at most 100 characters."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= 100 else line[:97] + "..."


def _not_a_model(state: Any) -> str:
    """Why a readable file is not a meshsr model file, in a few words."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    if "format_version" not in state:
        keys = ", ".join(str(k) for k in list(state)[:5]) + (", ..." if len(state) > 5 else "")
        return f"a dict without 'format_version'; keys: {keys}" if state else "an empty dict"
    return f"format version {state['format_version']!r}, this meshsr reads {FORMAT_VERSION}"


@dataclass
class TrainedModel:
    """Network, its inputs' description and what it needs to turn outputs into fields."""

    config: ModelConfig
    network: nn.Module
    normalisation: Normalisation
    feature_names: list[str]
    feature_options: dict[str, Any]
    field_names: list[str]
    source: str
    target: str
    settings: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, list[int]] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)  # where it was trained: a record, never read back as a setting

    def predict(
        self,
        features: np.ndarray,
        scales: np.ndarray,
        interp: np.ndarray,
        graph: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        chunk_nodes: int = CHUNK_NODES,
    ) -> np.ndarray:
        """Destination fields (T, N, F) float32 from raw features (T, N, K), local scales and interpolation (T, N, F).

        .. math::  \\hat u = I u + s \\odot r_\\theta(z)
        """
        t_len, n, _ = features.shape
        out = np.empty(interp.shape, dtype=np.float32)

        def inputs(chunk: slice) -> torch.Tensor:
            return torch.from_numpy(self.normalisation.features(features[chunk])).to(device)

        for chunk, y in infer(self.network, inputs, t_len, n, graph, chunk_nodes):
            out[chunk] = interp[chunk] + y.cpu().numpy() * scales[chunk]
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.config.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()},
            "normalisation": {k: torch.as_tensor(v) for k, v in self.normalisation.to_state().items()},
            "feature_names": list(self.feature_names),
            "feature_options": self.feature_options,
            "field_names": list(self.field_names),
            "source": self.source,
            "target": self.target,
            "settings": self.settings,
            "splits": self.splits,
            "history": self.history,
            "run": self.run,
        }

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash never leaves a truncated model file."""
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(self.to_state(), tmp)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
        """Read a model file with ``weights_only=True`` (no code is unpickled)."""
        rebuild = f"rebuild it with: {retrain_command(path)}"
        path = Path(path)
        if not path.is_file():
            raise InputError(path, f"model file does not exist; build it with: {retrain_command(path)}")
        if not zipfile.is_zipfile(path):
            problem = "not a meshsr model file (not a zip archive: truncated, or not written by torch.save)"
            raise InputError(path, f"{problem}; {rebuild}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except PermissionError as exc:
            raise InputError(path, f"cannot read it ({exc.strerror}); check the file's permissions") from None
        except Exception as exc:  # torch raises many types for damaged or foreign files
            raise InputError(path, f"not a meshsr model file ({_unreadable_reason(exc)}); {rebuild}") from None
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            raise InputError(path, f"not a meshsr model file ({_not_a_model(state)}); {rebuild}")
        try:
            config = ModelConfig(**state["model"])
            network = build_model(config)
            network.load_state_dict(state["state_dict"])
            normalisation = Normalisation.from_state(state["normalisation"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(path, f"model file is incomplete or inconsistent ({_short(exc)}); {rebuild}") from None
        network.to(device)
        return cls(
            config=config,
            network=network,
            normalisation=normalisation,
            feature_names=list(state["feature_names"]),
            feature_options=dict(state["feature_options"]),
            field_names=list(state["field_names"]),
            source=state["source"],
            target=state["target"],
            settings=state.get("settings", {}),
            splits=state.get("splits", {}),
            history=state.get("history", {}),
            run=state.get("run", {}),
        )
