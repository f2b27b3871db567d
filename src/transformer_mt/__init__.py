"""transformer-mt: the Transformer of "Attention Is All You Need" for machine
translation, from parallel text to a trained, scored and deployable model."""

from .decode import DecodeConfig, Translator
from .errors import TransformerMTError
from .model import ModelConfig, Transformer, preset

__version__ = "0.1.0"
__all__ = [
    "DecodeConfig",
    "ModelConfig",
    "Transformer",
    "TransformerMTError",
    "Translator",
    "preset",
]
