"""Property-based tests (hypothesis) of the text pipeline and of `translate`.

What is guaranteed, exactly:
  * any Python string (surrogates aside, see test_bad_input) encodes and the
    ids decode back to a string, without an exception;
  * a string made only of the vocabulary's training letters and whitespace
    comes back as itself with whitespace collapsed: runs of spaces and tabs
    become one space, leading and trailing whitespace go (SentencePiece's
    NFKC normalisation changes nothing else in that alphabet);
  * any list of strings translates to a list of the same length, and each
    output equals the translation of its input alone (so the order is kept).
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_mt.decode import Translator
from transformer_mt.vocab import Vocabulary

from .conftest import WORDS, tiny_model

FEW = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def vocab(reverse_data):
    return Vocabulary.load(reverse_data / "spm.model")


@pytest.fixture(scope="module")
def translator(vocab):
    model = tiny_model(vocab_size=len(vocab), max_positions=32)
    return Translator(model, vocab)


@FEW
@given(st.text())
def test_any_string_encodes_and_decodes(vocab, text):
    ids = vocab.encode(text)
    assert all(0 <= i < len(vocab) for i in ids)
    assert isinstance(vocab.decode(ids), str)


@FEW
@given(st.text(alphabet=WORDS + " \t"))
def test_training_alphabet_round_trips_up_to_whitespace(vocab, text):
    assert vocab.decode(vocab.encode(text)) == " ".join(text.split())


@FEW
@given(st.lists(st.text(max_size=30), max_size=6))
def test_any_list_translates_in_order(translator, texts):
    outputs = translator.translate(texts, strategy="greedy", max_len_b=3)
    alone = [
        translator.translate([t], strategy="greedy", max_len_b=3)[0] for t in texts
    ]
    assert outputs == alone
