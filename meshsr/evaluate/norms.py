"""Error norms shared by the cache log and the evaluation tables (numpy only)."""

from __future__ import annotations

import numpy as np


def relative_l2(estimate: np.ndarray, truth: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    r"""Relative L2 error :math:`\|e - t\|_2 / \|t\|_2` over ``axis`` (all axes when None)."""
    estimate = np.asarray(estimate, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    num = np.sqrt(np.sum((estimate - truth) ** 2, axis=axis))
    den = np.sqrt(np.sum(truth**2, axis=axis))
    return num / np.maximum(den, np.finfo(float).tiny)
