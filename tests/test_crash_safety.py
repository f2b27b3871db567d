"""Nothing lost: SIGKILL at random moments, leftovers of killed runs, non-finite
losses, full or unwritable disks, bit-identical reruns."""

import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import kill_resume
from transformer_mt import checkpoint
from transformer_mt.errors import TransformerMTError
from transformer_mt.train.config import TrainConfig
from transformer_mt.train.trainer import Trainer, train

from .conftest import run_cli, tiny_config

OPTIONS = dict(
    max_tokens=300, warmup=10, log_every=1, valid_every=5, valid_bleu_sentences=0
)


def _finished_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def short_run(data, run, steps, **overrides):
    config = TrainConfig(max_steps=steps, threads=1, seed=7, **{**OPTIONS, **overrides})
    return train(config, tiny_config(), data, run, resume=True)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(reverse_data, tmp_path):
    result = kill_resume.kill_resume(reverse_data, tmp_path / "killed", 6, 100, 1)
    assert result["kills"] == 6 and result["final_step"] == 100
    assert kill_resume.check_run(tmp_path / "killed", 100) == []
    kill_resume.finish(kill_resume.train_args(reverse_data, tmp_path / "ref", 100))
    problems = kill_resume.compare_with_reference(tmp_path / "killed", tmp_path / "ref")
    assert problems == []


def test_leftovers_of_killed_saves_are_cleaned_or_restored(reverse_data, tmp_path):
    run = tmp_path / "run"
    short_run(reverse_data, run, 10)
    dead = _finished_pid()
    # Killed between the two renames of a save: only the hidden old copy exists.
    os.rename(run / "best", run / f".best.old-{dead}")
    # Killed while writing, and while deleting, a checkpoint.
    (run / f".checkpoint_000015.tmp-{dead}").mkdir()
    (run / f".checkpoint_000015.tmp-{dead}" / "model.safetensors").write_bytes(b"x")
    os.rename(run / "checkpoint_000005", run / f".checkpoint_000005.del-{dead}")
    # A folder of a process that is still running is not touched.
    alive = run / f".averaged.tmp-{os.getppid()}"
    alive.mkdir()
    short_run(reverse_data, run, 15)
    names = sorted(p.name for p in run.iterdir())
    assert names == [
        alive.name,
        "best",
        "checkpoint_000010",
        "checkpoint_000015",
        "metrics.jsonl",
    ]
    assert checkpoint.load(run / "best").config["step"] <= 15


def test_half_written_metrics_line_is_dropped_on_resume(reverse_data, tmp_path):
    run = tmp_path / "run"
    short_run(reverse_data, run, 10)
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"kind": "train", "step": 11, "lo')  # killed mid-line
    short_run(reverse_data, run, 15)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 16))


def test_non_finite_loss_skips_the_update_and_changes_nothing(reverse_data, tmp_path):
    config = TrainConfig(max_steps=5, threads=1, **OPTIONS)
    trainer = Trainer(config, tiny_config(), reverse_data, tmp_path / "run")
    with torch.no_grad():
        trainer.model.embedding.weight[5, 0] = float("nan")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.train_step(trainer.next_group()) is None
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, equal_nan=True)
    assert trainer.state.step == 0 and not trainer.optimizer.state


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(reverse_data, tmp_path):
    run = tmp_path / "run"
    short_run(reverse_data, run, 10)
    good = run / "checkpoint_000010"
    manifest = (good / "manifest.json").read_text()
    # An absurd learning rate: the first update is finite but blows the weights
    # up, so every later loss overflows.
    result = run_cli(
        *kill_resume.train_args(reverse_data, run, 30)[3:],
        "--lr-scale",
        "1e30",
        "--max-bad-steps",
        "3",
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "update skipped (1 in a row)" in stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(
            "transformer-mt train: error: 3 updates in a row had a non-finite loss"
        )
    )
    assert [p.name for p in checkpoint.step_checkpoints(run)][-1] == good.name
    assert (good / "manifest.json").read_text() == manifest
    checkpoint.load(good)


def test_same_seed_and_data_give_bit_identical_weights(reverse_data, tmp_path):
    model_config = tiny_config(dropout=0.1)  # dropout draws from the RNG too
    for name in ("a", "b"):
        config = TrainConfig(max_steps=6, threads=1, seed=11, **OPTIONS)
        train(config, model_config, reverse_data, tmp_path / name)
    a = load_file(tmp_path / "a" / "checkpoint_000006" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint_000006" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unwritable_run_directory_is_a_clear_error(reverse_data, tmp_path):
    (tmp_path / "file").write_text("a file where a folder is needed")
    with pytest.raises(TransformerMTError, match="cannot write to run directory"):
        short_run(reverse_data, tmp_path / "file" / "run", 5)


def limit_file_size():
    # Ignoring SIGXFSZ turns writes past the limit into EFBIG errors, the way a
    # full disk turns them into ENOSPC: a real write failure, even for root.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))


def test_failed_checkpoint_write_is_one_line_and_keeps_the_last_one(
    reverse_data, tmp_path
):
    run = tmp_path / "run"
    short_run(reverse_data, run, 5)
    args = kill_resume.train_args(reverse_data, run, 10)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        args, capture_output=True, env=env, preexec_fn=limit_file_size
    )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == (
        f"transformer-mt train: error: cannot write checkpoint "
        f"{run / 'checkpoint_000010'}: Error while serializing: I/O error: File too "
        "large (os error 27); earlier checkpoints are untouched"
    )
    assert sorted(p.name for p in run.iterdir()) == [
        "best",
        "checkpoint_000005",
        "metrics.jsonl",
    ]
    checkpoint.load(run / "checkpoint_000005")
    for output in ("/dev/full", str(run / "metrics.jsonl" / "out.txt")):
        result = run_cli(
            "translate",
            "--checkpoint",
            run,
            "--output",
            output,
            stdin=b"a b\n",
            check=False,
        )
        last_line = result.stderr.decode().splitlines()[-1]
        assert result.returncode == 1
        assert last_line.startswith(
            f"transformer-mt translate: error: cannot write translations to {output}"
        )
        result = run_cli(
            "evaluate",
            *("--checkpoint", run, "--data", reverse_data, "--split", "test"),
            *("--output", output),
            check=False,
        )
        assert result.returncode == 1
        assert (
            result.stderr.decode()
            .splitlines()[-1]
            .startswith(
                f"transformer-mt evaluate: error: cannot write translations to {output}"
            )
        )


def _damage(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resume_falls_back_past_a_damaged_newest_checkpoint(reverse_data, tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    short_run(reverse_data, reference, 10)
    short_run(reverse_data, run, 10)
    _damage(run / "checkpoint_000010" / "model.safetensors")
    summary = short_run(reverse_data, run, 10)  # resumes from step 5
    assert summary["step"] == 10
    assert (run / "checkpoint_000010.corrupt" / "model.safetensors").exists()
    redone = load_file(run / "checkpoint_000010" / "model.safetensors")
    expected = load_file(reference / "checkpoint_000010" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(redone[name], expected[name], rtol=0, atol=0)


def test_resume_with_every_checkpoint_damaged_names_each_problem(
    reverse_data, tmp_path
):
    run = tmp_path / "run"
    short_run(reverse_data, run, 10)
    for step in (5, 10):
        _damage(run / f"checkpoint_{step:06d}" / "optimizer.safetensors")
    with pytest.raises(TransformerMTError, match="no checkpoint could be loaded") as e:
        short_run(reverse_data, run, 15)
    assert "checkpoint_000005" in str(e.value) and "checkpoint_000010" in str(e.value)
