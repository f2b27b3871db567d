"""Export and fast back ends: CTranslate2 and ONNX Runtime give the PyTorch
model's translations; int8 (ours and CTranslate2's) stays close to float32."""

import pytest

from transformer_mt import checkpoint
from transformer_mt.cli import main
from transformer_mt.data.text import read_lines
from transformer_mt.decode import DecodeConfig, Translator
from transformer_mt.errors import TransformerMTError
from transformer_mt.export import ctranslate2 as ct2_export
from transformer_mt.export import onnx as onnx_export
from transformer_mt.export import require
from transformer_mt.export.backends import load_translator
from transformer_mt.train.config import TrainConfig
from transformer_mt.train.trainer import train

from .conftest import tiny_config

GREEDY = DecodeConfig(strategy="greedy")
BEAM = DecodeConfig(strategy="beam", beam_size=4)


@pytest.fixture(scope="module")
def trained(reverse_data, tmp_path_factory):
    """A tiny model trained briefly on reversal, so its outputs are not degenerate,
    with its test sentences and PyTorch greedy/beam translations."""
    run = tmp_path_factory.mktemp("export") / "run"
    config = TrainConfig(
        max_steps=300,
        max_tokens=800,
        warmup=60,
        lr_scale=0.5,
        label_smoothing=0.0,
        valid_every=10_000,
        seed=1,
        threads=1,
    )
    train(config, tiny_config(vocab_size=24), reverse_data, run)
    path = checkpoint.resolve(run)
    texts = read_lines(reverse_data / "test.src.txt")
    torch_greedy = Translator.load(path, strategy="greedy").translate(texts)
    return path, texts, torch_greedy


def agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def test_trained_model_is_not_degenerate(trained, reverse_data):
    _, _, outputs = trained
    references = read_lines(reverse_data / "test.tgt.txt")
    assert agreement(outputs, references) >= 0.5  # most reversals already right


def test_ctranslate2_export_translates_like_pytorch(trained, tmp_path):
    path, texts, torch_greedy = trained
    out = ct2_export.export(path, tmp_path / "ct2", "float32")
    assert (out / "model.bin").is_file() and (out / "spm.model").is_file()
    ct2 = ct2_export.CTranslate2Translator(out, GREEDY, threads=1)
    assert ct2.translate(texts) == torch_greedy


def test_onnx_export_translates_like_pytorch_greedy_and_beam(trained, tmp_path):
    path, texts, torch_greedy = trained
    out = onnx_export.export(path, tmp_path / "onnx")
    onnx_greedy = load_translator("onnx", out, GREEDY, threads=1)
    assert onnx_greedy.translate(texts) == torch_greedy
    torch_beam = Translator.load(path, strategy="beam").translate(texts)
    assert load_translator("onnx", out, BEAM, threads=1).translate(texts) == torch_beam


# Bound for int8: at least 90% of sentences identical to float32 greedy output.
INT8_AGREEMENT = 0.9


def test_int8_stays_close_to_float32(trained, tmp_path):
    path, texts, torch_greedy = trained
    ours = load_translator("torch", path, GREEDY, quantize="int8")
    assert agreement(ours.translate(texts), torch_greedy) >= INT8_AGREEMENT
    out = ct2_export.export(path, tmp_path / "ct2-int8", "int8")
    ct2 = ct2_export.CTranslate2Translator(out, GREEDY, threads=1)
    assert agreement(ct2.translate(texts), torch_greedy) >= INT8_AGREEMENT


def test_backends_export_a_checkpoint_on_the_fly(trained):
    path, texts, torch_greedy = trained
    ct2 = load_translator("ctranslate2", path, GREEDY, threads=1)
    assert ct2.translate(texts[:10] + [""]) == torch_greedy[:10] + [""]


def run_main(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def test_export_errors_are_one_line(trained, tmp_path, capsys):
    path, _, _ = trained
    code, err = run_main(
        capsys,
        "export",
        "--checkpoint",
        tmp_path / "nope",
        "--format",
        "onnx",
        "--out",
        tmp_path / "o",
    )
    assert code == 1 and "no such checkpoint" in err and "\n" not in err
    code, err = run_main(
        capsys,
        "export",
        "--checkpoint",
        path,
        "--format",
        "tflite",
        "--out",
        tmp_path / "o",
    )
    assert code == 1 and "unknown format 'tflite'" in err and "\n" not in err
    code, err = run_main(
        capsys,
        "export",
        "--checkpoint",
        path,
        "--format",
        "ctranslate2",
        "--quantization",
        "int4",
        "--out",
        tmp_path / "o",
    )
    assert code == 1 and "quantization='int4'" in err


def test_unsupported_combinations_are_refused(trained, tmp_path):
    path, _, _ = trained
    with pytest.raises(TransformerMTError, match="onnx backend has no --quantize"):
        load_translator("onnx", path, GREEDY, quantize="int8")
    with pytest.raises(TransformerMTError, match="no model.bin"):
        ct2_export.CTranslate2Translator(tmp_path, GREEDY)
    with pytest.raises(TransformerMTError, match="nbest 1"):
        load_translator("ctranslate2", path, DecodeConfig(nbest=2))
    with pytest.raises(TransformerMTError, match="quantize='int4'"):
        Translator.load(path, quantize="int4")


def test_missing_optional_package_names_the_extra():
    with pytest.raises(TransformerMTError, match=r"transformer-mt\[export\]"):
        require("no_such_engine_package")


def test_translate_cli_compares_backends(trained, reverse_data, tmp_path, capsys):
    path, texts, torch_greedy = trained
    code, _ = run_main(
        capsys,
        "export",
        "--checkpoint",
        path,
        "--format",
        "onnx",
        "--out",
        tmp_path / "onnx",
    )
    assert code == 0
    source = reverse_data / "test.src.txt"
    for backend, checkpoint_dir in (("onnx", tmp_path / "onnx"), ("torch", path)):
        code = main(
            [
                "-q",
                "translate",
                "--checkpoint",
                str(checkpoint_dir),
                "--backend",
                backend,
                "--strategy",
                "greedy",
                "--input",
                str(source),
            ]
        )
        assert code == 0
        assert capsys.readouterr().out.splitlines() == torch_greedy
