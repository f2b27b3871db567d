"""Shared fixtures: tiny seeded models, synthetic corpora, prepared directories."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformer_mt.model import ModelConfig, Transformer

ROOT = Path(__file__).resolve().parents[1]
SHARED_MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"


def tiny_config(**overrides) -> ModelConfig:
    values = dict(
        vocab_size=40,
        d_model=32,
        d_ff=64,
        heads=4,
        encoder_layers=2,
        decoder_layers=2,
        dropout=0.0,
        max_positions=128,
    )
    values.update(overrides)
    return ModelConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config(**overrides)).eval()


def run_cli(*args, check: bool = True, stdin: bytes | None = None, timeout: int = 300):
    """Run `python -m transformer_mt ARGS` as a real subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", "2")
    result = subprocess.run(
        [sys.executable, "-m", "transformer_mt", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout.decode()}\n"
            f"stderr:\n{result.stderr.decode()}"
        )
    return result


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


WORDS = "abcdefghij"


def reverse_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Sentences of 2-6 letters from a ten-letter alphabet, and their reversal."""
    rng = random.Random(seed)
    src = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)
    ]
    return src, [" ".join(reversed(s.split())) for s in src]


@pytest.fixture(scope="session")
def reverse_data(tmp_path_factory) -> Path:
    """A prepared directory for the reversal task (small vocabulary)."""
    root = tmp_path_factory.mktemp("reverse")
    paths = {}
    for split, n, seed in (("train", 3000, 1), ("valid", 100, 2), ("test", 100, 3)):
        src, tgt = reverse_corpus(n, seed)
        paths[split] = (
            write_lines(root / f"{split}.src", src),
            write_lines(root / f"{split}.tgt", tgt),
        )
    out = root / "prepared"
    run_cli(
        "prepare",
        "--train-src",
        paths["train"][0],
        "--train-tgt",
        paths["train"][1],
        "--valid-src",
        paths["valid"][0],
        "--valid-tgt",
        paths["valid"][1],
        "--test-src",
        paths["test"][0],
        "--test-tgt",
        paths["test"][1],
        "--out",
        out,
        "--vocab-size",
        24,
        "--vocab-type",
        "bpe",
    )
    return out


@pytest.fixture(scope="session")
def multi30k_slice(tmp_path_factory) -> dict:
    """The first lines of Multi30k de-en from ../shared (tests fail, not skip,
    if the data is missing: it is part of the test set-up)."""
    from transformer_mt.data.text import read_lines

    assert SHARED_MULTI30K.exists(), f"test data missing: {SHARED_MULTI30K}"
    root = tmp_path_factory.mktemp("m30k")
    files = {}
    for split, stem, count in (
        ("train", "train", 3000),
        ("valid", "val", 200),
        ("test", "test_2016_flickr", 100),
    ):
        for lang in ("de", "en"):
            lines = read_lines(SHARED_MULTI30K / f"{stem}.{lang}.gz")[:count]
            files[split, lang] = write_lines(root / f"{split}.{lang}", lines)
    return files
