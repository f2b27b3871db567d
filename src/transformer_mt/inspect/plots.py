"""Training curves from metrics.jsonl files: loss, perplexity, validation BLEU and
learning rate against update steps or training time, several runs overlaid."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from ..errors import TransformerMTError
from .figures import check_output, new_figure, save_figure

log = logging.getLogger(__name__)

KINDS = ("train", "valid")
X_AXES = {"step": ("step", 1.0, "update step"), "time": ("elapsed", 60.0, "minutes")}
# panel title -> (log scale, [(record kind, field, line style)])
PANELS = {
    "loss (label-smoothed)": (
        False,
        [("train", "loss", "-"), ("valid", "valid_loss", "--")],
    ),
    "perplexity": (True, [("train", "ppl", "-"), ("valid", "valid_ppl", "--")]),
    "validation BLEU": (False, [("valid", "valid_bleu", "--")]),
    "learning rate": (False, [("train", "lr", "-")]),
}
FIGURE_INCHES = (12.0, 8.0)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_line(path: Path, number: int, raw: bytes) -> dict | None:
    """One metrics record, None for a blank line or a kind we do not plot."""
    try:
        text = raw.decode("utf-8")
        if not text.strip():
            return None
        record = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "msg", None) or "not UTF-8"
        raise TransformerMTError(
            f"{path}:{number}: not a JSON line ({reason})"
        ) from None
    if not isinstance(record, dict):
        raise TransformerMTError(f"{path}:{number}: expected a JSON object")
    if record.get("kind") not in KINDS:
        return None
    for key in ("step", "elapsed"):
        if not _is_number(record.get(key)):
            raise TransformerMTError(
                f"{path}:{number}: a {record['kind']} record needs a number "
                f"{key!r}, got {record.get(key)!r}"
            )
    return record


def read_metrics(path: str | Path) -> list[dict]:
    """The train and valid records of a metrics.jsonl file, in file order. Other
    kinds of record are skipped; a line that is not a JSON object is an error."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise TransformerMTError(f"{path}: no such metrics file") from None
    except OSError as exc:
        raise TransformerMTError(f"{path}: {exc.strerror or exc}") from None
    records = [_parse_line(path, n, raw) for n, raw in enumerate(lines, 1)]
    records = [r for r in records if r is not None]
    if not records:
        raise TransformerMTError(f"{path}: holds no train or valid records")
    return records


def run_labels(paths: Sequence[Path]) -> list[str]:
    """The run directory's name for SAVE_DIR/metrics.jsonl, else the file's stem;
    the whole path where two would read the same."""
    labels = [p.parent.name if p.name == "metrics.jsonl" else p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    return labels


def _series(records: list[dict], kind: str, field: str, x: str) -> tuple:
    key, divisor, _ = X_AXES[x]
    points = [
        (r[key] / divisor, r[field])
        for r in records
        if r["kind"] == kind and _is_number(r.get(field)) and math.isfinite(r[field])
    ]
    return tuple(zip(*points)) if points else ((), ())


def _draw_panel(ax, title: str, runs: list, x: str) -> None:
    log_scale, lines = PANELS[title]
    drawn = 0
    for i, (_, records) in enumerate(runs):
        for kind, field, style in lines:
            xs, ys = _series(records, kind, field, x)
            marker = "o" if kind == "valid" else None
            ax.plot(xs, ys, style, color=f"C{i}", marker=marker, markersize=3)
            drawn += len(xs)
    ax.set_title(title)
    ax.set_xlabel(X_AXES[x][2])
    ax.grid(alpha=0.3)
    if not drawn:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    elif log_scale:
        ax.set_yscale("log")


def _legend(ax, labels: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{i}", label=t) for i, t in enumerate(labels)]
    handles += [
        Line2D([], [], color="black", linestyle="-", label="train"),
        Line2D([], [], color="black", linestyle="--", marker="o", label="validation"),
    ]
    ax.legend(handles=handles, fontsize=8)


def plot_metrics(paths: Sequence[str | Path], out: str | Path, x: str = "step") -> Path:
    """Draw the curves of one or more metrics.jsonl files into ``out`` (.png, .pdf
    or .svg), FIGURE_INCHES at figures.DPI. ``x`` is "step" or "time" (training
    minutes, counted over resumed sessions)."""
    if x not in X_AXES:
        raise TransformerMTError(f"x={x!r}: use step or time")
    if not paths:
        raise TransformerMTError("give at least one metrics.jsonl file")
    check_output(out)
    paths = [Path(p) for p in paths]
    runs = list(zip(run_labels(paths), [read_metrics(p) for p in paths]))

    figure = new_figure(*FIGURE_INCHES)
    grid = figure.subplots(2, 2, squeeze=False).ravel()
    for ax, title in zip(grid, PANELS):
        _draw_panel(ax, title, runs, x)
    _legend(grid[0], [label for label, _ in runs])
    return save_figure(figure, out)
