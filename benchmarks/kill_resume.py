"""Crash safety under SIGKILL: train a tiny model, kill it at seeded random
moments (during start-up, mid-training, mid-save), restart with --resume each
time, then check what is left on disk.

    python benchmarks/kill_resume.py --kills 20 --steps 400

Checks, after the last run has finished:
  * every checkpoint directory loads (manifest, sums, config, vocabulary);
  * nothing else is in the run directory: no hidden work folder left behind,
    no half-written directory that could pass for a checkpoint;
  * the final step was reached;
  * metrics.jsonl has one train record per step 1..N and one validation record
    per checkpoint step, in order, none twice, every line valid JSON;
  * losses and final weights are bit-identical to an uninterrupted run.

Exits non-zero and says which check failed if one does.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from safetensors.torch import load_file

from transformer_mt import checkpoint

TRAINING_STARTED = re.compile(r"\| model \{")
SAVING = re.compile(r"validation at step \d+")
MODES = ("start-up", "training", "saving")


def train_args(data: Path, run: Path, steps: int) -> list[str]:
    """A tiny CPU model that validates and saves every 5 steps."""
    return [
        sys.executable,
        "-m",
        "transformer_mt",
        "train",
        "--data",
        str(data),
        "--save-dir",
        str(run),
        "--resume",
        "--preset",
        "tiny",
        "--d-model",
        "32",
        "--d-ff",
        "64",
        "--dropout",
        "0.1",
        "--max-tokens",
        "300",
        "--warmup",
        "20",
        "--max-steps",
        str(steps),
        "--valid-every",
        "5",
        "--valid-bleu-sentences",
        "4",
        "--keep-last",
        "3",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--seed",
        "7",
    ]


def prepare_toy_data(root: Path) -> Path:
    """Prepare a reversal task (letters a-j) with the real `prepare` command."""
    rng = random.Random(0)
    files = []
    for split, count in (("train", 2000), ("valid", 60)):
        src = [
            " ".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6)))
            for _ in range(count)
        ]
        tgt = [" ".join(reversed(s.split())) for s in src]
        for side, lines in (("src", src), ("tgt", tgt)):
            path = root / f"{split}.{side}"
            path.write_text("".join(s + "\n" for s in lines), encoding="utf-8")
            files += [f"--{split}-{side}", str(path)]
    out = root / "prepared"
    subprocess.run(
        [sys.executable, "-m", "transformer_mt", "-q", "prepare", *files]
        + ["--out", str(out), "--vocab-size", "24", "--vocab-type", "bpe"],
        check=True,
        capture_output=True,
    )
    return out


def _read_lines(stream, lines: queue.Queue) -> None:
    for raw in stream:
        lines.put(raw.decode("utf-8", "replace"))
    lines.put(None)


def _wait_for(lines: queue.Queue, pattern: re.Pattern, deadline: float) -> bool:
    """Wait for a log line matching ``pattern``; False if the process ended."""
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.05)
        except queue.Empty:
            continue
        if line is None:
            return False
        if pattern.search(line):
            return True
    return False


def run_and_kill(args: list[str], mode: str, rng: random.Random) -> bool:
    """Start training; SIGKILL it at a moment chosen by ``mode``. Returns True if
    the kill landed, False if the process finished first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines))
    reader.start()
    deadline = time.monotonic() + 120
    if mode == "start-up":
        time.sleep(rng.uniform(0.2, 2.5))
    elif mode == "training":
        _wait_for(lines, TRAINING_STARTED, deadline)
        time.sleep(rng.uniform(0.0, 0.6))
    else:
        _wait_for(lines, TRAINING_STARTED, deadline)
        _wait_for(lines, SAVING, deadline)
        time.sleep(rng.uniform(0.0, 0.02))
    landed = proc.poll() is None
    if landed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join()
    return landed


def finish(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"final run failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout)


def kill_resume(data: Path, run: Path, kills: int, steps: int, seed: int) -> dict:
    """Kill ``kills`` times, then let the run finish; returns what happened."""
    rng = random.Random(seed)
    args = train_args(data, run, steps)
    modes = {mode: 0 for mode in MODES}
    started = time.monotonic()
    landed = attempts = 0
    while landed < kills:
        mode = rng.choice(MODES)
        attempts += 1
        if run_and_kill(args, mode, rng):
            landed += 1
            modes[mode] += 1
        elif attempts > 3 * kills:
            raise SystemExit("training keeps finishing before the kill: more --steps")
    summary = finish(args)
    return {
        "kills": landed,
        "by_mode": modes,
        "seconds": time.monotonic() - started,
        "final_step": summary["step"],
    }


def records(run: Path) -> list[dict]:
    text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n"), "metrics.jsonl ends in a half-written line"
    return [json.loads(line) for line in text.splitlines()]


def check_run(run: Path, steps: int, valid_every: int = 5) -> list[str]:
    """Everything left in ``run`` after the kills; returns the problems found."""
    problems = []
    for path in sorted(run.iterdir()):
        if path.name == "metrics.jsonl":
            continue
        if not (checkpoint.STEP_DIR.match(path.name) or path.name == "best"):
            problems.append(f"stray entry {path.name}")
            continue
        try:
            checkpoint.load(path)
        except Exception as exc:  # report every failure, not just the first
            problems.append(f"{path.name} does not load: {exc}")
    latest = checkpoint.step_checkpoints(run)[-1]
    if checkpoint.load(latest).config["step"] != steps:
        problems.append(f"latest checkpoint {latest.name} is not step {steps}")
    metrics = records(run)
    train_steps = [r["step"] for r in metrics if r["kind"] == "train"]
    valid_steps = [r["step"] for r in metrics if r["kind"] == "valid"]
    if train_steps != list(range(1, steps + 1)):
        problems.append(f"train records are not steps 1..{steps}: {train_steps}")
    if valid_steps != list(range(valid_every, steps + 1, valid_every)):
        problems.append(f"validation records out of order: {valid_steps}")
    return problems


def compare_with_reference(run: Path, reference: Path) -> list[str]:
    """Losses and final weights of the killed run against an uninterrupted one."""
    problems = []
    losses = [(r["step"], r["loss"]) for r in records(run) if r["kind"] == "train"]
    expected = [
        (r["step"], r["loss"]) for r in records(reference) if r["kind"] == "train"
    ]
    if losses != expected:
        diff = next(a for a, b in zip(losses, expected) if a != b)
        problems.append(f"loss curve differs from the uninterrupted run at {diff}")
    a = load_file(checkpoint.step_checkpoints(run)[-1] / "model.safetensors")
    b = load_file(checkpoint.step_checkpoints(reference)[-1] / "model.safetensors")
    if any(not a[name].equal(b[name]) for name in b):
        problems.append("final weights differ from the uninterrupted run")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="prepared directory (default: toy)")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: tmp)")
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    data = options.data or prepare_toy_data(work)
    result = kill_resume(
        data, work / "killed", options.kills, options.steps, options.seed
    )
    finish(train_args(data, work / "reference", options.steps))
    problems = check_run(work / "killed", options.steps)
    problems += compare_with_reference(work / "killed", work / "reference")
    result["problems"] = problems
    print(json.dumps(result, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
