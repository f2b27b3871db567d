"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Shape legend used in every docstring and shape comment of this package:

    B batch   S source length   T target length   D model width (d_model)
    H heads   K beam size       V vocabulary size

Everything is batch-first. Boolean masks are named for their polarity:
``src_attend`` is True where attention is allowed.
"""

from .config import PRESETS, ModelConfig, preset
from .transformer import DecoderState, Transformer

__all__ = ["PRESETS", "DecoderState", "ModelConfig", "Transformer", "preset"]
