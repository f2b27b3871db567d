"""Checkpoints: round trip, atomicity, tampering, versions, averaging."""

import json

import pytest
import torch
from safetensors.torch import load_file

from transformer_mt import checkpoint
from transformer_mt.average import average_checkpoints
from transformer_mt.errors import TransformerMTError
from transformer_mt.files import sha256_of
from transformer_mt.vocab import Vocabulary

from .conftest import tiny_model


@pytest.fixture(scope="module")
def vocab():
    sentences = [f"word{i % 50} other{i % 7} thing" for i in range(400)]
    return Vocabulary.train(sentences, size=40, model_type="bpe")


def save_tiny(path, vocab, seed=0):
    model = tiny_model(seed=seed)
    return checkpoint.save(
        path, model, vocab, {"src_lang": "de", "tgt_lang": "en"}
    ), model


def test_round_trip_gives_identical_outputs(tmp_path, vocab):
    path, model = save_tiny(tmp_path / "ckpt", vocab)
    loaded = checkpoint.load(path)
    restored = loaded.build_model()
    src, tgt = torch.randint(4, 40, (2, 5)), torch.randint(4, 40, (2, 3))
    torch.testing.assert_close(restored(src, tgt), model(src, tgt), rtol=0, atol=0)
    assert loaded.vocab.sha256 == vocab.sha256
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "spm.model",
    ]


def test_tampered_or_truncated_weights_are_refused(tmp_path, vocab):
    path, _ = save_tiny(tmp_path / "ckpt", vocab)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        TransformerMTError, match="checksum mismatch.*truncated or modified"
    ):
        checkpoint.load(path)


def test_newer_format_is_refused(tmp_path, vocab):
    path, _ = save_tiny(tmp_path / "ckpt", vocab)
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["config.json"] = sha256_of(path / "config.json")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TransformerMTError, match="format version 99 is newer"):
        checkpoint.load(path)


def test_half_written_directory_is_never_a_checkpoint(tmp_path, vocab):
    run = tmp_path / "run"
    save_tiny(run / "checkpoint_000010", vocab)
    partial = run / "checkpoint_000020"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)  # killed mid-write
    (run / ".checkpoint_000030.tmp-123").mkdir()
    assert checkpoint.step_checkpoints(run) == [run / "checkpoint_000010"]
    assert checkpoint.resolve(run) == run / "checkpoint_000010"
    with pytest.raises(TransformerMTError, match="holds no complete checkpoint"):
        checkpoint.load(partial)


def test_unwritable_folder_keeps_the_previous_checkpoint(tmp_path, vocab):
    run = tmp_path / "run"
    first, _ = save_tiny(run / "checkpoint_000010", vocab)
    (run / "blocker").write_text("a file where a folder is needed")
    with pytest.raises(TransformerMTError, match="cannot write checkpoint.*untouched"):
        save_tiny(run / "blocker" / "checkpoint_000020", vocab)
    checkpoint.load(first)


def test_averaged_weights_equal_the_mean(tmp_path, vocab):
    paths = [save_tiny(tmp_path / f"c{i}", vocab, seed=i)[0] for i in range(3)]
    out = average_checkpoints(paths, tmp_path / "avg")
    averaged = load_file(out / "model.safetensors")
    weights = [load_file(p / "model.safetensors") for p in paths]
    for name, value in averaged.items():
        mean = sum(w[name].double() for w in weights) / 3
        torch.testing.assert_close(value.double(), mean, rtol=0, atol=1e-7)


def test_averaging_refuses_another_vocabulary(tmp_path, vocab):
    other = Vocabulary.train([f"zz{i} yy{i % 3}" for i in range(300)], 40, "bpe")
    a, _ = save_tiny(tmp_path / "a", vocab)
    b, _ = save_tiny(tmp_path / "b", other)
    with pytest.raises(TransformerMTError, match="another vocabulary"):
        average_checkpoints([a, b], tmp_path / "avg")
