"""Where a job runs its tensors, and the settings that make a run reproducible on it."""

from __future__ import annotations

import os

import torch

from meshsr.errors import InputError


def pick_device(setting: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "config key 'train.device': 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if setting in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def make_deterministic(seed: int, device: torch.device, threads: int) -> torch.Generator:
    """Seed torch, insist on deterministic kernels and return the generator for batch order.

    Results are reproducible for a fixed seed, device and thread count.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    # CUDA's sparse and scatter kernels have no deterministic variant; warn there instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.set_num_threads(threads)
    return batch_generator(seed)


def batch_generator(seed: int) -> torch.Generator:
    """The generator whose permutations order the training batches (the same wherever training runs)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator
