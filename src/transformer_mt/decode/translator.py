"""Text in, text out: the Python API behind `translate`, `evaluate` and `serve`.

from transformer_mt import Translator
print(Translator.load("runs/demo").translate(["Ein Hund läuft."]))
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import checkpoint
from ..data.dataset import source_tensor
from ..errors import TransformerMTError
from ..model import Transformer
from ..vocab import Vocabulary
from .quantize import quantize as quantize_model
from .search import DecodeConfig, Hypothesis, search

log = logging.getLogger(__name__)


def check_texts(texts: Sequence[str]) -> None:
    """Refuse non-strings and strings that are not valid Unicode (lone surrogates,
    which no UTF-8 file can hold but Python strings can), naming the input."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TransformerMTError(
                f"input {i + 1} is a {type(text).__name__}, not a string"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TransformerMTError(
                f"input {i + 1} is not valid Unicode: lone surrogate at character "
                f"{exc.start}"
            ) from None


class Translator:
    """A model, its vocabulary and decoding options."""

    def __init__(
        self,
        model: Transformer,
        vocab: Vocabulary,
        config: DecodeConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.config = config or DecodeConfig()
        self.device = torch.device(device)
        # Source + EOS must fit in the model's positions.
        self.max_source_tokens = model.config.max_positions - 1

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "cpu",
        quantize: str | None = None,
        **options,
    ) -> Translator:
        """Load a checkpoint (or a run directory) with decoding ``options``;
        ``quantize="int8"`` quantizes the linear layers for the CPU."""
        ckpt = checkpoint.load(path)
        model = quantize_model(ckpt.build_model(device), quantize)
        return cls(model, ckpt.vocab, DecodeConfig(**options), device)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Subword ids per text, truncated (with a warning) to what the model takes."""
        ids = self.vocab.encode_batch(texts)
        for i, sentence in enumerate(ids):
            if len(sentence) > self.max_source_tokens:
                log.warning(
                    "input %d is too long: %d subwords, the model takes %d; only the "
                    "first %d are translated",
                    i + 1,
                    len(sentence),
                    self.max_source_tokens,
                    self.max_source_tokens,
                )
                ids[i] = sentence[: self.max_source_tokens]
        return ids

    def _batches(self, ids: list[list[int]], config: DecodeConfig) -> list[list[int]]:
        """Indices of non-empty inputs, longest first, in batches of at most
        ``batch_tokens`` (source tokens times beam)."""
        order = sorted((i for i, s in enumerate(ids) if s), key=lambda i: -len(ids[i]))
        width = config.beam_size if config.strategy == "beam" else 1
        batches, current = [], []
        for i in order:
            longest = len(ids[current[0]]) + 1 if current else len(ids[i]) + 1
            if current and longest * (len(current) + 1) * width > config.batch_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def hypotheses(self, texts: Sequence[str], **options) -> list[list[Hypothesis]]:
        """Per input, the n-best hypotheses as token ids with scores, in input order.
        An empty input gets one empty hypothesis without running the model."""
        config = dataclasses.replace(self.config, **options) if options else self.config
        if isinstance(texts, str):
            raise TransformerMTError(
                "translate() takes a list of strings, not a string"
            )
        check_texts(texts)
        ids = self.encode(texts)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0)] for _ in ids]
        for batch in self._batches(ids, config):
            src = source_tensor([ids[i] for i in batch]).to(self.device)
            for i, hyps in zip(batch, search(self.model, src, config)):
                results[i] = hyps
        return results

    def translate(self, texts: Sequence[str], **options) -> list[str]:
        """Translate a list of sentences; returns one detokenized string each."""
        return [
            self.vocab.decode(h[0].tokens) for h in self.hypotheses(texts, **options)
        ]

    def translate_nbest(
        self, texts: Sequence[str], **options
    ) -> list[list[tuple[str, float]]]:
        """Per input, (translation, score) pairs best first."""
        return [
            [(self.vocab.decode(h.tokens), h.score) for h in hyps]
            for hyps in self.hypotheses(texts, **options)
        ]
