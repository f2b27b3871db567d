"""Model facts: parameters per part, FLOPs per target token, float32 memory.

Parameters are counted on a model built on the "meta" device (shapes only, no
memory), so the count is exact for any size and follows the model's code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import TransformerMTError
from ..model import ModelConfig, Transformer

# parameter-name prefix -> part of the model
PARTS = {
    "embedding": "embedding",
    "positions": "positions",
    "encoder_layers": "encoder",
    "encoder_norm": "encoder",
    "decoder_layers": "decoder",
    "decoder_norm": "decoder",
}
FLOAT32_BYTES = 4


def count_parameters(config: ModelConfig) -> dict[str, int]:
    """Parameters of embedding (shared by source, target and output layer),
    learned positions (0 when sinusoidal), encoder, decoder and their total."""
    with torch.device("meta"):
        model = Transformer(config)
    counts = dict.fromkeys(("embedding", "positions", "encoder", "decoder"), 0)
    for name, param in model.named_parameters():
        counts[PARTS[name.split(".")[0]]] += param.numel()
    counts["total"] = sum(counts.values())
    assert counts["total"] == model.num_parameters()
    return counts


def flops_per_token(config: ModelConfig, non_embedding: int, seq_len: int) -> dict:
    """Forward-and-backward (training) and decoding (inference) FLOPs per target
    token, counting 2 FLOPs per multiply-add and assuming source and target
    sentences of ``seq_len`` subwords each (so the encoder's per-source-token cost
    is charged per target token)::

        N = non-embedding parameters, D = d_model, V = vocabulary, L = seq_len
        forward   = 2 N + 2 D V + 4 D L (n_enc + 2 n_dec)
        training  = 3 forward                  (backward ~ twice the forward)
        inference = 2 N + 2 D V + 4 D L (n_enc + n_dec / 2 + n_dec)

    2 N: every weight multiplies each token once; 2 D V: the output projection
    through the shared embedding matrix; 4 D L per attention layer: Q K^T and the
    weighted sum of values over L keys. The decoder has self- and cross-attention;
    with the key/value cache a decoding step's self-attention sees on average L/2
    earlier positions. This is the usual estimate (6 N per token for training plus
    the attention terms); beam search multiplies inference by the beam size.
    """
    c = config
    logits = 2 * c.d_model * c.vocab_size
    attention = 4 * c.d_model * seq_len
    forward = (
        2 * non_embedding
        + logits
        + attention * (c.encoder_layers + 2 * c.decoder_layers)
    )
    inference = (
        2 * non_embedding
        + logits
        + attention * (c.encoder_layers + 1.5 * c.decoder_layers)
    )
    return {"training": 3 * forward, "inference": inference}


def activation_floats_per_token(config: ModelConfig, seq_len: int) -> int:
    """Floats kept for the backward pass per target token (with as many source
    tokens). An attention sub-layer keeps its input, Q, K, V, the H x L weights,
    the context and the norm's input (6 D + H L); a feed-forward sub-layer its
    input, the hidden layer before and after ReLU and the norm's input (2 D + 2 F).
    Add both embeddings (2 D) and the logits with their log-softmax (2 V). Dropout
    masks, fused-kernel savings and allocator slack are not counted."""
    c = config
    D, F, H, L = c.d_model, c.d_ff, c.heads, seq_len
    attention, feed_forward = 6 * D + H * L, 2 * D + 2 * F
    encoder_layer = attention + feed_forward
    decoder_layer = 2 * attention + feed_forward
    return (
        c.encoder_layers * encoder_layer
        + c.decoder_layers * decoder_layer
        + 2 * D
        + 2 * c.vocab_size
    )


@dataclass
class ModelFacts:
    """What a model is and what it costs; see the functions above for formulas."""

    source: str
    config: ModelConfig
    parameters: dict[str, int]
    seq_len: int
    batch_tokens: int
    flops_per_token: dict[str, float]
    memory_bytes: dict[str, int]

    @property
    def non_embedding(self) -> int:
        p = self.parameters
        return p["total"] - p["embedding"] - p["positions"]

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "config": self.config.to_dict(),
            "non_embedding_parameters": self.non_embedding,
        }

    def table(self) -> str:
        return "\n".join(_table_lines(self))


def model_facts(
    config: ModelConfig,
    batch_tokens: int = 4096,
    seq_len: int = 30,
    source: str = "",
) -> ModelFacts:
    """Facts of a model ``config``: parameters, FLOPs for sentences of ``seq_len``
    subwords, and float32 training memory for batches of ``batch_tokens`` target
    tokens (weights, gradients, Adam's two moments, activations)."""
    if batch_tokens < 1 or seq_len < 1:
        raise TransformerMTError(
            f"batch_tokens={batch_tokens} and seq_len={seq_len} must be >= 1"
        )
    parameters = count_parameters(config)
    non_embedding = parameters["encoder"] + parameters["decoder"]
    weights = FLOAT32_BYTES * parameters["total"]
    activations = (
        FLOAT32_BYTES * batch_tokens * activation_floats_per_token(config, seq_len)
    )
    memory = {
        "weights": weights,
        "gradients": weights,
        "adam_moments": 2 * weights,
        "activations": activations,
    }
    memory["total"] = sum(memory.values())
    return ModelFacts(
        source=source,
        config=config,
        parameters=parameters,
        seq_len=seq_len,
        batch_tokens=batch_tokens,
        flops_per_token=flops_per_token(config, non_embedding, seq_len),
        memory_bytes=memory,
    )


def _size(count: float, units: tuple, step: float) -> str:
    for unit in units[:-1]:
        if abs(count) < step:
            return f"{count:,.1f} {unit}"
        count /= step
    return f"{count:,.1f} {units[-1]}"


def _table_lines(facts: ModelFacts) -> list[str]:
    c, p = facts.config, facts.parameters
    flops = ("FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP")
    memory = ("B", "KiB", "MiB", "GiB", "TiB")
    rows = [
        ("model", facts.source),
        (
            "layers",
            f"{c.encoder_layers} encoder + {c.decoder_layers} decoder ({c.norm}-norm, "
            f"{c.positions} positions)",
        ),
        ("widths", f"d_model {c.d_model}, d_ff {c.d_ff}, {c.heads} heads"),
        (
            "vocabulary",
            f"{c.vocab_size:,} subwords (one matrix: source, target, output)",
        ),
        ("parameters", ""),
        *[
            (f"  {part}", f"{p[part]:,}")
            for part in p
            if p[part] or part != "positions"
        ],
        ("  non-embedding", f"{facts.non_embedding:,}"),
        (f"FLOPs per target token (sentences of {facts.seq_len} subwords)", ""),
        *[
            (f"  {k}", _size(v, flops, 1000.0))
            for k, v in facts.flops_per_token.items()
        ],
        (f"memory, float32, training on {facts.batch_tokens:,}-token batches", ""),
        *[
            (f"  {k.replace('_', ' ')}", _size(v, memory, 1024.0))
            for k, v in facts.memory_bytes.items()
        ],
    ]
    width = max(len(k) for k, v in rows if v) + 2
    return [f"{k:<{width}}{v}" if v else k for k, v in rows]
