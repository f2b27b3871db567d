"""Scoring with sacreBLEU: BLEU and chrF with their signatures."""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu

from .errors import TransformerMTError


def score(
    hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False
) -> dict:
    """Corpus BLEU (13a tokenization, cased unless ``lowercase``) and chrF."""
    if len(hypotheses) != len(references):
        raise TransformerMTError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: "
            "the files must have one line per sentence"
        )
    bleu = sacrebleu.metrics.BLEU(lowercase=lowercase)
    chrf = sacrebleu.metrics.CHRF()
    refs = [list(references)]
    bleu_score = bleu.corpus_score(list(hypotheses), refs)
    chrf_score = chrf.corpus_score(list(hypotheses), refs)
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(bleu_score),
        "sentences": len(hypotheses),
    }
