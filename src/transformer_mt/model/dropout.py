"""Dropout (section 5.4) with a cheaper random mask on the CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element; in a float32
`small` training step on 2 threads those draws took 11% of the step's time
(torch.profiler, ``aten::bernoulli_``). Here one 64-bit random word gives the
mask of four elements: each 16-bit lane is compared with a threshold, so an
element is dropped with probability ``round(p * 65536) / 65536`` (within
1/131072 of ``p``), and kept elements are scaled by the inverse of the kept
probability actually used, which keeps the expectation exact. The masks come
from PyTorch's default generator, so ``torch.manual_seed`` and a saved RNG
state reproduce them.

On other devices, and inside ``torch.compile``, the module is ``F.dropout``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LANES = 65536  # values of one 16-bit lane


def keep_mask(shape: torch.Size, p: float, device=None) -> tuple[torch.Tensor, float]:
    """A boolean mask of ``shape`` that is False with probability about ``p``,
    and the factor 1 / P(True) that keeps the expectation of a masked tensor.

    Requires 0 < p < 1.
    """
    dropped = round(p * _LANES)  # lanes below the threshold are dropped
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # every one of the 64 bits uniform
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform in [-32768, 32767]
    keep = lanes >= dropped - _LANES // 2
    return keep, _LANES / (_LANES - dropped)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout of ``x`` with rate ``p``; the identity when not training."""
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, True)
    keep, scale = keep_mask(x.shape, p, x.device)
    return _MaskedScale.apply(x, keep, scale)


class Dropout(nn.Module):
    """``nn.Dropout`` with the cheaper CPU mask of this module."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
