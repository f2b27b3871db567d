"""One entry point for every inference engine, so users compare them on their data:
``torch`` (ours, optionally int8), ``ctranslate2`` and ``onnx``.

For ctranslate2 and onnx, ``path`` is an exported directory, or one of our
checkpoints (or run directories), which is then exported into a temporary
directory first.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

from ..decode import DecodeConfig, Translator
from ..errors import TransformerMTError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "ctranslate2", "onnx")


def _is_exported(path: Path) -> bool:
    return (path / "model.bin").is_file() or (path / "decoder_step.onnx").is_file()


def load_translator(
    backend: str,
    path: str | Path,
    config: DecodeConfig,
    device: str = "cpu",
    threads: int = 0,
    quantize: str | None = None,
):
    """An object with ``.config`` and ``.translate(texts) -> list[str]``."""
    if backend not in BACKENDS:
        raise TransformerMTError(
            f"backend={backend!r}: choose one of {', '.join(BACKENDS)}"
        )
    if backend == "torch":
        return Translator.load(path, device, quantize, **dataclasses.asdict(config))
    if device != "cpu":
        raise TransformerMTError(f"the {backend} backend runs on the CPU only")
    path = Path(path)
    if not path.exists():
        raise TransformerMTError(f"{path}: no such checkpoint or export directory")
    if _is_exported(path):
        return _open(backend, path, config, threads, quantize)
    with tempfile.TemporaryDirectory(prefix="transformer-mt-") as tmp:
        log.info("exporting %s to %s for the %s backend", path, tmp, backend)
        _export(backend, path, Path(tmp) / backend)
        # Both engines read the whole model at load: the directory may go.
        return _open(backend, Path(tmp) / backend, config, threads, quantize)


def _export(backend: str, checkpoint: Path, out: Path) -> None:
    if backend == "ctranslate2":
        from .ctranslate2 import export

        export(checkpoint, out, "float32")
    else:
        from .onnx import export

        export(checkpoint, out)


def _open(backend: str, directory: Path, config, threads: int, quantize):
    if backend == "ctranslate2":
        from .ctranslate2 import CTranslate2Translator

        compute_type = "int8" if quantize == "int8" else "default"
        return CTranslate2Translator(directory, config, threads, compute_type)
    from .onnx_runner import OnnxTranslator

    if quantize not in (None, "none"):
        raise TransformerMTError(
            "the onnx backend has no --quantize; use torch or ctranslate2 for int8"
        )
    if not (directory / "decoder_step.onnx").is_file():
        raise TransformerMTError(f"{directory}: holds no ONNX export")
    return OnnxTranslator(directory, config, threads)
