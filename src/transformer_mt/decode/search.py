"""Search strategies over an incrementally decoded Transformer.

Every strategy takes a padded source batch (B, S) and the per-sentence length
limits (B,), works batched with the key/value cache, lets sentences finish
independently and drops finished sentences from the batch, and returns per
sentence a list of hypotheses, best first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import TransformerMTError
from ..vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class DecodeConfig:
    """How to search; defaults are the paper's (section 6.1)."""

    strategy: str = field(default="beam", metadata={"help": "beam, greedy or sample"})
    beam_size: int = field(default=4, metadata={"help": "beam width K"})
    length_penalty: float = field(
        default=0.6, metadata={"help": "alpha of the GNMT length penalty"}
    )
    max_len_a: float = field(
        default=1.0, metadata={"help": "max output length = a * source length + b"}
    )
    max_len_b: int = field(default=50, metadata={"help": "see max_len_a"})
    nbest: int = field(default=1, metadata={"help": "hypotheses returned per input"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_k: int = field(default=0, metadata={"help": "sample among the k best (0: all)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    seed: int = field(default=0, metadata={"help": "seed for sampling"})
    batch_tokens: int = field(
        default=6000, metadata={"help": "source tokens x beam per decoding batch"}
    )

    def __post_init__(self) -> None:
        problems = []
        if self.strategy not in ("beam", "greedy", "sample"):
            problems.append(f"strategy={self.strategy!r}: use beam, greedy or sample")
        if self.beam_size < 1:
            problems.append(f"beam_size={self.beam_size} must be >= 1")
        if not 1 <= self.nbest <= max(self.beam_size, 1) and self.strategy == "beam":
            problems.append(f"nbest={self.nbest} must be between 1 and beam_size")
        if self.nbest != 1 and self.strategy != "beam":
            problems.append("nbest > 1 needs strategy=beam")
        if self.temperature <= 0:
            problems.append(f"temperature={self.temperature} must be > 0")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            problems.append("top_k must be >= 0 and top_p in (0, 1]")
        if self.max_len_b < 1 or self.max_len_a < 0:
            problems.append("max_len_a must be >= 0 and max_len_b >= 1")
        if problems:
            raise TransformerMTError("invalid decoding options: " + "; ".join(problems))


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # log-probability, divided by the length penalty for beam search


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + |Y|) / 6) ^ alpha (Wu et al., 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(
    src: torch.Tensor, config: DecodeConfig, max_positions: int
) -> torch.Tensor:
    """src (B, S) -> (B,) output limits counted in tokens including EOS, never
    more than the model has positions for."""
    src_len = (src != PAD_ID).sum(1) - 1  # without the appended EOS
    limits = (config.max_len_a * src_len).long() + config.max_len_b
    return limits.clamp(max=max_positions)


def _log_probs(
    model, tokens: torch.Tensor, state, at_limit: torch.Tensor
) -> torch.Tensor:
    """Next-token log-probabilities (N, V); rows at their length limit may only
    end the sentence; PAD and BOS are never produced."""
    logits, _ = model.decode_step(tokens, state)  # (N, V)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")
    if at_limit.any():
        eos = log_probs[:, EOS_ID].clone()
        log_probs[at_limit] = float("-inf")
        log_probs[:, EOS_ID] = eos
    return log_probs


def _pick_greedy(log_probs: torch.Tensor, config, generator) -> torch.Tensor:
    return log_probs.argmax(-1)


def _pick_sample(log_probs: torch.Tensor, config, generator) -> torch.Tensor:
    logits = log_probs / config.temperature
    logits = top_p_filter(top_k_filter(logits, config.top_k), config.top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (N, V); k = 0 keeps all."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches p (N, V)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cumulative - sorted_logits.softmax(-1) >= p  # mass before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.inference_mode()
def _one_per_step(model, src: torch.Tensor, config: DecodeConfig, pick) -> list:
    B = src.size(0)
    limits = max_lengths(src, config, model.config.max_positions)  # (B,)
    memory, src_attend, _ = model.encode(src)
    state = model.start_decoding(memory, src_attend)
    generator = torch.Generator(device=src.device).manual_seed(config.seed)
    alive = torch.arange(B, device=src.device)  # sentence of each row
    last = torch.full((B, 1), BOS_ID, dtype=torch.long, device=src.device)
    outputs = torch.full(
        (B, int(limits.max())), EOS_ID, dtype=torch.long, device=src.device
    )
    scores = torch.zeros(B, device=src.device)
    for step in range(int(limits.max())):
        log_probs = _log_probs(model, last, state, step + 1 >= limits[alive])
        chosen = pick(log_probs, config, generator)  # (N,)
        outputs[alive, step] = chosen
        scores[alive] += log_probs.gather(1, chosen[:, None]).squeeze(1)
        keep = (chosen != EOS_ID).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        if keep.numel() < alive.numel():
            state.reorder(keep)
            alive = alive[keep]
        last = chosen[keep][:, None]
    hypotheses = []
    for row, score in zip(outputs.tolist(), scores.tolist()):
        end = row.index(EOS_ID) if EOS_ID in row else len(row)
        hypotheses.append([Hypothesis(row[:end], score)])
    return hypotheses


def greedy_search(model, src: torch.Tensor, config: DecodeConfig) -> list:
    """Most probable token at each step. src (B, S) -> B lists of 1 Hypothesis."""
    return _one_per_step(model, src, config, _pick_greedy)


def sample_search(model, src: torch.Tensor, config: DecodeConfig) -> list:
    """Ancestral sampling with temperature, top-k and top-p filters."""
    return _one_per_step(model, src, config, _pick_sample)


@torch.inference_mode()
def beam_search(model, src: torch.Tensor, config: DecodeConfig) -> list:
    """Batched beam search with the GNMT length penalty.

    Each step keeps, per sentence, the K best continuations that do not end;
    candidates that end (EOS) among the K best are finished hypotheses. A sentence
    is done when it has K finished hypotheses or reaches its length limit; done
    sentences leave the batch.

    src (B, S) -> B lists of ``nbest`` Hypothesis, best first.
    """
    B, K = src.size(0), config.beam_size
    device = src.device
    limits = max_lengths(src, config, model.config.max_positions)  # (B,)
    memory, src_attend, _ = model.encode(src)  # (B, S, D)
    expand = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,)
    # Source side computed once per sentence and shared by its K beams.
    state = model.start_decoding(memory, src_attend)
    state.reorder(expand)
    alive = torch.arange(B, device=device)
    history = torch.full((B * K, 1), BOS_ID, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for step in range(int(limits.max())):
        N = alive.numel()
        at_limit = step + 1 >= limits[alive]  # (N,)
        log_probs = _log_probs(
            model, history[:, -1:], state, at_limit.repeat_interleave(K)
        )
        V = log_probs.size(-1)
        candidates = (scores.unsqueeze(-1) + log_probs.view(N, K, V)).view(N, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)  # (N, 2K)
        top_beam, top_word = top_index // V, top_index % V
        ends = (top_word == EOS_ID) & top_scores.isfinite()

        penalty = length_penalty(step + 1, config.length_penalty)
        for row, col in ends[:, :K].nonzero().tolist():
            sentence = finished[alive[row]]
            if len(sentence) < K:
                tokens = history[row * K + top_beam[row, col], 1:].tolist()
                sentence.append(
                    Hypothesis(tokens, top_scores[row, col].item() / penalty)
                )

        next_scores, pick = top_scores.masked_fill(ends, float("-inf")).topk(K, dim=1)
        next_rows = torch.arange(N, device=device)[:, None] * K + top_beam.gather(
            1, pick
        )
        next_words = top_word.gather(1, pick)  # (N, K)
        done = at_limit | torch.tensor(
            [len(finished[b]) >= K for b in alive.tolist()], device=device
        )
        keep = (~done).nonzero().squeeze(1)  # (N',)
        if keep.numel() == 0:
            break
        rows = next_rows[keep].view(-1)  # (N'*K,)
        history = torch.cat(
            [history.index_select(0, rows), next_words[keep].view(-1, 1)], 1
        )
        scores = next_scores[keep]
        state.reorder(rows)
        alive = alive[keep]

    return [
        sorted(hyps, key=lambda h: h.score, reverse=True)[: config.nbest]
        for hyps in finished
    ]


STRATEGIES = {"beam": beam_search, "greedy": greedy_search, "sample": sample_search}


def search(model, src: torch.Tensor, config: DecodeConfig) -> list:
    """Run the strategy ``config.strategy`` names."""
    return STRATEGIES[config.strategy](model, src, config)
