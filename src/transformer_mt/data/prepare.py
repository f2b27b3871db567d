"""`prepare`: check parallel text, train the joint subword model, and encode every
split once into a compact binary cache that training memory-maps in seconds.

A prepared directory holds::

    spm.model                      joint SentencePiece model
    data.json                      languages, vocabulary hash, per-split counts
    {split}.{side}.tokens.npy      all token ids of a split, concatenated
    {split}.{side}.offsets.npy     start of sentence i (N + 1 entries)
    {split}.{side}.txt             raw text of valid/test (references for BLEU)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TransformerMTError
from ..vocab import Vocabulary
from .text import read_parallel

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SIDES = ("src", "tgt")


@dataclass(frozen=True)
class DataConfig:
    """How raw parallel text becomes training data."""

    vocab_size: int = field(
        default=8000, metadata={"help": "joint subword vocabulary size"}
    )
    vocab_type: str = field(default="unigram", metadata={"help": "unigram or bpe"})
    max_len: int = field(
        default=250,
        metadata={"help": "drop training pairs with a side longer (subwords)"},
    )
    max_ratio: float = field(
        default=2.5,
        metadata={"help": "drop training pairs whose length ratio is larger"},
    )

    def __post_init__(self) -> None:
        if self.vocab_size < 16:
            raise TransformerMTError(
                f"vocab_size={self.vocab_size} must be at least 16"
            )
        if self.vocab_type not in ("unigram", "bpe"):
            raise TransformerMTError(
                f"vocab_type={self.vocab_type!r}: use unigram or bpe"
            )
        if self.max_len < 1 or self.max_ratio < 1.0:
            raise TransformerMTError("max_len must be >= 1 and max_ratio >= 1.0")


@dataclass
class SplitFiles:
    name: str
    src: Path
    tgt: Path


def write_split(out: Path, name: str, src_ids: list, tgt_ids: list, dtype) -> None:
    for side, ids in zip(SIDES, (src_ids, tgt_ids)):
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter(
            (t for sentence in ids for t in sentence),
            dtype=dtype,
            count=int(offsets[-1]),
        )
        np.save(out / f"{name}.{side}.tokens.npy", flat)
        np.save(out / f"{name}.{side}.offsets.npy", offsets)


def length_filter(
    src_ids: list, tgt_ids: list, config: DataConfig
) -> tuple[list, dict]:
    """Indices of training pairs to keep, and how many each filter dropped."""
    keep, dropped = [], {"empty": 0, "length": 0, "ratio": 0}
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if not s or not t:
            dropped["empty"] += 1
        elif max(len(s), len(t)) > config.max_len:
            dropped["length"] += 1
        elif max(len(s), len(t)) / min(len(s), len(t)) > config.max_ratio:
            dropped["ratio"] += 1
        else:
            keep.append(i)
    return keep, dropped


def prepare(
    splits: list[SplitFiles],
    out_dir: str | Path,
    config: DataConfig,
    src_lang: str = "src",
    tgt_lang: str = "tgt",
) -> dict:
    """Prepare ``splits`` (the first must be "train") into ``out_dir``; returns the
    summary that is also written to data.json."""
    if not splits or splits[0].name != "train":
        raise TransformerMTError("prepare needs training files")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransformerMTError(f"cannot create {out}: {exc.strerror}") from None

    texts = {s.name: read_parallel(s.src, s.tgt) for s in splits}
    train_src, train_tgt = texts["train"]
    log.info(
        "training a %d-piece %s vocabulary on %d pairs",
        config.vocab_size,
        config.vocab_type,
        len(train_src),
    )
    vocab = Vocabulary.train(
        train_src + train_tgt, config.vocab_size, config.vocab_type
    )
    vocab.save(out / "spm.model")
    dtype = np.uint16 if len(vocab) <= np.iinfo(np.uint16).max else np.int32

    summary = {
        "format_version": FORMAT_VERSION,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "vocab_sha256": vocab.sha256,
        "vocab_size": len(vocab),
        "data_config": dataclasses.asdict(config),
        "splits": {},
    }
    for split in splits:
        src_text, tgt_text = texts[split.name]
        src_ids, tgt_ids = vocab.encode_batch(src_text), vocab.encode_batch(tgt_text)
        info = {
            "src_file": str(split.src),
            "tgt_file": str(split.tgt),
            "lines": len(src_ids),
        }
        if split.name == "train":
            keep, dropped = length_filter(src_ids, tgt_ids, config)
            src_ids = [src_ids[i] for i in keep]
            tgt_ids = [tgt_ids[i] for i in keep]
            info["dropped"] = dropped
            log.info(
                "train: kept %d of %d pairs; dropped %d empty, %d too long "
                "(> %d subwords), %d with length ratio > %g",
                len(keep),
                info["lines"],
                dropped["empty"],
                dropped["length"],
                config.max_len,
                dropped["ratio"],
                config.max_ratio,
            )
        else:
            for side, lines in zip(SIDES, (src_text, tgt_text)):
                (out / f"{split.name}.{side}.txt").write_text(
                    "".join(line + "\n" for line in lines), encoding="utf-8"
                )
        info["pairs"] = len(src_ids)
        info["src_tokens"] = sum(map(len, src_ids))
        info["tgt_tokens"] = sum(map(len, tgt_ids))
        write_split(out, split.name, src_ids, tgt_ids, dtype)
        summary["splits"][split.name] = info

    tmp = out / "data.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "data.json")
    return summary


def load_summary(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "data.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise TransformerMTError(
            f"{data_dir} is not a prepared data directory (no data.json); "
            "run `transformer-mt prepare` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise TransformerMTError(f"{path}: corrupt JSON ({exc})") from None
    if summary.get("format_version", 0) > FORMAT_VERSION:
        raise TransformerMTError(
            f"{path}: format version {summary['format_version']} is newer than this "
            f"transformer-mt understands ({FORMAT_VERSION}); upgrade transformer-mt"
        )
    return summary
