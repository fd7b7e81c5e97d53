"""Numerical precision of the training steps: fp32, or mixed precision with bf16 or fp16.

``train.precision`` is a fit setting (provenance): mixed precision rounds the forward pass, so
the weights after a step differ from fp32's and a change retrains. The master weights, the
optimiser state, the loss and every validation and evaluation pass stay in fp32; only the
forward and backward passes of the training steps run under :func:`torch.autocast`.

fp16's narrow exponent range needs loss scaling (:class:`torch.amp.GradScaler`): the loss is
multiplied by a scale :math:`s` before ``backward`` and the gradients divided by it before the
step, which is skipped (and :math:`s` halved) when a gradient overflowed. bf16 has fp32's range
and needs none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast context and (fp16 only) loss scaling of one run on ``device``."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {name!r}; one of {', '.join(PRECISIONS)}")
        self.name, self.device, self.dtype = name, device, PRECISIONS[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision for the forward pass inside; fp32 (no autocast at all) for ``fp32``."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def step(self, loss: torch.Tensor, optimiser: torch.optim.Optimizer) -> None:
        """``backward`` and one optimiser step, through the loss scaler for fp16."""
        if self.scaler is None:
            loss.backward()
            optimiser.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimiser)
        self.scaler.update()
