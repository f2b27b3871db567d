"""Dynamic int8 quantization of a trained model for CPU translation.

Every ``nn.Linear`` (attention projections, feed-forward) gets int8 weights and
int8 matrix products with activations quantized on the fly, per batch. The shared
embedding matrix stays float32, and with it the output projection, which reads the
same matrix: quantizing it would round every logit of the vocabulary and the
embedding lookups too, for a product that is a minority of decoding time.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ..errors import TransformerMTError

log = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "int8")


def quantize(model: nn.Module, kind: str | None) -> nn.Module:
    """A copy of ``model`` quantized as ``kind`` ("int8"), or ``model`` itself for
    None/"none". Quantized models run on the CPU only."""
    if kind in (None, "none"):
        return model
    if kind not in QUANTIZATIONS:
        raise TransformerMTError(
            f"quantize={kind!r}: choose one of {', '.join(QUANTIZATIONS)}"
        )
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise TransformerMTError(
            f"int8 quantization runs on the CPU only, not on {device}; use --device cpu"
        )
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated; it still works.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=False
        )
    log.info("quantized the linear layers to int8 (embeddings stay float32)")
    return quantized
