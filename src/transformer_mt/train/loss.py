"""Label-smoothed cross-entropy (section 5.4) that ignores padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_loss(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss over non-pad positions.

    The smoothed target puts 1 - smoothing on the gold token and spreads
    ``smoothing`` evenly over the other V - 1 tokens.

    logits (B, T, V), target (B, T) -> (smoothed loss sum, NLL sum), both scalars
    in float32 whatever the logits' dtype.
    """
    V = logits.size(-1)
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    keep = target != pad_id  # (B, T)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    every = -log_probs.sum(-1)  # (B, T): sum over all V tokens
    other = smoothing / (V - 1)
    loss = (1.0 - smoothing - other) * nll + other * every  # (B, T)
    return loss[keep].sum(), nll[keep].sum()
