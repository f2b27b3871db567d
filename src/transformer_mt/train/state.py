"""What a training run carries between updates and sessions: its counters, the
device it runs on, and a stop requested by a signal."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal

import torch

from ..errors import TransformerMTError

log = logging.getLogger(__name__)

# Fields that decide which batches come in which order: a resume that changes
# them continues, but not along the same path as the uninterrupted run.
DATA_ORDER_FIELDS = ("max_tokens", "update_freq", "update_tokens", "seed")


@dataclasses.dataclass
class TrainState:
    step: int = 0
    epoch: int = 1
    epoch_position: int = 0  # global batches of this epoch already consumed
    tokens_seen: int = 0
    elapsed: float = 0.0  # training seconds, over all sessions
    best_valid_loss: float = math.inf
    skipped_updates: int = 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TransformerMTError(
            f"device={name!r} asked for, but no CUDA device is available"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise TransformerMTError(
            f"device={name!r} is not a device torch knows"
        ) from None


class StopRequest:
    """Ctrl-C or SIGTERM while training: the first asks the loop to finish the
    current update, save and stop (``reason`` says why); a second aborts at once."""

    def __init__(self) -> None:
        self.reason = ""
        self._previous: dict = {}

    def _request(self, signum, frame) -> None:
        if self.reason:
            raise KeyboardInterrupt
        self.reason = f"interrupted by {signal.Signals(signum).name}"
        log.warning(
            "%s: finishing this update, then saving; press again to abort",
            self.reason,
        )

    def catch_signals(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: leave handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._request)

    def restore_signals(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
