"""The JSON-lines metrics file of a run (and its optional TensorBoard copy)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import TransformerMTError
from ..memory import resident_bytes
from ..progress import format_duration


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # an unreadable (half-written) line is dropped


class MetricsLog:
    """Appends one JSON record per line to ``path``; ``tensorboard`` (a
    TensorBoardLog or None) receives the same records."""

    def __init__(self, path: Path, tensorboard=None) -> None:
        self.path = path
        self.tensorboard = tensorboard

    def write(self, record: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.write(record)
        except OSError as exc:
            raise TransformerMTError(
                f"cannot write {self.path}: {exc.strerror or exc}; the last "
                f"checkpoint in {self.path.parent} is intact"
            ) from None

    def trim(self, step: int) -> None:
        """Drop records a killed run wrote after the checkpoint at ``step``, so the
        curve continues without overlap."""
        if not self.path.exists():
            return
        text = self.path.read_text(encoding="utf-8", errors="replace")
        kept = [ln for ln in text.split("\n") if ln.strip() and _step_of(ln) <= step]
        # Replace, never rewrite in place: a kill mid-write must not lose the curve.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
        os.replace(tmp, self.path)


def describe_run(model, device, config, world_size, update_freq, pairs) -> str:
    """The one line that opens a training log: model shape and size, device,
    precision, processes and batching."""
    shape = {
        k: v
        for k, v in model.config.to_dict().items()
        if k in ("d_model", "d_ff", "heads", "encoder_layers", "decoder_layers", "norm")
    }
    return (
        f"model {json.dumps(shape)}, {model.num_parameters() / 1e6:.2f}M parameters"
        f" | device {device} | precision {config.precision}"
        f" | {world_size} process(es) | {update_freq} batches/update, max_tokens "
        f"{config.max_tokens} | {pairs} training pairs"
    )


def train_record(state, window: dict, stats: dict, eta: float | None):
    """The metrics record and the progress-line fields of the updates in
    ``window`` (sums of loss, nll, tokens, steps and seconds since the last
    report); ``stats`` holds the last update's lr and gradient norm."""
    tokens = max(window["tokens"], 1.0)
    loss, nll = window["loss"] / tokens, window["nll"] / tokens
    speed = window["tokens"] / max(window["time"], 1e-9)
    record = {
        "kind": "train",
        "step": state.step,
        "epoch": state.epoch,
        "loss": loss,
        "nll": nll,
        "ppl": math.exp(min(nll, 50.0)),
        "lr": stats["lr"],
        "tokens_per_s": speed,
        "grad_norm": stats["grad_norm"],
        "elapsed": state.elapsed,
    }
    rss = resident_bytes()
    if rss is not None:
        record["rss_bytes"] = rss
    fields = {
        "epoch": state.epoch,
        "loss": f"{loss:.3f}",
        "ppl": f"{record['ppl']:.2f}",
        "lr": f"{stats['lr']:.2e}",
        "tok/s": f"{speed:,.0f}",
        "elapsed": format_duration(state.elapsed),
    }
    if rss is not None:
        fields["rss"] = f"{rss / 2**30:.2f} GiB"
    if eta is not None:
        fields["eta"] = format_duration(eta)
    return record, fields
