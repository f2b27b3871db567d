"""Model configuration and the paper's presets (Vaswani et al. 2017, Table 3)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import TransformerMTError


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the encoder-decoder; defaults are the paper's base model."""

    vocab_size: int = field(default=8000, metadata={"help": "joint subword vocabulary"})
    d_model: int = field(default=512, metadata={"help": "model width (d_model)"})
    d_ff: int = field(default=2048, metadata={"help": "inner feed-forward width"})
    heads: int = field(default=8, metadata={"help": "attention heads (h)"})
    encoder_layers: int = field(default=6, metadata={"help": "encoder layers (N)"})
    decoder_layers: int = field(default=6, metadata={"help": "decoder layers (N)"})
    dropout: float = field(default=0.1, metadata={"help": "residual dropout (P_drop)"})
    attention_dropout: float = field(
        default=0.0, metadata={"help": "dropout on attention weights"}
    )
    ff_dropout: float = field(
        default=0.0, metadata={"help": "dropout after the feed-forward activation"}
    )
    norm: str = field(
        default="post", metadata={"help": "'post' (paper) or 'pre' layer norm"}
    )
    positions: str = field(
        default="sinusoidal", metadata={"help": "'sinusoidal' (paper) or 'learned'"}
    )
    max_positions: int = field(
        default=1024, metadata={"help": "longest sequence the model accepts"}
    )
    share_embeddings: bool = field(
        default=True,
        metadata={"help": "one matrix for source/target embeddings and output layer"},
    )
    pad_id: int = field(default=0, metadata={"help": "padding id (set by vocabulary)"})

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "d_model", "d_ff", "heads", "max_positions"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        for name in ("encoder_layers", "decoder_layers"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be at least 1")
        if self.heads > 0 and self.d_model % self.heads:
            problems.append(
                f"d_model={self.d_model} must be divisible by heads={self.heads}"
            )
        for name in ("dropout", "attention_dropout", "ff_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1)")
        if self.norm not in ("post", "pre"):
            problems.append(f"norm={self.norm!r} must be 'post' or 'pre'")
        if self.positions not in ("sinusoidal", "learned"):
            problems.append(
                f"positions={self.positions!r} must be 'sinusoidal' or 'learned'"
            )
        if not self.share_embeddings:
            problems.append(
                "share_embeddings=False is not supported: the paper shares one "
                "matrix across both embeddings and the output projection"
            )
        if problems:
            raise TransformerMTError("invalid model config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Build a config from a dict, refusing keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TransformerMTError(
                f"unknown model config key(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ModelConfig:
        return self.from_dict({**self.to_dict(), **changes})


# tiny/small are CPU sizes; base and big follow Table 3 of the paper.
PRESETS: dict[str, dict] = {
    "tiny": dict(
        d_model=64, d_ff=256, heads=4, encoder_layers=2, decoder_layers=2, dropout=0.1
    ),
    "small": dict(
        d_model=256, d_ff=1024, heads=4, encoder_layers=3, decoder_layers=3, dropout=0.1
    ),
    "base": dict(
        d_model=512, d_ff=2048, heads=8, encoder_layers=6, decoder_layers=6, dropout=0.1
    ),
    "big": dict(
        d_model=1024,
        d_ff=4096,
        heads=16,
        encoder_layers=6,
        decoder_layers=6,
        dropout=0.3,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """Return the named preset with any fields overridden."""
    if name not in PRESETS:
        raise TransformerMTError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        )
    return ModelConfig.from_dict({**PRESETS[name], **overrides})
