"""Search strategies: a scripted decoder with hand-computed beams, and
equivalences on a random tiny model."""

import math
from types import SimpleNamespace

import pytest
import torch

from transformer_mt.data.dataset import source_tensor
from transformer_mt.decode.search import (
    DecodeConfig,
    beam_search,
    greedy_search,
    length_penalty,
    sample_search,
    top_k_filter,
    top_p_filter,
)
from transformer_mt.errors import TransformerMTError
from transformer_mt.vocab import EOS_ID

from .conftest import tiny_model

A, B_ = 4, 5  # the two real words of the scripted vocabulary
V = 6


class ScriptedState:
    def __init__(self, rows: int) -> None:
        self.history = torch.empty(rows, 0, dtype=torch.long)
        self.position = 0

    def reorder(self, index):
        self.history = self.history.index_select(0, index)


class ScriptedModel:
    """Next-token probabilities looked up from the prefix generated so far."""

    config = SimpleNamespace(max_positions=1024)
    DEFAULT = {EOS_ID: 1.0}
    TABLE = {
        (): {A: 0.6, B_: 0.4},
        (A,): {EOS_ID: 0.5, A: 0.1, B_: 0.4},
        (B_,): {EOS_ID: 0.9, A: 0.05, B_: 0.05},
    }

    def encode(self, src):
        return (
            torch.zeros(src.size(0), src.size(1), 1),
            (src != 0)[:, None, None, :],
            [],
        )

    def start_decoding(self, memory, src_attend):
        return ScriptedState(memory.size(0))

    def decode_step(self, tokens, state):
        state.history = torch.cat([state.history, tokens], 1)
        state.position += 1
        logits = torch.full((tokens.size(0), V), float("-inf"))
        for row, prefix in enumerate(state.history[:, 1:].tolist()):
            for token, p in self.TABLE.get(tuple(prefix), self.DEFAULT).items():
                logits[row, token] = math.log(p)
        return logits, []


SRC = source_tensor([[A, A, A]])


def test_beam_search_returns_hand_computed_hypotheses():
    # step 1: beams A (.6), B (.4); step 2 candidates: B EOS .36, A EOS .30,
    # A B .24, A A .06 -> the two best both end: done, B beats greedy's A.
    config = DecodeConfig(beam_size=2, nbest=2, length_penalty=0.0)
    [hyps] = beam_search(ScriptedModel(), SRC, config)
    assert [h.tokens for h in hyps] == [[B_], [A]]
    assert hyps[0].score == pytest.approx(math.log(0.36))
    assert hyps[1].score == pytest.approx(math.log(0.30))
    [[greedy]] = greedy_search(ScriptedModel(), SRC, config)
    assert greedy.tokens == [A] and greedy.score == pytest.approx(math.log(0.3))


def test_length_penalty_divides_the_score():
    config = DecodeConfig(beam_size=2, nbest=2, length_penalty=0.6)
    [hyps] = beam_search(ScriptedModel(), SRC, config)
    penalty = ((5 + 2) / 6) ** 0.6  # two tokens: the word and EOS
    assert hyps[0].score == pytest.approx(math.log(0.36) / penalty)
    assert length_penalty(2, 0.6) == pytest.approx(penalty)


def test_sentences_in_a_batch_finish_independently():
    config = DecodeConfig(beam_size=2, nbest=2, length_penalty=0.0)
    src = source_tensor([[A], [A, A, A, A]])
    batched = beam_search(ScriptedModel(), src, config)
    alone = beam_search(ScriptedModel(), SRC, config)[0]
    for hyps in batched:
        assert [(h.tokens, round(h.score, 6)) for h in hyps] == [
            (h.tokens, round(h.score, 6)) for h in alone
        ]


class UnlikelyEndModel(ScriptedModel):
    DEFAULT = {A: 0.6, B_: 0.3, EOS_ID: 0.1}
    TABLE = {}


def test_max_length_forces_the_end():
    config = DecodeConfig(strategy="greedy", max_len_a=0.0, max_len_b=1)
    [[hyp]] = greedy_search(UnlikelyEndModel(), SRC, config)
    assert hyp.tokens == [] and hyp.score == pytest.approx(math.log(0.1))
    [[beam]] = beam_search(
        UnlikelyEndModel(), SRC, DecodeConfig(beam_size=2, max_len_a=0, max_len_b=1)
    )
    assert beam.tokens == []
    # a = 1, b = 2: three source tokens allow five output tokens including EOS
    config = DecodeConfig(strategy="greedy", max_len_a=1.0, max_len_b=2)
    [[hyp]] = greedy_search(UnlikelyEndModel(), SRC, config)
    assert len(hyp.tokens) == 4


def random_sources():
    g = torch.Generator().manual_seed(4)
    return [torch.randint(4, 40, (n,), generator=g).tolist() for n in (7, 3, 5, 9)]


def test_beam_size_one_equals_greedy_on_a_real_model():
    model = tiny_model(seed=3)
    src = source_tensor(random_sources())
    config = DecodeConfig(beam_size=1, length_penalty=0.0, max_len_b=12)
    greedy = greedy_search(model, src, config)
    beam = beam_search(model, src, config)
    for g, b in zip(greedy, beam):
        assert g[0].tokens == b[0].tokens
        assert g[0].score == pytest.approx(b[0].score, abs=1e-4)


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_batched_decoding_equals_each_sentence_alone(search):
    model = tiny_model(seed=5)
    sources = random_sources()
    config = DecodeConfig(beam_size=3, nbest=3, max_len_b=10)
    batched = search(model, source_tensor(sources), config)
    for sentence, hyps in zip(sources, batched):
        alone = search(model, source_tensor([sentence]), config)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        for h, a in zip(hyps, alone):
            assert h.score == pytest.approx(a.score, abs=1e-4)


def test_nbest_is_sorted_and_distinct():
    model = tiny_model(seed=6)
    [hyps] = beam_search(
        model,
        source_tensor(random_sources()[:1]),
        DecodeConfig(beam_size=4, nbest=4, max_len_b=8),
    )
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True) and len(hyps) == 4
    assert len({tuple(h.tokens) for h in hyps}) == 4


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny_model(seed=7)
    src = source_tensor(random_sources())
    a = sample_search(model, src, DecodeConfig(strategy="sample", seed=1, max_len_b=8))
    b = sample_search(model, src, DecodeConfig(strategy="sample", seed=1, max_len_b=8))
    assert [h[0].tokens for h in a] == [h[0].tokens for h in b]
    top1 = sample_search(
        model, src, DecodeConfig(strategy="sample", top_k=1, max_len_b=8)
    )
    greedy = greedy_search(model, src, DecodeConfig(strategy="greedy", max_len_b=8))
    assert [h[0].tokens for h in top1] == [h[0].tokens for h in greedy]


def test_sampling_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = top_k_filter(logits, 2).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    # mass before each token: 0, .5, .8, .95 -> p=0.8 keeps the first two
    assert top_p_filter(logits, 0.8).isfinite().tolist() == [[True, True, False, False]]
    assert top_p_filter(logits, 0.81).isfinite().tolist() == [[True, True, True, False]]


def test_bad_decoding_options_are_refused():
    with pytest.raises(
        TransformerMTError, match="nbest=5 must be between 1 and beam_size"
    ):
        DecodeConfig(beam_size=4, nbest=5)
    with pytest.raises(TransformerMTError, match="strategy='viterbi'"):
        DecodeConfig(strategy="viterbi")
