"""Progress reporting: a tqdm bar when stderr is a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Report ``update(step, fields)``: a bar on a terminal, else one log line
    every ``every`` steps."""

    def __init__(
        self,
        logger: logging.Logger,
        total: int | None,
        every: int,
        initial: int = 0,
        enabled: bool = True,
    ) -> None:
        self.logger = logger
        self.every = max(every, 1)
        self.bar = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(
                total=total, initial=initial, unit="step", dynamic_ncols=True
            )

    def update(self, step: int, fields: dict) -> None:
        text = " | ".join(f"{k} {v}" for k, v in fields.items())
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
        elif step % self.every == 0:
            self.logger.info("step %d | %s", step, text)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            self.logger.info(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
