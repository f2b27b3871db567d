"""Odd and broken text given to `translate` (CLI and API): each case gives a
correct result or a clear error, and always one output line per input line.

Each test here is one row of the README table "Bad input: what happens"."""

import random
import string

import pytest
import torch

from transformer_mt import checkpoint
from transformer_mt.decode import Translator
from transformer_mt.errors import TransformerMTError
from transformer_mt.vocab import Vocabulary

from .conftest import run_cli, tiny_model

OPTIONS = ("--strategy", "greedy", "--max-len-b", "5")


@pytest.fixture(scope="module")
def model_dir(reverse_data, tmp_path_factory):
    """An untrained tiny model with only 32 positions, on the a-j vocabulary."""
    vocab = Vocabulary.load(reverse_data / "spm.model")
    model = tiny_model(vocab_size=len(vocab), max_positions=32)
    path = tmp_path_factory.mktemp("bad_input") / "ckpt"
    return checkpoint.save(path, model, vocab, {"step": 0})


@pytest.fixture(scope="module")
def translator(model_dir):
    return Translator.load(model_dir, strategy="greedy", max_len_b=5)


def translate_file(model_dir, tmp_path, data: bytes, *extra):
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    return run_cli(
        "translate", "--checkpoint", model_dir, "--input", path, *OPTIONS, *extra
    )


def alone(translator, texts):
    """Each text translated on its own: the reference for order and content."""
    return [translator.translate([t])[0] for t in texts]


# (README row, bytes of one input line without its newline, the text it means)
LINES = [
    ("empty line", b"", ""),
    ("whitespace only", b" \t  ", " \t  "),
    (
        "control characters",
        b"a\x07b \x00c \x1b[31md\x1b[0m",
        "a\x07b \x00c \x1b[31md\x1b[0m",
    ),
    ("mixed scripts", "a 犬 б ب b".encode(), "a 犬 б ب b"),
    ("Unicode line separators", "a\u2028b\x85c\x0bd".encode(), "a\u2028b\x85c\x0bd"),
    ("lone carriage return", b"a\rb c", "a\rb c"),
    ("Windows line ending", b"a b c\r", "a b c"),
    ("ordinary", b"j i h", "j i h"),
    ("longer than the model's positions", b"a b c d e f g h i j " * 30, ""),
    ("no newline at the end of the file", b"i j", "i j"),
]


def test_every_odd_line_gives_one_line_in_order(model_dir, translator, tmp_path):
    data = b"\xef\xbb\xbf" + b"\n".join(raw for _, raw, _ in LINES)  # BOM, no EOL
    result = translate_file(model_dir, tmp_path, data)
    outputs = result.stdout.decode().split("\n")
    assert outputs.pop() == ""  # every output line ends with a newline
    texts = [text or raw.decode() for _, raw, text in LINES]
    assert outputs == alone(translator, texts)
    assert (
        "input 9 is too long: 330 subwords, the model takes 31; only the first "
        "31 are translated" in result.stderr.decode()
    )
    assert outputs[:2] == ["", ""]
    assert not any(c in "".join(outputs) for c in "\r\x0b\x85\u2028")


def test_invalid_utf8_is_an_error_naming_the_line(model_dir, tmp_path):
    result = run_cli(
        "translate",
        "--checkpoint",
        model_dir,
        *OPTIONS,
        stdin=b"a b\nc\nd \xff e\n",
        check=False,
    )
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode().splitlines()[-1] == (
        "transformer-mt translate: error: <stdin>:3: invalid UTF-8 at byte 2 of "
        "the line"
    )


def test_line_breaks_in_a_translation_never_split_the_output(tmp_path):
    # A model that always emits the byte piece for "\n": possible with any
    # byte-fallback vocabulary. The CLI turns such characters into spaces.
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(3000)]
    vocab = Vocabulary.train([" ".join(words[i : i + 8]) for i in range(3000)], 1000)
    model = tiny_model(vocab_size=len(vocab), norm="pre")
    newline = vocab._sp.piece_to_id("<0x0A>")
    with torch.no_grad():
        direction = torch.nn.functional.normalize(torch.randn(32), dim=0)
        model.decoder_norm.weight.zero_()
        model.decoder_norm.bias.copy_(direction)
        model.embedding.weight[newline] = 100 * direction
    path = checkpoint.save(tmp_path / "newline", model, vocab, {})
    assert "\n" in Translator.load(path, strategy="greedy").translate(["abc"])[0]
    result = translate_file(path, tmp_path, b"abc\nde\n")
    lines = result.stdout.decode().split("\n")
    assert lines[2] == "" and all(line and not line.strip() for line in lines[:2])


def test_api_refuses_what_is_not_a_list_of_strings(translator):
    with pytest.raises(TransformerMTError, match="takes a list of strings"):
        translator.translate("a b")
    with pytest.raises(TransformerMTError, match="input 2 is a NoneType, not a str"):
        translator.translate(["a", None])
    with pytest.raises(TransformerMTError, match="input 1 is a bytes"):
        translator.translate([b"a"])


def test_api_refuses_lone_surrogates(translator):
    with pytest.raises(TransformerMTError, match="input 2 is not valid Unicode"):
        translator.translate(["a", "b\ud800"])


def test_api_empty_list_gives_empty_list(translator):
    assert translator.translate([]) == []
