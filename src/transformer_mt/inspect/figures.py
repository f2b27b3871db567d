"""Figures drawn off-screen with matplotlib's Agg canvas, no pyplot state."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import TransformerMTError

log = logging.getLogger(__name__)

DPI = 100
FORMATS = (".png", ".pdf", ".svg")


def new_figure(width_in: float, height_in: float):
    """A figure of exactly ``width_in`` x ``height_in`` inches (DPI pixels each);
    constrained layout packs the panels without changing that size."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TransformerMTError(
            "plots need matplotlib: pip install matplotlib"
        ) from None
    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def check_output(path: str | Path) -> Path:
    """Refuse an output name whose format we cannot write, before any work."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise TransformerMTError(
            f"{path}: unknown image format {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    return path


def save_figure(figure, path: str | Path) -> Path:
    path = check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=DPI)
    except OSError as exc:
        raise TransformerMTError(
            f"cannot write {path}: {exc.strerror or exc}"
        ) from None
    log.info("wrote %s", path)
    return path
