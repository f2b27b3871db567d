"""Token embeddings scaled by sqrt(d_model) and positional encodings
(sections 3.4 and 3.5)."""

from __future__ import annotations

import math

import torch
from torch import nn


class ScaledEmbedding(nn.Module):
    """Embedding lookup multiplied by sqrt(d_model); its weight doubles as the
    output projection when embeddings are shared."""

    def __init__(self, vocab_size: int, d_model: int, pad_id: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        self.pad_id = pad_id
        self.scale = math.sqrt(d_model)
        nn.init.normal_(self.weight, mean=0.0, std=d_model**-0.5)
        with torch.no_grad():
            self.weight[pad_id].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> (B, T, D)"""
        return nn.functional.embedding(tokens, self.weight) * self.scale


def sinusoid_table(max_positions: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...): (P, D)."""
    position = torch.arange(max_positions, dtype=torch.float64).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float64)
        * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(max_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer(
            "table", sinusoid_table(max_positions, d_model), persistent=False
        )

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """-> (length, D) encodings for positions offset .. offset+length-1"""
        return self.table[offset : offset + length]


class LearnedPositions(nn.Module):
    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_positions, d_model))
        nn.init.normal_(self.weight, mean=0.0, std=d_model**-0.5)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        return self.weight[offset : offset + length]
