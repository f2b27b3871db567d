"""Multi-head scaled dot-product attention (section 3.2).

Masks are boolean with True meaning "may attend" (``attend_mask``), broadcastable to
(B, H, T, S). Attention runs through ``F.scaled_dot_product_attention`` so fused
kernels are used where the device has them; when the caller asks for the weights
(plots, the server's heat map) the same computation is done in three visible steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        # first projection index (0: q, k, v; 1: k, v) -> (key, weight, bias)
        self._stacked_cache: dict[int, tuple] = {}

    def train(self, mode: bool = True) -> MultiHeadAttention:
        # Every switch between training and evaluation drops the stacked copies:
        # an optimizer may change the weights without bumping their version
        # counter (torch.optim.Adam(fused=True) does), so the key alone cannot
        # be trusted across training steps.
        self._stacked_cache.clear()
        return super().train(mode)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)"""
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) -> keys, values each (B, H, S, D/H), as one matrix product"""
        if not self._plain_linears():
            return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))
        k, v = F.linear(x, *self._stacked(1)).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def project_qkv(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention projections: (B, T, D) -> queries, keys, values each
        (B, H, T, D/H).

        The three projections run as one (D -> 3D) matrix product: one larger
        product keeps the CPU's vector units busier than three small ones, in
        training and in every decoding step.
        """
        if not self._plain_linears():
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            q, k, v = F.linear(x, *self._stacked(0)).chunk(3, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def _plain_linears(self) -> bool:
        # Quantized copies of the model replace nn.Linear and keep no float weight.
        return all(
            type(m) is nn.Linear for m in (self.q_proj, self.k_proj, self.v_proj)
        )

    def _stacked(self, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights (nD, D) and biases (nD,) of the projections q, k, v from index
        ``first`` on, stacked. With gradients they are concatenated afresh (the
        concatenation passes gradients back to each projection); without, the
        stacked copy is cached until the next ``train()``/``eval()`` call, and
        rebuilt sooner if a parameter was replaced or changed in place (as far as
        its version counter tells)."""
        linears = (self.q_proj, self.k_proj, self.v_proj)[first:]
        if torch.is_grad_enabled():
            return (
                torch.cat([m.weight for m in linears]),
                torch.cat([m.bias for m in linears]),
            )
        params = [p for m in linears for p in (m.weight, m.bias)]
        key = (first, *((p.data_ptr(), p._version, p.device, p.dtype) for p in params))
        cached = self._stacked_cache.get(first)
        if cached is None or cached[0] != key:
            weight = torch.cat(params[0::2])  # (nD, D)
            bias = torch.cat(params[1::2])  # (nD,)
            cached = self._stacked_cache[first] = (key, weight, bias)
        return cached[1], cached[2]

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attend_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` (B, T, D) to projected ``keys``/``values``
        (B, H, S, D/H).

        Returns the output (B, T, D) and, if ``need_weights``, the attention
        weights (B, H, T, S).
        """
        q = self.split_heads(self.q_proj(query))  # (B, H, T, D/H)
        return self.attend(q, keys, values, attend_mask, is_causal, need_weights)

    def attend(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attend_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Like ``forward`` with queries already projected: q (B, H, T, D/H).

        ``keys``/``values`` may hold fewer rows G than the queries (B = G x K, the
        K rows of one source consecutive, as beams are): each source's keys then
        serve its K rows in one product, without K copies of them.
        """
        B, H, T, _ = q.shape
        D = H * self.head_dim
        G = keys.size(0)
        if G != B:
            q = q.view(G, B // G, H, T, -1).transpose(1, 2)  # (sources, H, K, T, D/H)
            q = q.reshape(G, H, B // G * T, -1)  # (sources, H, K*T, D/H)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            context, weights = self._attend_explicit(
                q, keys, values, attend_mask, is_causal, dropout
            )
        else:
            context = fused_attention(
                q, keys, values, attend_mask, dropout, is_causal
            )  # (B, H, T, D/H)
            weights = None
        if G != B:
            context = _ungroup(context, B, T)  # (B, H, T, D/H)
            weights = None if weights is None else _ungroup(weights, B, T)
        context = context.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out_proj(context), weights

    @staticmethod
    def _attend_explicit(q, k, v, attend_mask, is_causal, dropout):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, S)
        if is_causal:
            T, S = scores.shape[-2:]
            causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attend_mask is not None:
            scores = scores.masked_fill(~attend_mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        return F.dropout(weights, dropout) @ v, weights


def _ungroup(x: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """(G, H, K*T, E) -> (B, H, T, E) with B = G x K"""
    G, H, _, E = x.shape
    return x.view(G, H, B // G, T, E).transpose(1, 2).reshape(B, H, T, E)


def fused_attention(q, k, v, attend_mask, dropout: float, is_causal: bool):
    """``F.scaled_dot_product_attention`` of (B, H, T, D/H) queries over
    (B, H, S, D/H) keys/values.

    On a CPU, bfloat16 inputs are attended in float32 and the result cast back:
    there the bf16 kernel's backward ran about 6x slower than the float32 one
    (profiled on the `small` preset), while the surrounding matmuls gain from bf16.
    """
    if q.dtype != torch.bfloat16 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend_mask, dropout_p=dropout, is_causal=is_causal
        )
    with torch.autocast("cpu", enabled=False):
        context = F.scaled_dot_product_attention(
            q.float(),
            k.float(),
            v.float(),
            attn_mask=attend_mask,
            dropout_p=dropout,
            is_causal=is_causal,
        )
    return context.to(torch.bfloat16)
