"""Export to two ONNX graphs that ONNX Runtime runs: the encoder, and one decoder
step with its key/value cache.

encoder.onnx       src (B, S) int64
                -> cross_kv (B, 2L, H, S, D/H): every decoder layer's cross-attention
                   keys then values, computed once per source
                -> src_attend (B, 1, 1, S) bool
decoder_step.onnx  tokens (B, 1) int64, position (1,) int64, cross_kv, src_attend,
                   self_kv (B, 2L, H, T, D/H) (T = 0 at the first step)
                -> logits (B, V), next_self_kv (B, 2L, H, T+1, D/H)

L is the number of decoder layers. Keeping the batch first in every cached tensor
lets beam search reorder them with one index_select each.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint
from ..model import Transformer
from . import require

log = logging.getLogger(__name__)

OPSET = 17


class EncoderGraph(nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory, src_attend, _ = self.model.encode(src)  # (B, S, D)
        pairs = self.model.cross_keys_values(memory)  # L x (keys, values)
        keys = torch.stack([k for k, _ in pairs], 1)  # (B, L, H, S, D/H)
        values = torch.stack([v for _, v in pairs], 1)
        return torch.cat([keys, values], 1), src_attend  # (B, 2L, H, S, D/H)


class DecoderStepGraph(nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        positions = model.positions
        self.table = (
            positions.table if hasattr(positions, "table") else positions.weight
        )

    def forward(self, tokens, position, cross_kv, src_attend, self_kv):
        model, L = self.model, len(self.model.decoder_layers)
        # The position is an input, not a traced constant: index the table with it.
        x = model.embedding(tokens) + self.table.index_select(0, position)  # (B, 1, D)
        next_keys, next_values = [], []
        for i, layer in enumerate(model.decoder_layers):
            cache = {"keys": self_kv[:, i], "values": self_kv[:, L + i]}
            cross = (cross_kv[:, i], cross_kv[:, L + i])
            x, _ = layer(x, cross, src_attend, cache)
            next_keys.append(cache["keys"])  # (B, H, T+1, D/H)
            next_values.append(cache["values"])
        logits = model.project(model.decoder_norm(x))[:, -1]  # (B, V)
        next_kv = torch.stack(next_keys + next_values, 1)  # (B, 2L, H, T+1, D/H)
        return logits, next_kv


def _examples(model: Transformer) -> tuple:
    config = model.config
    B, S, T = 2, 5, 3
    L, H = config.decoder_layers, config.heads
    head_dim = config.d_model // H
    src = torch.full((B, S), 4, dtype=torch.long)
    src[1, 3:] = config.pad_id
    cross_kv = torch.zeros(B, 2 * L, H, S, head_dim)
    src_attend = (src != config.pad_id)[:, None, None, :]
    step = (
        torch.full((B, 1), 4, dtype=torch.long),
        torch.tensor([T]),
        cross_kv,
        src_attend,
        torch.zeros(B, 2 * L, H, T, head_dim),
    )
    return (src,), step


def _export(module: nn.Module, args: tuple, path: Path, names: dict) -> None:
    inputs, outputs = list(names["inputs"]), list(names["outputs"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python-side shapes
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={**names["inputs"], **names["outputs"]},
            opset_version=OPSET,
            dynamo=False,
        )


ENCODER_AXES = {
    "inputs": {"src": {0: "B", 1: "S"}},
    "outputs": {"cross_kv": {0: "B", 3: "S"}, "src_attend": {0: "B", 3: "S"}},
}
STEP_AXES = {
    "inputs": {
        "tokens": {0: "B"},
        "position": {},
        "cross_kv": {0: "B", 3: "S"},
        "src_attend": {0: "B", 3: "S"},
        "self_kv": {0: "B", 3: "T"},
    },
    "outputs": {"logits": {0: "B"}, "next_self_kv": {0: "B", 3: "T1"}},
}


def export(checkpoint_path: str | Path, out: str | Path) -> Path:
    """Write encoder.onnx, decoder_step.onnx, spm.model and config.json (the model
    config) for the checkpoint at ``checkpoint_path``."""
    require("onnx")
    ckpt = checkpoint.load(checkpoint_path)
    model = ckpt.build_model().eval()
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    encoder_args, step_args = _examples(model)
    with torch.no_grad():
        _export(EncoderGraph(model), encoder_args, out / "encoder.onnx", ENCODER_AXES)
        _export(
            DecoderStepGraph(model), step_args, out / "decoder_step.onnx", STEP_AXES
        )
    ckpt.vocab.save(out / "spm.model")
    config = {"format": "transformer-mt-onnx", "model": model.config.to_dict()}
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    log.info("wrote ONNX encoder and decoder step to %s", out)
    return out
