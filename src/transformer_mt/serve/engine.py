"""The model behind the server: batched translation with n-best lists and
cross-attention, run by the batcher in its worker thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint
from ..decode import Hypothesis, Translator
from ..errors import TransformerMTError
from ..inspect.attention import forced_attention
from .batcher import Job

log = logging.getLogger(__name__)

LANGUAGE_NAMES = {
    "ar": "Arabic",
    "cs": "Czech",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
    "ja": "Japanese",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "zh": "Chinese",
}


@dataclass(frozen=True)
class Work:
    """What one request asks of the model (the batch key carries beam and n-best)."""

    texts: tuple[str, ...]
    attention_layer: int | None = None  # 1-based decoder layer; None: no attention


class TranslationEngine:
    """A Translator with its language pair."""

    def __init__(self, translator: Translator, source: str, target: str) -> None:
        self.translator = translator
        self.source = source
        self.target = target
        self.decoder_layers = translator.model.config.decoder_layers

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> TranslationEngine:
        ckpt = checkpoint.load(path)
        source, target = ckpt.config.get("src_lang"), ckpt.config.get("tgt_lang")
        if not source or not target:
            raise TransformerMTError(
                f"{ckpt.directory}: config.json names no src_lang/tgt_lang; prepare "
                "the data with --src-lang and --tgt-lang"
            )
        translator = Translator(ckpt.build_model(device), ckpt.vocab, device=device)
        log.info("serving %s (%s->%s) on %s", ckpt.directory, source, target, device)
        return cls(translator, source, target)

    def count_tokens(self, texts) -> int:
        """Source subwords of ``texts``, EOS included: the batcher's cost measure."""
        return sum(len(ids) + 1 for ids in self.translator.encode(texts))

    def run(self, jobs: list[Job]) -> list[list[dict]]:
        """Translate every job's texts in one call; per job, per text a dict with
        ``text``, ``score``, ``nbest`` [(text, score)] and optional ``attention``.
        All jobs share one key: (beam_size, nbest)."""
        beam_size, nbest = jobs[0].key
        texts = [text for job in jobs for text in job.payload.texts]
        with torch.inference_mode():
            hyps = self.translator.hypotheses(texts, beam_size=beam_size, nbest=nbest)
        results, start = [], 0
        for job in jobs:
            work: Work = job.payload
            chunk = hyps[start : start + len(work.texts)]
            start += len(work.texts)
            results.append(
                [
                    self._result(t, h, work.attention_layer)
                    for t, h in zip(work.texts, chunk)
                ]
            )
        return results

    def _result(self, text: str, hyps: list[Hypothesis], layer: int | None) -> dict:
        decode = self.translator.vocab.decode
        result = {
            "text": decode(hyps[0].tokens),
            "score": hyps[0].score,
            "nbest": [(decode(h.tokens), h.score) for h in hyps],
        }
        if layer is not None:
            result["attention"] = self.cross_attention(text, hyps[0].tokens, layer)
        return result

    def cross_attention(self, text: str, tokens: list[int], layer: int) -> dict:
        """Weights of decoder layer ``layer`` (1-based) over the source, averaged
        over heads, from a teacher-forced pass over ``tokens``: one row per target
        piece (the translation, then "</s>"), one column per source piece."""
        src_ids = self.translator.encode([text])[0]
        maps = forced_attention(
            self.translator.model, self.translator.vocab, text, src_ids, tokens
        )
        matrix = maps.cross[layer - 1].mean(0)  # (T, S)
        return {
            "layer": layer,
            "source": maps.src_pieces,
            "target": maps.tgt_pieces,
            "weights": [[round(w, 5) for w in row] for row in matrix.tolist()],
        }

    def languages(self) -> list[dict]:
        """LibreTranslate's language list: the source lists the target."""
        return [
            {"code": code, "name": LANGUAGE_NAMES.get(code, code), "targets": targets}
            for code, targets in ((self.source, [self.target]), (self.target, []))
        ]
