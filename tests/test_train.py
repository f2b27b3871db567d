"""Training: exact resume, learning a synthetic task through the CLI."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transformer_mt import checkpoint
from transformer_mt.data.dataset import collate
from transformer_mt.train.config import TrainConfig
from transformer_mt.train.trainer import Trainer, train

from .conftest import run_cli, tiny_config


def train_losses(run_dir):
    records = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def test_resumed_run_reproduces_the_uninterrupted_run(reverse_data, tmp_path):
    model_config = tiny_config(dropout=0.1)  # dropout: the RNG state must resume too
    options = dict(
        max_tokens=300,
        warmup=10,
        log_every=1,
        valid_every=4,
        valid_bleu_sentences=5,
        seed=3,
        threads=1,
    )
    train(
        TrainConfig(max_steps=10, **options), model_config, reverse_data, tmp_path / "a"
    )
    train(
        TrainConfig(max_steps=4, **options), model_config, reverse_data, tmp_path / "b"
    )
    summary = train(
        TrainConfig(max_steps=10, **options),
        model_config,
        reverse_data,
        tmp_path / "b",
        resume=True,
    )
    assert summary["step"] == 10
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")
    assert [s for s, _ in train_losses(tmp_path / "b")] == list(range(1, 11))
    a = load_file(checkpoint.step_checkpoints(tmp_path / "a")[-1] / "model.safetensors")
    b = load_file(checkpoint.step_checkpoints(tmp_path / "b")[-1] / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_save_every_keeps_dense_checkpoints_between_validations(reverse_data, tmp_path):
    config = TrainConfig(
        max_steps=12,
        max_tokens=300,
        warmup=10,
        valid_every=6,
        save_every=2,
        keep_last=4,
        valid_bleu_sentences=0,
        threads=1,
    )
    train(config, tiny_config(), reverse_data, tmp_path / "run")
    steps = [
        json.loads((p / "config.json").read_text())["step"]
        for p in checkpoint.step_checkpoints(tmp_path / "run")
    ]
    assert steps == [6, 8, 10, 12]
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    valid_steps = [json.loads(r)["step"] for r in records if '"valid"' in r]
    assert valid_steps == [6, 12]


def test_gradient_accumulation_equals_one_big_batch(reverse_data, tmp_path):
    # Two batches of ~150 tokens accumulated must give the update of the same
    # sentences in one batch when the loss is normalised by the update's tokens.
    config = TrainConfig(max_tokens=150, update_freq=2, warmup=10, seed=1, threads=1)
    trainer = Trainer(config, tiny_config(), reverse_data, tmp_path / "acc")
    group = trainer.next_group()
    big = Trainer(
        TrainConfig(max_tokens=10_000, warmup=10, seed=1, threads=1),
        tiny_config(),
        reverse_data,
        tmp_path / "big",
    )
    batches = trainer.epoch_batches(1)[:2]
    merged = collate(big.train_data, np.concatenate(batches))
    trainer.train_step(group)
    big.train_step([merged])
    for (name, p), q in zip(trainer.model.named_parameters(), big.model.parameters()):
        if name.endswith("k_proj.bias"):
            # A key bias shifts every score of a query equally, so softmax ignores
            # it: its exact gradient is zero and Adam only amplifies float noise.
            continue
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_tiny_model_learns_to_reverse_sequences_through_the_cli(reverse_data, tmp_path):
    run = tmp_path / "run"
    run_cli(
        "train",
        "--data",
        reverse_data,
        "--save-dir",
        run,
        "--preset",
        "tiny",
        "--dropout",
        "0",
        "--label-smoothing",
        "0",
        "--max-tokens",
        "800",
        "--warmup",
        "200",
        "--lr-scale",
        "0.5",
        "--max-steps",
        "1500",
        "--valid-every",
        "500",
        "--valid-bleu-sentences",
        "50",
        "--log-every",
        "100",
    )
    sources = (reverse_data / "test.src.txt").read_text().splitlines()
    expected = (reverse_data / "test.tgt.txt").read_text().splitlines()
    result = run_cli(
        "translate",
        "--checkpoint",
        run,
        "--strategy",
        "greedy",
        "--input",
        reverse_data / "test.src.txt",
    )
    outputs = result.stdout.decode().splitlines()
    assert len(outputs) == len(sources)
    accuracy = sum(o == e for o, e in zip(outputs, expected)) / len(expected)
    assert accuracy >= 0.95, f"exact match {accuracy:.2f}"


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(reverse_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "transformer_mt",
        "train",
        "--data",
        reverse_data,
        "--save-dir",
        run,
        "--preset",
        "tiny",
        "--max-steps",
        "100000",
        "--max-tokens",
        "300",
        "--valid-every",
        "0",
        "--log-every",
        "1",
        "--valid-bleu-sentences",
        "0",
        "--threads",
        "1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        list(map(str, command)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    for line in process.stderr:
        if "| step 3 |" in line:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["stop_reason"] == "interrupted by SIGINT" and summary["step"] >= 3
    assert "continue with --resume" in stderr
    [saved] = checkpoint.step_checkpoints(run)
    assert saved.name == f"checkpoint_{summary['step']:06d}"
    checkpoint.load(saved)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
