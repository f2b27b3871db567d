"""The JSON-lines metrics file of a run (and its optional TensorBoard copy)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import TransformerMTError


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
