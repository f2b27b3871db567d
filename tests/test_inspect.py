"""Attention maps, training curves, model facts and the TensorBoard copy."""

import json
import math
import struct
import sys

import pytest
import torch

from transformer_mt import checkpoint
from transformer_mt.errors import TransformerMTError
from transformer_mt.inspect import (
    attention_maps,
    model_facts,
    plot_attention,
    plot_metrics,
    read_metrics,
)
from transformer_mt.inspect.info import count_parameters
from transformer_mt.model import Transformer
from transformer_mt.train.config import TrainConfig
from transformer_mt.train.trainer import train
from transformer_mt.vocab import Vocabulary

from .conftest import run_cli, tiny_config, tiny_model

SENTENCE = "word3 other2 thing word17"


@pytest.fixture(scope="module")
def vocab():
    sentences = [f"word{i % 50} other{i % 7} thing" for i in range(400)]
    return Vocabulary.train(sentences, size=40, model_type="bpe")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, vocab):
    path = tmp_path_factory.mktemp("inspect") / "ckpt"
    return checkpoint.save(
        path, tiny_model(), vocab, {"src_lang": "de", "tgt_lang": "en"}
    )


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_metrics(path, steps, bleu=True, lr_scale=1.0):
    lines = []
    for step in steps:
        loss = 5.0 / math.sqrt(step)
        lines.append(
            {"kind": "train", "step": step, "epoch": 1, "loss": loss, "nll": loss,
             "ppl": math.exp(loss), "lr": lr_scale * 1e-3 / math.sqrt(step),
             "tokens_per_s": 900.0, "grad_norm": 1.0, "elapsed": 2.0 * step}
        )  # fmt: skip
        if step % 4 == 0:
            valid = {"kind": "valid", "step": step, "elapsed": 2.0 * step,
                     "valid_loss": loss + 0.2, "valid_nll": loss,
                     "valid_ppl": math.exp(loss)}  # fmt: skip
            if bleu:
                valid["valid_bleu"] = 3.0 * step
            lines.append(valid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


# ---- attention ------------------------------------------------------------------


def last_input(module, store, name):
    """Keep the first positional input of ``module``'s latest call."""

    def hook(mod, args):
        store[name] = args[0]

    return module.register_forward_pre_hook(hook)


def check_attention(attention, weights, query, source, context, causal=False):
    """Recompute one attention from its inputs with the layer's own projections:
    softmax(Q K^T / sqrt(d_k)) must equal ``weights`` (H, T, S), and those
    weights applied to V must give the ``context`` (1, T, D) the layer projected
    out."""
    H, T, S = weights.shape
    with torch.no_grad():
        q = attention.split_heads(attention.q_proj(query))[0]  # (H, T, D/H)
        k = attention.split_heads(attention.k_proj(source))[0]  # (H, S, D/H)
        v = attention.split_heads(attention.v_proj(source))[0]  # (H, S, D/H)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (H, T, S)
        if causal:
            future = torch.ones(T, S, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        applied = (weights @ v).transpose(0, 1).reshape(T, -1)  # (T, D)
    torch.testing.assert_close(weights, scores.softmax(-1))
    torch.testing.assert_close(applied, context[0])


def test_attention_weights_are_the_ones_the_model_used(saved):
    ckpt = checkpoint.load(saved)
    model = ckpt.build_model()  # post-norm: a sub-layer's input is its layer's
    enc, dec = model.encoder_layers[-1], model.decoder_layers[-1]
    seen = {}
    hooks = [
        last_input(enc, seen, "encoder input"),
        last_input(dec, seen, "decoder input"),
        last_input(enc.self_attention.out_proj, seen, "encoder context"),
        last_input(dec.self_attention.out_proj, seen, "decoder context"),
        last_input(dec.cross_attention.out_proj, seen, "cross context"),
    ]
    maps = attention_maps(model, ckpt.vocab, SENTENCE)
    for hook in hooks:
        hook.remove()

    S, T = len(maps.src_pieces), len(maps.tgt_pieces)
    assert maps.src_pieces[-1] == "</s>" and maps.tgt_input_pieces[0] == "<s>"
    assert maps.tgt_pieces[:-1] == maps.tgt_input_pieces[1:]
    for kind, shape in (("encoder", (4, S, S)), ("decoder", (4, T, T))):
        assert [tuple(w.shape) for w in maps.layers(kind)] == [shape, shape]
    assert [tuple(w.shape) for w in maps.cross] == [(4, T, S)] * 2
    for weights in maps.encoder + maps.decoder + maps.cross:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.all(maps.decoder[0].triu(1) == 0)  # no look at later positions

    x_enc, x_dec = seen["encoder input"], seen["decoder input"]
    check_attention(
        enc.self_attention, maps.encoder[-1], x_enc, x_enc, seen["encoder context"]
    )
    check_attention(
        dec.self_attention,
        maps.decoder[-1],
        x_dec,
        x_dec,
        seen["decoder context"],
        causal=True,
    )
    with torch.no_grad():
        memory = model.encode(torch.tensor([maps.src_ids]))[0]  # (1, S, D)
        self_out = dec.self_attention.out_proj(seen["decoder context"])
        cross_query = dec.self_residual.norm(x_dec + self_out)  # (1, T, D)
    check_attention(
        dec.cross_attention, maps.cross[-1], cross_query, memory, seen["cross context"]
    )


def test_teacher_forced_pass_reproduces_the_greedy_translation(saved):
    ckpt = checkpoint.load(saved)
    model = ckpt.build_model()
    maps = attention_maps(model, ckpt.vocab, SENTENCE)
    src = torch.tensor([maps.src_ids])
    tgt_in = torch.tensor([[ckpt.vocab.bos_id, *maps.tgt_ids[:-1]]])
    with torch.no_grad():
        logits = model(src, tgt_in)[0]  # (T, V)
    logits[:, [ckpt.vocab.pad_id, ckpt.vocab.bos_id]] = float("-inf")
    # the last step may be EOS forced by the length limit; every other is argmax
    assert logits.argmax(-1)[:-1].tolist() == maps.tgt_ids[:-1]


def test_attention_figures_have_a_panel_per_kind_and_head(saved, tmp_path):
    ckpt = checkpoint.load(saved)
    maps = attention_maps(ckpt.build_model(), ckpt.vocab, SENTENCE)
    every = plot_attention(maps, tmp_path / "all.png")
    assert png_size(every) == (4 * 400, 3 * 400)
    one = plot_attention(maps, tmp_path / "cross.png", "cross", layer=1, head=2)
    assert png_size(one) == (400, 400)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(layer=3), r"layer=3: the encoder self-attention has layers 1 to 2"),
        (dict(head=5), r"head=5: the model has heads 1 to 4"),
        (dict(kind="values"), r"kind='values': use encoder, decoder, cross or all"),
        (dict(out="maps.jpg"), r"maps.jpg: unknown image format '.jpg'"),
    ],
)
def test_attention_selection_errors(saved, tmp_path, options, message):
    ckpt = checkpoint.load(saved)
    maps = attention_maps(ckpt.build_model(), ckpt.vocab, SENTENCE)
    out = tmp_path / options.pop("out", "maps.png")
    with pytest.raises(TransformerMTError, match=message):
        plot_attention(maps, out, **options)
    assert not out.exists()


def test_attention_cli(saved, tmp_path):
    out = tmp_path / "heads.png"
    result = run_cli(
        "attention", "--checkpoint", saved, "--text", SENTENCE, "--out", out,
        "--kind", "encoder", "--layer", "2",
    )  # fmt: skip
    assert result.stdout.decode().strip() == str(out)
    assert png_size(out) == (4 * 400, 400)
    empty = run_cli(
        "attention", "--checkpoint", saved, "--text", " ", "--out", out, check=False
    )
    assert empty.returncode == 1
    assert empty.stderr.decode() == (
        "transformer-mt attention: error: the text to translate is empty\n"
    )


# ---- training curves ------------------------------------------------------------


def test_curves_of_several_runs(tmp_path):
    a = write_metrics(tmp_path / "a" / "metrics.jsonl", range(1, 21))
    b = write_metrics(tmp_path / "b.jsonl", range(1, 13), bleu=False, lr_scale=2)
    by_step = plot_metrics([a, b], tmp_path / "steps.png")
    by_time = plot_metrics([a, b], tmp_path / "time.png", x="time")
    assert png_size(by_step) == png_size(by_time) == (1200, 800)
    assert by_step.read_bytes() != by_time.read_bytes()
    records = read_metrics(a)
    assert [r["kind"] for r in records[:5]] == ["train"] * 4 + ["valid"]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"kind": "train", "step": 1, "elapsed": 1}\n{"kind": tr\n',
            r"m.jsonl:2: not a JSON line",
        ),
        ("\n[1, 2]\n", r"m.jsonl:2: expected a JSON object"),
        (
            '{"kind": "valid", "elapsed": 1}\n',
            r"m.jsonl:1: a valid record needs a number 'step', got None",
        ),
        ('{"kind": "other", "step": 1}\n', r"m.jsonl: holds no train or valid records"),
        (b"\xff\xfe\n", r"m.jsonl:1: not a JSON line \(not UTF-8\)"),
    ],
)  # fmt: skip
def test_bad_metrics_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "m.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(TransformerMTError, match=message):
        read_metrics(path)


def test_plot_and_info_option_errors(tmp_path):
    good = write_metrics(tmp_path / "m.jsonl", range(1, 5))
    with pytest.raises(TransformerMTError, match=r"x='wall': use step or time"):
        plot_metrics([good], tmp_path / "c.png", x="wall")
    with pytest.raises(TransformerMTError, match=r"at least one metrics.jsonl"):
        plot_metrics([], tmp_path / "c.png")
    with pytest.raises(TransformerMTError, match=r"batch_tokens=0 .* must be >= 1"):
        model_facts(tiny_config(), batch_tokens=0)


def test_plot_cli_errors_are_one_line(tmp_path):
    good = write_metrics(tmp_path / "run" / "metrics.jsonl", range(1, 9))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "not json\n")
    for args, message in (
        ([tmp_path / "missing.jsonl"], "missing.jsonl: no such metrics file"),
        ([good, bad], "bad.jsonl:11: not a JSON line"),
    ):
        result = run_cli("plot", *args, "--out", tmp_path / "c.png", check=False)
        stderr = result.stderr.decode()
        assert result.returncode == 1 and message in stderr
        assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "c.png").exists()
    run_cli("plot", good, "--out", tmp_path / "c.png", "--x", "time")
    assert png_size(tmp_path / "c.png") == (1200, 800)


# ---- model facts ----------------------------------------------------------------


def hand_count(V, D, F, n_enc, n_dec, pre_norm=False, learned=0):
    attention = 4 * (D * D + D)
    feed_forward = D * F + F + F * D + D
    norm = 2 * D
    encoder = n_enc * (attention + feed_forward + 2 * norm) + pre_norm * norm
    decoder = n_dec * (2 * attention + feed_forward + 3 * norm) + pre_norm * norm
    return {
        "embedding": V * D,
        "positions": learned * D,
        "encoder": encoder,
        "decoder": decoder,
        "total": V * D + learned * D + encoder + decoder,
    }


@pytest.mark.parametrize(
    "overrides, extra",
    [
        ({}, {}),
        (
            dict(norm="pre", positions="learned", decoder_layers=3),
            dict(pre_norm=True, learned=128),
        ),
    ],
)
def test_parameter_counts_match_the_model_and_a_hand_formula(overrides, extra):
    config = tiny_config(**overrides)
    counts = count_parameters(config)
    assert counts["total"] == Transformer(config).num_parameters()
    n_dec = overrides.get("decoder_layers", 2)
    assert counts == hand_count(40, 32, 64, 2, n_dec, **extra)


def test_flops_and_memory_follow_the_stated_formulas():
    config = tiny_config()
    facts = model_facts(config, batch_tokens=100, seq_len=10)
    N = facts.non_embedding
    by_hand = hand_count(40, 32, 64, 2, 2)
    assert N == by_hand["encoder"] + by_hand["decoder"]
    forward = 2 * N + 2 * 32 * 40 + 4 * 32 * 10 * (2 + 2 * 2)
    assert facts.flops_per_token["training"] == 3 * forward
    assert facts.flops_per_token["inference"] == 2 * N + 2 * 32 * 40 + 4 * 32 * 10 * 5
    P = facts.parameters["total"]
    per_token = 2 * (6 * 32 + 4 * 10 + 2 * 32 + 2 * 64) + 2 * (
        2 * (6 * 32 + 4 * 10) + 2 * 32 + 2 * 64
    )
    per_token += 2 * 32 + 2 * 40
    assert facts.memory_bytes == {
        "weights": 4 * P,
        "gradients": 4 * P,
        "adam_moments": 8 * P,
        "activations": 4 * 100 * per_token,
        "total": 16 * P + 400 * per_token,
    }


def test_info_cli(saved):
    table = run_cli("info", "--preset", "base", "--vocab-size", "37000")
    text = table.stdout.decode()
    assert "preset base" in text and "63,082,496" in text  # the paper: 65M
    report = json.loads(run_cli("info", "--checkpoint", saved, "--json").stdout)
    assert report["parameters"]["total"] == tiny_model().num_parameters()
    assert report["config"]["d_model"] == 32
    small = json.loads(
        run_cli("info", "--preset", "tiny", "--heads", "2", "--json").stdout
    )
    assert small["config"]["heads"] == 2 and small["source"].endswith("overrides)")
    both = run_cli("info", "--checkpoint", saved, "--preset", "big", check=False)
    assert both.returncode == 1 and both.stderr.decode() == (
        "transformer-mt info: error: give --checkpoint alone, or --preset with "
        "model flags\n"
    )


# ---- TensorBoard ----------------------------------------------------------------


def test_tensorboard_gets_the_metrics_of_metrics_jsonl(reverse_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    config = TrainConfig(
        max_steps=3, max_tokens=300, warmup=10, log_every=1, valid_every=0,
        valid_bleu_sentences=4, threads=1, device="cpu", tensorboard=True,
    )  # fmt: skip
    train(config, tiny_config(), reverse_data, tmp_path / "run")
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    board = EventAccumulator(str(events[0].parent))
    board.Reload()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train_loss = [r["loss"] for r in records if r["kind"] == "train"]
    logged = board.Scalars("train/loss")
    assert [e.step for e in logged] == [1, 2, 3]
    assert [e.value for e in logged] == pytest.approx(train_loss, rel=1e-6)
    valid = [r for r in records if r["kind"] == "valid"]
    assert [e.value for e in board.Scalars("valid/bleu")] == pytest.approx(
        [valid[-1]["valid_bleu"]]
    )


def test_tensorboard_missing_is_a_clear_error(monkeypatch, reverse_data, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    config = TrainConfig(max_steps=1, threads=1, device="cpu", tensorboard=True)
    with pytest.raises(TransformerMTError, match=r"--tensorboard needs the tensorb"):
        train(config, tiny_config(), reverse_data, tmp_path / "run")
