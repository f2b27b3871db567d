"""Optional TensorBoard copy of the metrics that go to metrics.jsonl."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import TransformerMTError

log = logging.getLogger(__name__)


class TensorBoardLog:
    """Writes each metrics record as scalars tagged KIND/NAME ("train/loss",
    "valid/bleu") at its step, flushed at once so a killed run loses nothing."""

    def __init__(self, log_dir: str | Path, resumed_step: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TransformerMTError(
                "--tensorboard needs the tensorboard package: pip install "
                "'transformer-mt[tensorboard]' (or pip install tensorboard)"
            ) from None
        # A resumed run hides the events a killed session wrote after its
        # checkpoint, as MetricsLog.trim does for metrics.jsonl.
        purge = resumed_step + 1 if resumed_step else None
        self.writer = SummaryWriter(str(log_dir), purge_step=purge)
        log.info("TensorBoard events in %s", log_dir)

    def write(self, record: dict) -> None:
        kind, step = record.get("kind", "metrics"), record["step"]
        for name, value in record.items():
            if name in ("kind", "step") or not isinstance(value, int | float):
                continue
            name = name.removeprefix(f"{kind}_")
            self.writer.add_scalar(f"{kind}/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
