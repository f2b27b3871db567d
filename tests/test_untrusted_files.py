"""Nothing let in: checkpoints that were tampered with, cut short, mixed up or
written by a newer version are refused with a message; nothing is unpickled."""

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest

from transformer_mt import checkpoint
from transformer_mt.errors import TransformerMTError
from transformer_mt.files import sha256_of
from transformer_mt.vocab import Vocabulary

from .conftest import run_cli, tiny_model

PACKAGE = Path(checkpoint.__file__).parent


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.train([f"w{i % 40} v{i % 9} x" for i in range(400)], 40, "bpe")


@pytest.fixture()
def ckpt(tmp_path, vocab):
    return checkpoint.save(tmp_path / "ckpt", tiny_model(), vocab, {"step": 3})


def resign(directory: Path) -> None:
    """Recompute manifest.json, as someone who edits files on purpose would."""
    names = sorted(p.name for p in directory.iterdir() if p.name != "manifest.json")
    sums = {n: sha256_of(directory / n) for n in names}
    (directory / "manifest.json").write_text(json.dumps(sums))


def test_one_flipped_byte_is_refused(ckpt):
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # same size, one weight changed
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(TransformerMTError, match="model.safetensors: checksum mis"):
        checkpoint.load(ckpt)


@pytest.mark.parametrize("name", ["model.safetensors", "spm.model", "config.json"])
def test_truncated_files_are_refused_even_when_resigned(ckpt, name):
    path = ckpt / name
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TransformerMTError, match=f"{name}: checksum mismatch"):
        checkpoint.load(ckpt)
    resign(ckpt)
    with pytest.raises(TransformerMTError, match=re.escape(str(ckpt))):
        checkpoint.load(ckpt)


def test_swapped_vocabulary_is_refused(ckpt):
    other = Vocabulary.train([f"r{i % 40} s{i % 9} t" for i in range(400)], 40, "bpe")
    other.save(ckpt / "spm.model")
    with pytest.raises(TransformerMTError, match="spm.model: checksum mismatch"):
        checkpoint.load(ckpt)
    resign(ckpt)
    with pytest.raises(TransformerMTError, match="spm.model does not match config"):
        checkpoint.load(ckpt)


def test_newer_format_version_is_a_one_line_cli_error(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    resign(ckpt)
    result = run_cli("translate", "--checkpoint", ckpt, stdin=b"a\n", check=False)
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode().splitlines()[-1] == (
        f"transformer-mt translate: error: {ckpt}: checkpoint format version 2 is "
        "newer than this transformer-mt reads (1); upgrade transformer-mt"
    )


class Payload:
    """Unpickling this runs code: it writes the file named ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_pickle_posing_as_weights_is_refused_and_never_run(ckpt, tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.read_text() == "code ran"  # the payload is live
    marker = tmp_path / "marker"
    for name in ("model.safetensors", "optimizer.safetensors"):
        (ckpt / name).write_bytes(pickle.dumps(Payload(marker)))
    resign(ckpt)
    with pytest.raises(TransformerMTError, match="unreadable checkpoint"):
        checkpoint.load(ckpt)
    run_cli("translate", "--checkpoint", ckpt, stdin=b"a\n", check=False)
    assert not marker.exists()


def test_a_pickled_training_state_is_refused_and_never_run(tmp_path, vocab):
    state = {"tensors": {}, "state": {"step": 1}}
    path = checkpoint.save(tmp_path / "c", tiny_model(), vocab, {}, state)
    marker = tmp_path / "marker"
    (path / "optimizer.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    resign(path)
    with pytest.raises(TransformerMTError, match="unreadable optimizer.safetensors"):
        checkpoint.load(path).training_state()
    assert not marker.exists()


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({"/dev/zero": "0"}, "'/dev/zero' points outside the checkpoint"),
        ({"../x": "0"}, "'../x' points outside the checkpoint"),
        (["model.safetensors"], "corrupt manifest"),
        ({"config.json": "0", "spm.model": "0"}, "does not list model.safetensors"),
    ],
)
def test_a_hostile_manifest_is_refused(ckpt, manifest, message):
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TransformerMTError, match=re.escape(message)):
        checkpoint.load(ckpt)


def test_config_that_is_not_json_is_refused(ckpt):
    (ckpt / "config.json").write_text("{'format_version': 1")
    resign(ckpt)
    with pytest.raises(TransformerMTError, match="config.json: corrupt JSON"):
        checkpoint.load(ckpt)


def test_a_plain_directory_is_not_taken_for_a_checkpoint(ckpt, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ckpt, run / "checkpoint_000001")
    (run / "checkpoint_000002").mkdir()
    shutil.copy(ckpt / "config.json", run / "checkpoint_000002")
    assert checkpoint.resolve(run) == run / "checkpoint_000001"


def test_the_package_never_unpickles():
    # safetensors and JSON only: any of these on a user file could run code.
    risky = re.compile(r"torch\.load|pickle|allow_pickle|weights_only|marshal|dill")
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if risky.search(line)
    ]
    assert found == []
