"""Translate with the ONNX graphs of ``export.onnx`` under ONNX Runtime.

``OnnxModel`` offers the incremental-decoding interface of ``Transformer``
(``encode``, ``start_decoding``, ``decode_step``) on top of the two graphs, so the
very greedy and beam search code of ``decode.search`` runs on it: same batching,
same length limits, same beam scores as the PyTorch back end.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..decode.search import DecodeConfig
from ..decode.translator import Translator
from ..errors import TransformerMTError
from ..model import ModelConfig
from ..vocab import Vocabulary
from . import require


class OnnxState:
    """Cached tensors of one batch, batch first so that reorder is one index_select
    per tensor: cross_kv (N, 2L, H, S, D/H), src_attend (N, 1, 1, S) and
    self_kv (N, 2L, H, T, D/H)."""

    def __init__(self, cross_kv: torch.Tensor, src_attend: torch.Tensor, L: int):
        N, _, H, _, head_dim = cross_kv.shape
        self.cross_kv = cross_kv
        self.src_attend = src_attend
        self.self_kv = torch.zeros(N, 2 * L, H, 0, head_dim)
        self.position = 0
        self.row_source = torch.arange(N)  # (N,) source of each row

    def reorder(self, index: torch.Tensor) -> None:
        self.self_kv = self.self_kv.index_select(0, index)
        row_source = self.row_source.index_select(0, index)
        # The graph takes one source row per decoder row; beams swapped within
        # their sentence keep their rows' sources, and those need no copy.
        moved = not torch.equal(row_source, self.row_source)
        self.row_source = row_source
        if not moved:
            return
        self.cross_kv = self.cross_kv.index_select(0, index)
        self.src_attend = self.src_attend.index_select(0, index)


class OnnxModel:
    """The two exported graphs behind the interface search strategies use."""

    def __init__(self, directory: Path, threads: int = 0) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1

        def session(name):
            return ort.InferenceSession(
                str(directory / name), options, providers=["CPUExecutionProvider"]
            )

        self.encoder = session("encoder.onnx")
        self.step = session("decoder_step.onnx")
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        self.config = ModelConfig.from_dict(config["model"])

    def encode(self, src: torch.Tensor) -> tuple:
        """src (B, S) -> "memory" = cross_kv (B, 2L, H, S, D/H), src_attend, []"""
        cross_kv, src_attend = self.encoder.run(None, {"src": src.numpy()})
        return torch.from_numpy(cross_kv), torch.from_numpy(src_attend), []

    def start_decoding(self, memory: torch.Tensor, src_attend: torch.Tensor):
        return OnnxState(memory, src_attend, self.config.decoder_layers)

    def decode_step(self, tokens: torch.Tensor, state: OnnxState) -> tuple:
        """tokens (N, 1) -> logits (N, V); appends this step to state.self_kv"""
        logits, state.self_kv = self.step.run(
            None,
            {
                "tokens": tokens.contiguous().numpy(),
                "position": torch.tensor([state.position]).numpy(),
                "cross_kv": state.cross_kv.contiguous().numpy(),
                "src_attend": state.src_attend.contiguous().numpy(),
                "self_kv": state.self_kv.contiguous().numpy(),
            },
        )
        state.self_kv = torch.from_numpy(state.self_kv)
        state.position += 1
        return torch.from_numpy(logits), []


class OnnxTranslator(Translator):
    """``Translator`` whose model is an exported ONNX directory."""

    def __init__(self, directory, config: DecodeConfig, threads: int = 0) -> None:
        directory = Path(directory)
        if not (directory / "decoder_step.onnx").is_file():
            raise TransformerMTError(
                f"{directory}: not an ONNX export (no decoder_step.onnx); create one "
                "with: transformer-mt export --format onnx"
            )
        self.model = OnnxModel(directory, threads)
        self.vocab = Vocabulary.load(directory / "spm.model")
        self.config = config
        self.device = torch.device("cpu")
        self.max_source_tokens = self.model.config.max_positions - 1
