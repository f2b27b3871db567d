"""Checkpoints that load without unpickling: safetensors for tensors, JSON for the
rest, written atomically, checked against a manifest of SHA-256 sums.

A checkpoint directory holds::

    config.json           format version, model config, languages, step, vocab hash
    spm.model             the SentencePiece vocabulary the model was trained with
    model.safetensors     weights
    optimizer.safetensors optimizer moments and RNG state (training checkpoints)
    trainer_state.json    step, data position, schedule, best score (training)
    manifest.json         SHA-256 of every file above; written last

It is built in a hidden temporary folder and renamed into place, so a killed
process never leaves a directory that looks like a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import TransformerMTError
from .files import sha256_of
from .model import ModelConfig, Transformer
from .vocab import Vocabulary

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STEP_DIR = re.compile(r"^checkpoint_(\d+)$")
# Hidden work folders: .NAME.tmp-PID (being written), .NAME.old-PID (being
# replaced), .NAME.del-PID (being deleted). A killed process leaves them behind.
WORK_DIR = re.compile(r"^\.(.+)\.(tmp|old|del)-(\d+)$")
REQUIRED_FILES = ("config.json", "model.safetensors", "spm.model")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, list]:
    """Flatten an optimizer state dict into named tensors + JSON param groups."""
    state = optimizer.state_dict()
    tensors = {
        f"state.{index}.{key}": value.detach().cpu().contiguous()
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }
    return tensors, state["param_groups"]


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict, groups: list
) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("state."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save(
    directory: str | Path,
    model: torch.nn.Module,
    vocab: Vocabulary,
    meta: dict,
    training: dict | None = None,
) -> Path:
    """Write a checkpoint atomically to ``directory``.

    ``meta`` goes into config.json beside the model config. ``training``, if given,
    holds "tensors" (optimizer moments, RNG states) and "state" (a JSON dict).
    """
    final = Path(directory)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        weights = {
            k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
        }
        save_file(weights, tmp / "model.safetensors")
        vocab.save(tmp / "spm.model")
        config = {
            "format_version": FORMAT_VERSION,
            "model": model.config.to_dict(),
            "vocab_sha256": vocab.sha256,
            **meta,
        }
        _write_json(tmp / "config.json", config)
        if training is not None:
            save_file(training["tensors"], tmp / "optimizer.safetensors")
            _write_json(tmp / "trainer_state.json", training["state"])
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            _fsync(tmp / name)
        _write_json(tmp / "manifest.json", {n: sha256_of(tmp / n) for n in files})
        _fsync(tmp / "manifest.json")
        _fsync(tmp)
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    except (OSError, SafetensorError) as exc:  # safetensors wraps its I/O errors
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or str(exc)
        raise TransformerMTError(
            f"cannot write checkpoint {final}: {reason}; earlier checkpoints are "
            "untouched"
        ) from None
    return final


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TransformerMTError(f"{path}: corrupt JSON") from None


def _read_manifest(directory: Path) -> dict:
    """manifest.json as {plain file name: sha256}, every required file listed."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise TransformerMTError(
            f"{directory}: not a complete checkpoint (no manifest.json)"
        )
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()
    ):
        raise TransformerMTError(f"{manifest_path}: corrupt manifest")
    # Names come from an untrusted file: only plain names inside the directory
    # (no "../x", no "/dev/zero" to hash forever).
    for name in manifest:
        if name != Path(name).name or name in ("", ".", ".."):
            raise TransformerMTError(
                f"{manifest_path}: file name {name!r} points outside the checkpoint"
            )
    unlisted = [n for n in REQUIRED_FILES if n not in manifest]
    if unlisted:
        raise TransformerMTError(
            f"{manifest_path}: does not list {', '.join(unlisted)}"
        )
    return manifest


def verify(directory: Path) -> dict:
    """Check every file against manifest.json; return config.json."""
    for name, digest in _read_manifest(directory).items():
        path = directory / name
        if not path.is_file():
            raise TransformerMTError(f"{path}: missing file listed in the manifest")
        if sha256_of(path) != digest:
            raise TransformerMTError(
                f"{path}: checksum mismatch, the file was truncated or modified"
            )
    config = _read_json(directory / "config.json")
    if not isinstance(config, dict):
        raise TransformerMTError(f"{directory / 'config.json'}: not a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TransformerMTError(
            f"{directory}: checkpoint format version {version} is newer than this "
            f"transformer-mt reads ({FORMAT_VERSION}); upgrade transformer-mt"
        )
    return config


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint_NNNNNN directories of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in run_dir.iterdir()
        if (m := STEP_DIR.match(p.name)) and (p / "manifest.json").exists()
    ]
    return [p for _, p in sorted(found)]


def load_newest(run_dir: str | Path, set_aside: bool = True) -> Checkpoint | None:
    """The newest step checkpoint of ``run_dir`` that loads and verifies, or None
    when the run has none.

    A damaged checkpoint (a file changed or cut short after it was written) is
    skipped with a warning naming the problem, and, if ``set_aside``, renamed to
    NAME.corrupt so that it is kept for inspection but never tried again. Only
    when every checkpoint fails is that an error, listing each problem.
    """
    problems = []
    for directory in reversed(step_checkpoints(run_dir)):
        try:
            return load(directory)
        except TransformerMTError as exc:
            problems.append(str(exc))
            log.warning("skipping damaged checkpoint: %s", exc)
            if set_aside:
                aside = directory.with_name(directory.name + ".corrupt")
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(directory, aside)
                log.warning("renamed %s to %s", directory, aside.name)
    if problems:
        raise TransformerMTError(
            f"{run_dir}: no checkpoint could be loaded: " + "; ".join(problems)
        )
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(run_dir: str | Path) -> None:
    """Tidy the hidden work folders that killed processes left in ``run_dir``.

    A checkpoint caught between its two renames in ``save`` survives only as
    .NAME.old-PID: it is renamed back. Everything else is deleted. Folders of
    processes still running (another save, an ``average``) are left alone.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for path in sorted(run_dir.iterdir()):
        match = WORK_DIR.match(path.name)
        if not match or not path.is_dir():
            continue
        name, kind, pid = match.group(1), match.group(2), int(match.group(3))
        if pid != os.getpid() and _process_alive(pid):
            continue
        final = run_dir / name
        if kind == "old" and not final.exists() and (path / "manifest.json").exists():
            os.rename(path, final)
            log.warning("restored %s, left half-replaced by a killed run", final)
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, left by a killed run", path)


def remove(directory: str | Path) -> None:
    """Delete a checkpoint so that no half-deleted one is ever visible: rename it
    to a hidden folder first (atomic), then delete that."""
    directory = Path(directory)
    hidden = directory.parent / f".{directory.name}.del-{os.getpid()}"
    os.rename(directory, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def resolve(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory: then its averaged checkpoint,
    else its best, else its latest."""
    path = Path(path)
    if not path.exists():
        raise TransformerMTError(f"{path}: no such checkpoint or run directory")
    if (path / "manifest.json").exists() or (path / "config.json").exists():
        return path
    for name in ("averaged", "best"):
        if (path / name / "manifest.json").exists():
            return path / name
    found = step_checkpoints(path)
    if not found:
        raise TransformerMTError(f"{path}: holds no complete checkpoint")
    return found[-1]


@dataclass
class Checkpoint:
    directory: Path
    config: dict
    model_config: ModelConfig
    vocab: Vocabulary
    weights: dict

    def build_model(self, device: str | torch.device = "cpu") -> Transformer:
        model = Transformer(self.model_config)
        missing, unexpected = model.load_state_dict(self.weights, strict=False)
        if missing or unexpected:
            raise TransformerMTError(
                f"{self.directory}: weights do not match the config "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model.to(device).eval()

    def training_state(self) -> tuple[dict, dict]:
        """(optimizer/RNG tensors, trainer_state.json) of a training checkpoint."""
        state_path = self.directory / "trainer_state.json"
        if not state_path.exists():
            raise TransformerMTError(
                f"{self.directory}: has no training state (an averaged or exported "
                "checkpoint cannot be resumed)"
            )
        listed = _read_manifest(self.directory)
        if "trainer_state.json" not in listed or "optimizer.safetensors" not in listed:
            raise TransformerMTError(
                f"{self.directory}: manifest.json does not cover the training state"
            )
        try:
            tensors = load_file(self.directory / "optimizer.safetensors")
        except SafetensorError as exc:
            raise TransformerMTError(
                f"{self.directory}: unreadable optimizer.safetensors ({exc})"
            ) from None
        return tensors, _read_json(state_path)


def load(path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint (or a run directory's preferred one)."""
    directory = resolve(path)
    config = verify(directory)
    vocab = Vocabulary.load(directory / "spm.model")
    if vocab.sha256 != config.get("vocab_sha256"):
        raise TransformerMTError(f"{directory}: spm.model does not match config.json")
    try:
        model_config = ModelConfig.from_dict(config["model"])
        weights = load_file(directory / "model.safetensors")
    except (KeyError, SafetensorError) as exc:
        raise TransformerMTError(
            f"{directory}: unreadable checkpoint ({exc})"
        ) from None
    if model_config.vocab_size != len(vocab):
        raise TransformerMTError(
            f"{directory}: model vocab_size {model_config.vocab_size} != "
            f"{len(vocab)} pieces in spm.model"
        )
    return Checkpoint(directory, config, model_config, vocab, weights)


def check_vocab(checkpoint: Checkpoint, vocab: Vocabulary, where: str) -> None:
    if checkpoint.vocab.sha256 != vocab.sha256:
        raise TransformerMTError(
            f"checkpoint {checkpoint.directory} was trained with another vocabulary "
            f"than {where} (sha256 {checkpoint.vocab.sha256[:12]} vs "
            f"{vocab.sha256[:12]}); use the data directory it was trained on"
        )
