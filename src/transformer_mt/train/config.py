"""Training options, with the paper's defaults (section 5)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import TransformerMTError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h', '2d' -> seconds; '' or '0' -> 0 (no limit)."""
    if not text:
        return 0.0
    match = _DURATION.match(str(text))
    if not match:
        raise TransformerMTError(
            f"max_time={text!r}: use a number of seconds or a suffix s, m, h "
            "or d (e.g. 10m)"
        )
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


@dataclass(frozen=True)
class TrainConfig:
    max_tokens: int = field(
        default=4096, metadata={"help": "padded tokens per batch, per process"}
    )
    update_freq: int = field(
        default=1, metadata={"help": "batches accumulated into one update, per process"}
    )
    update_tokens: int = field(
        default=0,
        metadata={
            "help": "if > 0: set update_freq so an update covers about this "
            "many batch tokens over all processes (paper: 25000)"
        },
    )
    lr_scale: float = field(
        default=1.0, metadata={"help": "factor on the paper's schedule"}
    )
    warmup: int = field(default=4000, metadata={"help": "warm-up steps"})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1"})
    adam_beta2: float = field(default=0.98, metadata={"help": "Adam beta2"})
    adam_eps: float = field(default=1e-9, metadata={"help": "Adam epsilon"})
    label_smoothing: float = field(default=0.1, metadata={"help": "epsilon_ls"})
    clip_norm: float = field(
        default=0.0, metadata={"help": "clip gradient norm (0: off)"}
    )
    max_steps: int = field(default=0, metadata={"help": "stop after this many updates"})
    max_epochs: int = field(default=0, metadata={"help": "stop after this many epochs"})
    max_time: str = field(
        default="", metadata={"help": "stop after this much training time, e.g. 10m"}
    )
    seed: int = field(
        default=1, metadata={"help": "seed for weights, data order, dropout"}
    )
    log_every: int = field(default=50, metadata={"help": "steps between log lines"})
    valid_every: int = field(
        default=1000, metadata={"help": "steps between validations and checkpoints"}
    )
    valid_bleu_sentences: int = field(
        default=500,
        metadata={"help": "validation sentences decoded for BLEU (0: none)"},
    )
    save_every: int = field(
        default=0,
        metadata={
            "help": "steps between extra checkpoints without validation (0: only "
            "at validations); dense final checkpoints make averaging work"
        },
    )
    keep_last: int = field(default=5, metadata={"help": "step checkpoints kept"})
    max_bad_steps: int = field(
        default=5, metadata={"help": "consecutive non-finite updates before stopping"}
    )
    threads: int = field(default=0, metadata={"help": "CPU threads (0: torch default)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    precision: str = field(
        default="float32", metadata={"help": "float32, bfloat16 or float16 (CUDA)"}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    tensorboard: bool = field(
        default=False,
        metadata={
            "help": "also write the metrics to SAVE_DIR/tensorboard "
            "(pip install 'transformer-mt[tensorboard]')"
        },
    )

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "max_tokens",
            "update_freq",
            "warmup",
            "log_every",
            "keep_last",
            "max_bad_steps",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in (
            "max_steps",
            "max_epochs",
            "valid_every",
            "save_every",
            "update_tokens",
            "valid_bleu_sentences",
            "threads",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.precision not in ("float32", "bfloat16", "float16"):
            problems.append(
                f"precision={self.precision!r}: use float32, bfloat16, float16"
            )
        if self.lr_scale <= 0 or self.clip_norm < 0:
            problems.append("lr_scale must be > 0 and clip_norm >= 0")
        if problems:
            raise TransformerMTError("invalid training options: " + "; ".join(problems))
        parse_duration(self.max_time)

    @property
    def max_seconds(self) -> float:
        return parse_duration(self.max_time)

    def limit_reached(self, state) -> str:
        """Why training must stop at ``state`` (a TrainState), or ""."""
        if self.max_steps and state.step >= self.max_steps:
            return f"reached max_steps={self.max_steps}"
        if self.max_epochs and state.epoch > self.max_epochs:
            return f"reached max_epochs={self.max_epochs}"
        if self.max_seconds and state.elapsed >= self.max_seconds:
            return f"reached max_time={self.max_time}"
        return ""

    def seconds_left(self, state, seconds_per_step: float) -> float | None:
        """Estimated seconds to the nearest step or time limit (None: no limit
        but epochs)."""
        options = []
        if self.max_steps:
            options.append((self.max_steps - state.step) * seconds_per_step)
        if self.max_seconds:
            options.append(self.max_seconds - state.elapsed)
        return min(options) if options else None
