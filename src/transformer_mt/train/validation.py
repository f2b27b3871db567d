"""Validation during training: loss and perplexity over the whole validation
split, and sacreBLEU of greedy output on its first sentences."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from ..data.dataset import TokenPairs, collate, source_tensor, token_batches
from ..decode.search import DecodeConfig, greedy_search
from ..evaluate import score
from ..model import Transformer
from ..vocab import Vocabulary
from .loss import SmoothedLossObjective


@torch.inference_mode()
def validation_loss(
    model: Transformer,
    data: TokenPairs,
    max_tokens: int,
    smoothing: float,
    device: torch.device,
    autocast=contextlib.nullcontext,
) -> dict:
    """Token-averaged smoothed loss, NLL and perplexity over every pair."""
    model.eval()
    objective = SmoothedLossObjective(model, smoothing)
    loss_sum = nll_sum = tokens = 0.0
    batches = token_batches(data.src_lens, data.tgt_lens, max_tokens, 0, 0, False)
    for ids in batches:
        batch = collate(data, ids).to(device)
        with autocast():
            loss, nll = objective(batch.src, batch.tgt_in, batch.tgt_out)
        loss_sum, nll_sum = loss_sum + loss.item(), nll_sum + nll.item()
        tokens += batch.ntokens
    return {
        "valid_loss": loss_sum / tokens,
        "valid_nll": nll_sum / tokens,
        "valid_ppl": math.exp(min(nll_sum / tokens, 50.0)),
    }


def greedy_bleu(
    model: Transformer,
    data: TokenPairs,
    references_path: Path,
    vocab: Vocabulary,
    count: int,
    device: torch.device,
) -> float:
    """BLEU of greedy translations of the first ``count`` validation sources
    against the raw reference text, decoded longest first in chunks of 100."""
    references = references_path.read_text(encoding="utf-8").split("\n")[:count]
    order = sorted(range(count), key=lambda i: -int(data.src_lens[i]))
    outputs = [""] * count
    config = DecodeConfig(strategy="greedy")
    for start in range(0, count, 100):
        chunk = order[start : start + 100]
        src = source_tensor([data.side("src", i) for i in chunk]).to(device)
        for i, hyps in zip(chunk, greedy_search(model, src, config)):
            outputs[i] = vocab.decode(hyps[0].tokens)
    return score(outputs, references)["bleu"]
