"""Settings of the translation server: request limits and dynamic batching."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TransformerMTError


@dataclass(frozen=True)
class ServeConfig:
    """How the server listens, what a request may hold and how requests are batched.

    Batching off (one request per model call) is ``batch_window_ms=0,
    max_batch_requests=1``.
    """

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port (0: any free port)"})
    batch_window_ms: float = field(
        default=5.0,
        metadata={"help": "how long the batcher waits for more requests to join"},
    )
    max_batch_tokens: int = field(
        default=4096,
        metadata={"help": "source subwords per model call; a batch closes at this"},
    )
    max_batch_requests: int = field(
        default=64, metadata={"help": "requests per model call (1: no batching)"}
    )
    max_queue: int = field(
        default=1024, metadata={"help": "queued requests before answering 503"}
    )
    max_body_bytes: int = field(
        default=256 * 1024, metadata={"help": "largest request body (413 above)"}
    )
    max_chars: int = field(
        default=2000, metadata={"help": "characters allowed in one text"}
    )
    max_texts: int = field(
        default=64, metadata={"help": "texts allowed in one request"}
    )
    request_timeout_s: float = field(
        default=30.0, metadata={"help": "seconds before a request is given up (504)"}
    )
    beam_size: int = field(
        default=4, metadata={"help": "beam width when a request names none"}
    )
    max_beam_size: int = field(
        default=8, metadata={"help": "largest beam width a request may ask for"}
    )

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port={self.port} must be in 0..65535")
        if self.batch_window_ms < 0:
            problems.append(f"batch_window_ms={self.batch_window_ms} must be >= 0")
        for name in (
            "max_batch_tokens",
            "max_batch_requests",
            "max_queue",
            "max_body_bytes",
            "max_chars",
            "max_texts",
            "beam_size",
            "max_beam_size",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.request_timeout_s <= 0:
            problems.append(f"request_timeout_s={self.request_timeout_s} must be > 0")
        if self.beam_size > self.max_beam_size:
            problems.append(
                f"beam_size={self.beam_size} exceeds max_beam_size={self.max_beam_size}"
            )
        if problems:
            raise TransformerMTError("invalid serve options: " + "; ".join(problems))
