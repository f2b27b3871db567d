"""Encoder and decoder layers: attention, position-wise feed-forward, and the
residual + dropout + layer-norm wrapper around every sub-layer (section 3.1-3.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .attention import MultiHeadAttention
from .config import ModelConfig
from .dropout import Dropout


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, applied to every position alike."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = Dropout(dropout)
        for linear in (self.linear1, self.linear2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)"""
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class Residual(nn.Module):
    """Residual connection with dropout and layer norm around one sub-layer.

    post-norm (paper): LayerNorm(x + Dropout(f(x)));
    pre-norm: x + Dropout(f(LayerNorm(x))).
    """

    def __init__(self, d_model: int, dropout: float, norm: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = norm == "pre"

    def forward(self, x: torch.Tensor, sublayer: Callable) -> tuple:
        """Apply ``sublayer`` (which returns (output, extra)) and return
        (new x, extra)."""
        if self.pre_norm:
            out, extra = sublayer(self.norm(x))
            return x + self.dropout(out), extra
        out, extra = sublayer(x)
        return self.norm(x + self.dropout(out)), extra


class EncoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attention = MultiHeadAttention(
            d, config.heads, config.attention_dropout
        )
        self.feed_forward = FeedForward(d, config.d_ff, config.ff_dropout)
        self.attention_residual = Residual(d, config.dropout, config.norm)
        self.feed_forward_residual = Residual(d, config.dropout, config.norm)

    def forward(
        self, x: torch.Tensor, src_attend: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, S, D), src_attend (B, 1, 1, S) -> (B, S, D), weights (B, H, S, S)"""

        def attend(h):
            q, keys, values = self.self_attention.project_qkv(h)
            return self.self_attention.attend(
                q, keys, values, src_attend, False, need_weights
            )

        x, weights = self.attention_residual(x, attend)
        x, _ = self.feed_forward_residual(x, lambda h: (self.feed_forward(h), None))
        return x, weights


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, h = config.d_model, config.heads
        self.self_attention = MultiHeadAttention(d, h, config.attention_dropout)
        self.cross_attention = MultiHeadAttention(d, h, config.attention_dropout)
        self.feed_forward = FeedForward(d, config.d_ff, config.ff_dropout)
        self.self_residual = Residual(d, config.dropout, config.norm)
        self.cross_residual = Residual(d, config.dropout, config.norm)
        self.feed_forward_residual = Residual(d, config.dropout, config.norm)

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        src_attend: torch.Tensor,
        cache: dict | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, dict | None]:
        """x (B, T, D); cross_kv: encoder keys/values (B, H, S, D/H) each;
        src_attend (B, 1, 1, S). With ``cache`` (incremental decoding) x holds only
        the newest position and its keys/values are appended to the cache.

        Returns (B, T, D) and, if ``need_weights``, {"self": (B, H, T, T'),
        "cross": (B, H, T, S)}.
        """

        def self_attend(h):
            q, keys, values = self.self_attention.project_qkv(h)  # (B, H, T, D/H)
            if cache is not None:
                if "keys" in cache:
                    keys = torch.cat([cache["keys"], keys], dim=2)  # (B, H, T', D/H)
                    values = torch.cat([cache["values"], values], dim=2)
                cache["keys"], cache["values"] = keys, values
            causal = bool(h.size(1) > 1)  # a Python bool also when traced
            return self.self_attention.attend(
                q, keys, values, None, causal, need_weights
            )

        def cross_attend(h):
            keys, values = cross_kv
            return self.cross_attention(
                h, keys, values, src_attend, False, need_weights
            )

        x, self_weights = self.self_residual(x, self_attend)
        x, cross_weights = self.cross_residual(x, cross_attend)
        x, _ = self.feed_forward_residual(x, lambda h: (self.feed_forward(h), None))
        weights = (
            {"self": self_weights, "cross": cross_weights} if need_weights else None
        )
        return x, weights
