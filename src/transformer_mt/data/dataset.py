"""Memory-mapped token pairs, token-count batching and padding into tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import TransformerMTError
from ..vocab import BOS_ID, EOS_ID, PAD_ID


class TokenPairs:
    """One prepared split, memory-mapped: ``pairs[i]`` -> (src ids, tgt ids)."""

    def __init__(self, data_dir: str | Path, split: str) -> None:
        data_dir = Path(data_dir)
        arrays = {}
        for side in ("src", "tgt"):
            for kind in ("tokens", "offsets"):
                path = data_dir / f"{split}.{side}.{kind}.npy"
                try:
                    arrays[side, kind] = np.load(path, mmap_mode="r")
                except FileNotFoundError:
                    raise TransformerMTError(
                        f"{path}: missing; split {split!r} was not prepared"
                    ) from None
        self.tokens = {s: arrays[s, "tokens"] for s in ("src", "tgt")}
        self.offsets = {s: np.asarray(arrays[s, "offsets"]) for s in ("src", "tgt")}
        self.src_lens = np.diff(self.offsets["src"])
        self.tgt_lens = np.diff(self.offsets["tgt"])

    def __len__(self) -> int:
        return len(self.src_lens)

    def side(self, side: str, i: int) -> np.ndarray:
        start, end = self.offsets[side][i], self.offsets[side][i + 1]
        return np.asarray(self.tokens[side][start:end], dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.side("src", i), self.side("tgt", i)


def token_batches(
    src_lens: np.ndarray,
    tgt_lens: np.ndarray,
    max_tokens: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> list[np.ndarray]:
    """Group sentence indices into batches of at most ``max_tokens`` padded tokens
    (counting the appended EOS/BOS) on either side, sentences of similar length
    together; batch order shuffled reproducibly from (seed, epoch)."""
    n = len(src_lens)
    rng = np.random.default_rng([seed, epoch])
    tiebreak = rng.permutation(n) if shuffle else np.arange(n)
    order = tiebreak[np.lexsort((src_lens[tiebreak], tgt_lens[tiebreak]))]
    batches, start, longest = [], 0, 0
    for pos, i in enumerate(order):
        size = int(max(src_lens[i], tgt_lens[i])) + 1
        candidate = max(longest, size)
        if pos > start and candidate * (pos - start + 1) > max_tokens:
            batches.append(order[start:pos])
            start, candidate = pos, size
        longest = candidate
    if start < n:
        batches.append(order[start:])
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@dataclass
class Batch:
    src: torch.Tensor  # (B, S) source ids + EOS, padded
    tgt_in: torch.Tensor  # (B, T) BOS + target ids, padded
    tgt_out: torch.Tensor  # (B, T) target ids + EOS, padded
    ntokens: int  # non-pad target tokens

    def pin_memory(self) -> Batch:
        return Batch(
            self.src.pin_memory(),
            self.tgt_in.pin_memory(),
            self.tgt_out.pin_memory(),
            self.ntokens,
        )

    def to(self, device) -> Batch:
        return Batch(
            self.src.to(device, non_blocking=True),
            self.tgt_in.to(device, non_blocking=True),
            self.tgt_out.to(device, non_blocking=True),
            self.ntokens,
        )


def pad(rows: list, pad_id: int = PAD_ID) -> torch.Tensor:
    """list of 1-D int arrays -> (N, longest) LongTensor, right-padded"""
    out = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def source_tensor(sentences: list) -> torch.Tensor:
    """Source id lists -> (B, S) with EOS appended, right-padded."""
    return pad([np.append(np.asarray(s, dtype=np.int64), EOS_ID) for s in sentences])


def collate(pairs: TokenPairs, indices: np.ndarray) -> Batch:
    srcs, tgts = zip(*(pairs[int(i)] for i in indices))
    tgt_in = pad([np.concatenate([[BOS_ID], t]) for t in tgts])
    tgt_out = pad([np.append(t, EOS_ID) for t in tgts])
    return Batch(source_tensor(srcs), tgt_in, tgt_out, int((tgt_out != PAD_ID).sum()))
