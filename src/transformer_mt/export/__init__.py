"""Ship a trained checkpoint to other inference engines: CTranslate2 and ONNX
Runtime, and run it there (``backends``)."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import TransformerMTError

FORMATS = ("ctranslate2", "onnx")


def require(package: str) -> ModuleType:
    """Import an optional package or say which extra installs it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise TransformerMTError(
            f"the {package!r} package is not installed; install the export extra: "
            "pip install 'transformer-mt[export]'"
        ) from None
