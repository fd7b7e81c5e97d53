"""Standardisation of the features and of the residual targets, from the training split only.

.. math::  z = (x - \\mu_x) / \\sigma_x, \\qquad y = (u_{dst} - I u) / \\rho_r

with :math:`\\rho_r` the root mean square of the training residual per field (no shift,
so a zero field keeps a zero correction).  A constant feature (:math:`\\sigma = 0`, e.g.
the ``extrapolated`` flag when no node is extrapolated) gets :math:`\\sigma = 1`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np


def moments(chunks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard deviation and root mean square over all but the last axis (float64 sums)."""
    count, total, squares = 0, 0.0, 0.0
    for chunk in chunks:
        flat = np.asarray(chunk).reshape(-1, chunk.shape[-1]).astype(np.float64)
        count += len(flat)
        total = total + flat.sum(axis=0)
        squares = squares + (flat**2).sum(axis=0)
    if count == 0:
        raise ValueError("no training samples to compute normalisation statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    rms = np.sqrt(squares / count)
    return mean, std, np.where(rms > 0, rms, 1.0)


@dataclass
class Normalisation:
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_rms: np.ndarray

    @classmethod
    def fit(cls, features: Iterable[np.ndarray], residuals: Iterable[np.ndarray]) -> Normalisation:
        mean, std, _ = moments(features)
        return cls(mean, std, moments(residuals)[2])

    def features(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.feature_mean) / self.feature_std).astype(np.float32)

    def targets(self, residual: np.ndarray) -> np.ndarray:
        return (residual / self.target_rms).astype(np.float32)

    def gains(self, scale: np.ndarray) -> np.ndarray:
        """Factor from the network output to the standardised target: local scale / residual RMS."""
        return (scale / self.target_rms).astype(np.float32)

    def to_state(self) -> dict[str, np.ndarray]:
        """float64 arrays by name (the model file stores them as tensors)."""
        return {f.name: np.asarray(getattr(self, f.name), dtype=np.float64) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict) -> Normalisation:
        """From arrays or tensors by name."""
        return cls(**{f.name: np.asarray(state[f.name], dtype=np.float64) for f in fields(cls)})
