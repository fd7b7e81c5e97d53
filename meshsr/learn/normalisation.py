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
    running = RunningMoments()
    for chunk in chunks:
        running.add(chunk, new_group=True)
    return running.result()


class RunningMoments:
    """The float64 sums behind :func:`moments`, fed in pieces of bounded size, with the same rounding.

    numpy sums over the first axis row after row, so a group's sum continued piece by piece
    (the running sum as the first row of the next piece) is bit for bit the sum of the whole
    group; groups are added to the totals as :func:`moments` adds its chunks.
    """

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0
        self._sum: np.ndarray | None = None  # of the current group
        self._squares: np.ndarray | None = None

    def add(self, piece: np.ndarray, new_group: bool = False) -> None:
        """Rows ``piece`` (..., K); ``new_group``: they start a new group (a chunk of :func:`moments`)."""
        if new_group:
            self._close_group()
        rows = np.asarray(piece).reshape(-1, piece.shape[-1])
        buffer = np.empty((len(rows) + 1, rows.shape[1]), dtype=np.float64)
        buffer[1:] = rows
        buffer[0] = 0.0 if self._sum is None else self._sum
        self._sum = buffer.sum(axis=0)
        buffer[1:] **= 2
        buffer[0] = 0.0 if self._squares is None else self._squares
        self._squares = buffer.sum(axis=0)
        self.count += len(rows)

    def _close_group(self) -> None:
        if self._sum is not None:
            self.total = self.total + self._sum
            self.squares = self.squares + self._squares
        self._sum = self._squares = None

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, standard deviation (1 where constant) and root mean square (1 where zero) per column."""
        self._close_group()
        if self.count == 0:
            raise ValueError("no training samples to compute normalisation statistics from")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 0.0))
        std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
        rms = np.sqrt(self.squares / self.count)
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
