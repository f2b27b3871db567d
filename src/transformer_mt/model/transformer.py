"""The encoder-decoder (section 3, Figure 1) and its incremental decoding state."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TransformerMTError
from .config import ModelConfig
from .dropout import Dropout
from .embeddings import LearnedPositions, ScaledEmbedding, SinusoidalPositions
from .layers import DecoderLayer, EncoderLayer


class DecoderState:
    """What incremental decoding keeps between steps: the cross-attention keys and
    values (computed once per source), the self-attention cache of every decoder
    layer (appended per step), the source mask and the next position.

    Decoder rows (N) and sources (G) can differ: while the rows of every source are
    consecutive and equally many, as the K beams of beam search are, the source
    side is kept once per source and attention shares it among that source's rows
    (K times less memory traffic than one copy per beam).
    """

    def __init__(self, cross_kv: list, src_attend: torch.Tensor) -> None:
        self.cross_kv = cross_kv  # per layer: (keys, values) each (G, H, S, D/H)
        self.src_attend = src_attend  # (G, 1, 1, S)
        self.self_caches: list[dict] = [{} for _ in cross_kv]
        self.position = 0
        self.row_source = torch.arange(src_attend.size(0), device=src_attend.device)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N,) of every cached tensor, in that order: used by
        beam search to follow surviving hypotheses and to drop finished sentences."""
        for cache in self.self_caches:
            for name in list(cache):
                cache[name] = cache[name].index_select(0, index)
        self._follow_sources(self.row_source.index_select(0, index))

    def _follow_sources(self, row_source: torch.Tensor) -> None:
        """Source of each new row (N,) -> source tensors with one row per source
        if the rows come in equal consecutive groups, else one row per row."""
        pick, per_source = row_source, 1
        if row_source.numel():
            sources, counts = torch.unique_consecutive(row_source, return_counts=True)
            distinct = torch.unique(sources).numel() == sources.numel()
            if distinct and bool((counts == counts[0]).all()):
                pick, per_source = sources, int(counts[0])
        G = self.src_attend.size(0)
        if not torch.equal(pick, torch.arange(G, device=pick.device)):
            self.cross_kv = [
                (k.index_select(0, pick), v.index_select(0, pick))
                for k, v in self.cross_kv
            ]
            self.src_attend = self.src_attend.index_select(0, pick)
        rows = torch.arange(pick.numel(), device=pick.device)
        self.row_source = rows.repeat_interleave(per_source)


class Transformer(nn.Module):
    """Encoder-decoder Transformer with one embedding matrix shared by source,
    target and the output projection (section 3.4).

    Example::

        model = Transformer(preset("tiny", vocab_size=1000))
        logits = model(src, tgt_in)   # (B, S), (B, T) -> (B, T, V)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embedding = ScaledEmbedding(config.vocab_size, d, config.pad_id)
        positions = (
            SinusoidalPositions
            if config.positions == "sinusoidal"
            else (LearnedPositions)
        )
        self.positions = positions(config.max_positions, d)
        self.embed_dropout = Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(config) for _ in range(config.encoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(config) for _ in range(config.decoder_layers)
        )
        # Pre-norm stacks need a last norm: their residual stream is never normed.
        pre = config.norm == "pre"
        self.encoder_norm = nn.LayerNorm(d) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if pre else nn.Identity()

    def embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """tokens (B, T) -> (B, T, D): scaled embedding + positions, dropped out."""
        T = tokens.size(1)
        if offset + T > self.config.max_positions:
            raise TransformerMTError(
                f"sequence of {offset + T} tokens exceeds max_positions="
                f"{self.config.max_positions} of this model"
            )
        return self.embed_dropout(self.embedding(tokens) + self.positions(T, offset))

    def encode(
        self, src: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, list]:
        """src (B, S) -> memory (B, S, D), src_attend (B, 1, 1, S) and, if
        ``need_weights``, one (B, H, S, S) self-attention tensor per layer."""
        src_attend = (src != self.config.pad_id)[:, None, None, :]  # (B, 1, 1, S)
        x = self.embed(src)  # (B, S, D)
        weights = []
        for layer in self.encoder_layers:
            x, w = layer(x, src_attend, need_weights)
            weights.append(w)
        return self.encoder_norm(x), src_attend, weights

    def cross_keys_values(self, memory: torch.Tensor) -> list:
        """memory (B, S, D) -> per decoder layer (keys, values) each (B, H, S, D/H)"""
        return [
            layer.cross_attention.project_kv(memory) for layer in self.decoder_layers
        ]

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_attend: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list]:
        """Teacher-forced decoder over the whole target prefix.

        tgt_in (B, T), memory (B, S, D), src_attend (B, 1, 1, S) -> hidden (B, T, D)
        and per-layer weight dicts if ``need_weights``.
        """
        x = self.embed(tgt_in)  # (B, T, D)
        weights = []
        for layer, kv in zip(self.decoder_layers, self.cross_keys_values(memory)):
            x, w = layer(x, kv, src_attend, None, need_weights)
            weights.append(w)
        return self.decoder_norm(x), weights

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) -> logits (..., V) through the shared embedding matrix."""
        return hidden @ self.embedding.weight.t()

    def features(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src (B, S), tgt_in (B, T) -> decoder output (B, T, D), before the
        output projection (training projects only the non-padding rows)."""
        memory, src_attend, _ = self.encode(src)
        hidden, _ = self.decode(tgt_in, memory, src_attend)
        return hidden

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src (B, S), tgt_in (B, T) -> logits (B, T, V)"""
        return self.project(self.features(src, tgt_in))

    def start_decoding(
        self, memory: torch.Tensor, src_attend: torch.Tensor
    ) -> DecoderState:
        """Compute the cross-attention keys/values once for incremental decoding."""
        return DecoderState(self.cross_keys_values(memory), src_attend)

    def decode_step(
        self, tokens: torch.Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[torch.Tensor, list]:
        """One incremental step: tokens (B, 1) at ``state.position`` -> logits (B, V)
        and, if ``need_weights``, per-layer weight dicts for this position."""
        x = self.embed(tokens, offset=state.position)  # (B, 1, D)
        weights = []
        for layer, kv, cache in zip(
            self.decoder_layers, state.cross_kv, state.self_caches
        ):
            x, w = layer(x, kv, state.src_attend, cache, need_weights)
            weights.append(w)
        state.position += 1
        return self.project(self.decoder_norm(x))[:, -1], weights  # (B, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
