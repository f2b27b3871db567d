"""The command line end to end on a slice of Multi30k, and its one-line errors."""

import gzip
import json

import pytest
import sacrebleu

from .conftest import run_cli, write_lines


@pytest.fixture(scope="module")
def trained(multi30k_slice, tmp_path_factory):
    """prepare -> train a few steps -> average, through the real CLI."""
    root = tmp_path_factory.mktemp("e2e")
    f = multi30k_slice
    data, run = root / "data", root / "run"
    result = run_cli(
        "prepare",
        "--src-lang",
        "de",
        "--tgt-lang",
        "en",
        "--train-src",
        f["train", "de"],
        "--train-tgt",
        f["train", "en"],
        "--valid-src",
        f["valid", "de"],
        "--valid-tgt",
        f["valid", "en"],
        "--test-src",
        f["test", "de"],
        "--test-tgt",
        f["test", "en"],
        "--out",
        data,
        "--vocab-size",
        "1000",
    )
    assert json.loads(result.stdout)["train"]["pairs"] > 2900
    result = run_cli(
        "train",
        "--data",
        data,
        "--save-dir",
        run,
        "--preset",
        "tiny",
        "--max-steps",
        "12",
        "--valid-every",
        "4",
        "--keep-last",
        "3",
        "--max-tokens",
        "1500",
        "--warmup",
        "50",
        "--log-every",
        "4",
        "--valid-bleu-sentences",
        "20",
    )
    summary = json.loads(result.stdout)
    assert summary["step"] == 12 and "valid_bleu" in summary
    log = result.stderr.decode()
    assert "tok/s" in log and "lr" in log and "eta" in log and "GiB" in log
    run_cli("average", "--run", run, "--last", "3")
    return data, run


def test_end_to_end_prepare_train_average_translate_evaluate(trained, tmp_path):
    data, run = trained
    names = sorted(p.name for p in run.iterdir())
    assert names == [
        "averaged",
        "best",
        "checkpoint_000004",
        "checkpoint_000008",
        "checkpoint_000012",
        "metrics.jsonl",
    ]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "valid"}
    assert all(r["rss_bytes"] > 2**20 for r in records if r["kind"] == "train")
    text = "Ein Hund läuft.\n\n   \nZwei Männer spielen.\n".encode()
    result = run_cli("translate", "--checkpoint", run, "--beam-size", "2", stdin=text)
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[2] == "" and lines[4] == ""
    result = run_cli(
        "evaluate",
        "--checkpoint",
        run / "averaged",
        "--data",
        data,
        "--strategy",
        "greedy",
        "--max-len-b",
        "10",
    )
    scores = json.loads(result.stdout)
    assert scores["sentences"] == 100 and scores["bleu_signature"].startswith("nrefs:1")
    assert "chrf" in scores


def test_nbest_and_file_scoring(trained, tmp_path):
    data, run = trained
    result = run_cli(
        "translate",
        "--checkpoint",
        run,
        "--beam-size",
        "3",
        "--nbest",
        "3",
        stdin=b"Ein Hund.\n",
    )
    rows = [line.split("\t") for line in result.stdout.decode().splitlines()]
    assert [r[0] for r in rows] == ["0", "0", "0"]
    assert [float(r[1]) for r in rows] == sorted(
        (float(r[1]) for r in rows), reverse=True
    )
    hyps = ["a dog runs in the park .", "two men play football on grass ."]
    refs = ["a dog runs in the park .", "two women play football on the grass ."]
    hyp, ref = write_lines(tmp_path / "hyp", hyps), write_lines(tmp_path / "ref", refs)
    scores = json.loads(run_cli("evaluate", "--hyp", hyp, "--ref", ref).stdout)
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert 0 < scores["bleu"] < 100


def assert_one_line_error(result, pattern):
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("transformer-mt ") and "error:" in last
    import re

    assert re.search(pattern, last), last


def test_mismatched_line_counts(tmp_path):
    a = write_lines(tmp_path / "a.de", ["eins", "zwei", "drei"])
    b = write_lines(tmp_path / "b.en", ["one", "two"])
    result = run_cli(
        "prepare",
        "--train-src",
        a,
        "--train-tgt",
        b,
        "--out",
        tmp_path / "o",
        check=False,
    )
    assert_one_line_error(result, r"a\.de has 3 lines but .*b\.en has 2")


def test_invalid_utf8_in_training_and_translation_input(tmp_path, trained):
    a = tmp_path / "a.de.gz"
    a.write_bytes(gzip.compress(b"gut\n\xc3\x28 kaputt\n"))
    b = write_lines(tmp_path / "b.en", ["good", "broken"])
    result = run_cli(
        "prepare",
        "--train-src",
        a,
        "--train-tgt",
        b,
        "--out",
        tmp_path / "o",
        check=False,
    )
    assert_one_line_error(result, r"a\.de\.gz:2: invalid UTF-8")
    result = run_cli(
        "translate", "--checkpoint", trained[1], stdin=b"ok\n\xff\n", check=False
    )
    assert_one_line_error(result, r"<stdin>:2: invalid UTF-8")


def test_missing_file(tmp_path):
    result = run_cli(
        "prepare",
        "--train-src",
        tmp_path / "nope.de",
        "--train-tgt",
        tmp_path / "nope.en",
        "--out",
        tmp_path / "o",
        check=False,
    )
    assert_one_line_error(result, r"nope\.de: no such file")
    result = run_cli(
        "translate", "--checkpoint", tmp_path / "nothing", stdin=b"x\n", check=False
    )
    assert_one_line_error(result, r"nothing: no such checkpoint")


def test_checkpoint_from_another_vocabulary(tmp_path, trained):
    data, run = trained
    other = tmp_path / "other"
    src = write_lines(tmp_path / "s", [f"wort{i} haus" for i in range(200)])
    tgt = write_lines(tmp_path / "t", [f"word{i} house" for i in range(200)])
    run_cli(
        "prepare",
        "--train-src",
        src,
        "--train-tgt",
        tgt,
        "--out",
        other,
        "--vocab-size",
        "60",
        "--vocab-type",
        "bpe",
    )
    result = run_cli(
        "evaluate",
        "--checkpoint",
        run,
        "--data",
        other,
        "--split",
        "train",
        check=False,
    )
    assert_one_line_error(result, r"split 'train' was not prepared|another vocabulary")
    result = run_cli(
        "train",
        "--data",
        other,
        "--save-dir",
        run,
        "--resume",
        "--max-steps",
        "13",
        check=False,
    )
    assert_one_line_error(
        result, r"trained with another vocabulary than data directory"
    )


def test_bad_flag_values_are_one_line_errors(tmp_path, trained):
    data, run = trained
    result = run_cli(
        "translate", "--checkpoint", run, "--beam-size", "0", stdin=b"x\n", check=False
    )
    assert_one_line_error(result, r"beam_size=0 must be >= 1")
    result = run_cli(
        "train",
        "--data",
        data,
        "--save-dir",
        tmp_path / "r",
        "--d-model",
        "30",
        "--heads",
        "4",
        check=False,
    )
    assert_one_line_error(result, r"d_model=30 must be divisible by heads=4")
