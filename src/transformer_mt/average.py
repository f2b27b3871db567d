"""Checkpoint averaging (section 6.1: the last 5 checkpoints for base models)."""

from __future__ import annotations

import logging
from pathlib import Path

from . import checkpoint
from .errors import TransformerMTError

log = logging.getLogger(__name__)


def average_checkpoints(paths: list[str | Path], out_dir: str | Path) -> Path:
    """Write the element-wise mean of the weights of ``paths`` (computed in float64)
    as a new checkpoint in ``out_dir``; all must share config and vocabulary."""
    if not paths:
        raise TransformerMTError("no checkpoints to average")
    first = checkpoint.load(paths[0])
    sums = {k: v.double().clone() for k, v in first.weights.items()}
    for path in paths[1:]:
        ckpt = checkpoint.load(path)
        if ckpt.vocab.sha256 != first.vocab.sha256:
            raise TransformerMTError(
                f"{ckpt.directory}: another vocabulary than {paths[0]}"
            )
        if ckpt.model_config != first.model_config:
            raise TransformerMTError(
                f"{ckpt.directory}: another model config than {paths[0]}"
            )
        for name, value in ckpt.weights.items():
            sums[name] += value.double()
    mean = {k: (v / len(paths)).to(first.weights[k].dtype) for k, v in sums.items()}
    model = first.build_model()
    model.load_state_dict(mean)
    meta = {
        k: first.config[k]
        for k in ("src_lang", "tgt_lang", "step")
        if k in first.config
    }
    meta["averaged"] = [str(checkpoint.resolve(p)) for p in paths]
    out = checkpoint.save(out_dir, model, first.vocab, meta)
    log.info("averaged %d checkpoints into %s", len(paths), out)
    return out


def average_last(
    run_dir: str | Path, last: int, out_dir: str | Path | None = None
) -> Path:
    """Average the ``last`` newest step checkpoints of a run (into run/averaged)."""
    found = checkpoint.step_checkpoints(run_dir)
    if not found:
        raise TransformerMTError(f"{run_dir}: holds no step checkpoints to average")
    if len(found) < last:
        log.warning(
            "%s has %d checkpoints; averaging all of them, not %d",
            run_dir,
            len(found),
            last,
        )
    return average_checkpoints(found[-last:], out_dir or Path(run_dir) / "averaged")
