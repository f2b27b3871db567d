"""The joint subword vocabulary: a SentencePiece model shared by both languages.

Special-token ids live here and only here.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from .errors import TransformerMTError

log = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Vocabulary:
    """A trained SentencePiece model with fixed special ids (pad 0, unk 1, bos 2,
    eos 3). ``sha256`` identifies it so a checkpoint can refuse another one."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_bytes: bytes, source: str = "<bytes>") -> None:
        self.model_bytes = model_bytes
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_bytes)
        except Exception as exc:  # sentencepiece raises bare RuntimeError/OSError
            raise TransformerMTError(
                f"{source}: not a SentencePiece model ({exc})"
            ) from None
        if (
            self._sp.pad_id(),
            self._sp.unk_id(),
            self._sp.bos_id(),
            self._sp.eos_id(),
        ) != (
            PAD_ID,
            UNK_ID,
            BOS_ID,
            EOS_ID,
        ):
            raise TransformerMTError(
                f"{source}: SentencePiece model must use pad=0 unk=1 bos=2 eos=3"
            )

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            return cls(path.read_bytes(), source=str(path))
        except OSError as exc:
            raise TransformerMTError(
                f"cannot read vocabulary {path}: {exc.strerror}"
            ) from None

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        max_sentences: int = 2_000_000,
    ) -> Vocabulary:
        """Train a joint SentencePiece model in memory from an iterable of lines.

        Vocabularies of 1,000 pieces or more fall back to UTF-8 bytes for characters
        never seen in training (256 byte pieces), so no input becomes <unk>; smaller
        ones (tests, toy tasks) have no room for them.
        """
        if model_type not in ("unigram", "bpe"):
            raise TransformerMTError(
                f"vocab model type {model_type!r}: use unigram or bpe"
            )
        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(s for s in sentences if s.strip()),
                model_writer=buffer,
                vocab_size=size,
                model_type=model_type,
                character_coverage=character_coverage,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                byte_fallback=size >= 1000,
                input_sentence_size=max_sentences,
                shuffle_input_sentence=True,
                num_threads=2,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise TransformerMTError(
                f"training the subword vocabulary failed: {exc}"
            ) from None
        return cls(buffer.getvalue())

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.model_bytes)

    def __len__(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=2)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to detokenized text; special ids are dropped."""
        return self._sp.decode([int(i) for i in ids if i > EOS_ID])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self._sp.id_to_piece(int(i)) for i in ids]
