"""Decoding speed and quality of every back end on the same checkpoint and data.

    python benchmarks/decode.py --checkpoint runs/demo/model/averaged \
        --data runs/demo/data [--sentences 1000] [--threads 2]

Back ends: ours float32 and int8, CTranslate2 float32 and int8 (from our export),
ONNX Runtime (our export), Hugging Face MarianMTModel.generate on the same weights.
Each runs greedy and beam 4 in batches of 32 sentences on --threads threads, in a
fresh subprocess so that its peak RSS is its own. Writes
benchmarks/results/decode.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("benchmarks.decode")

BACKENDS = ("ours", "ours-int8", "ct2", "ct2-int8", "onnx", "hf-marian")
STRATEGIES = {"greedy": 1, "beam4": 4}
BATCH = 32


def marian_from(ckpt):
    """A MarianMTModel holding our weights: same architecture, post-norm, ReLU,
    shared embeddings, our (interleaved) sinusoid table copied in."""
    import torch
    from peers import marian_config  # benchmarks/ is sys.path[0] for a script
    from transformers import MarianMTModel

    c, vocab = ckpt.model_config, ckpt.vocab
    config = marian_config(c)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (
        config.pad_token_id,
        config.decoder_start_token_id,
        config.eos_token_id,
    )
    hf = MarianMTModel(config).eval()
    _copy_weights(ckpt.build_model(), hf.model, c)
    torch.nn.init.zeros_(hf.final_logits_bias)
    return hf


def _copy_weights(ours, hf, c) -> None:
    import torch

    from transformer_mt.model.embeddings import sinusoid_table

    state = {"shared.weight": ours.embedding.weight}
    table = sinusoid_table(c.max_positions, c.d_model)
    for side in ("encoder", "decoder"):
        state[f"{side}.embed_tokens.weight"] = ours.embedding.weight
        state[f"{side}.embed_positions.weight"] = table
    for i, layer in enumerate(ours.encoder_layers):
        p = f"encoder.layers.{i}."
        state.update(_attention(p + "self_attn.", layer.self_attention))
        state.update(_norm(p + "self_attn_layer_norm.", layer.attention_residual))
        state.update(_ffn(p, layer))
    for i, layer in enumerate(ours.decoder_layers):
        p = f"decoder.layers.{i}."
        state.update(_attention(p + "self_attn.", layer.self_attention))
        state.update(_norm(p + "self_attn_layer_norm.", layer.self_residual))
        state.update(_attention(p + "encoder_attn.", layer.cross_attention))
        state.update(_norm(p + "encoder_attn_layer_norm.", layer.cross_residual))
        state.update(_ffn(p, layer))
    missing, unexpected = hf.load_state_dict(
        {k: v.detach().clone() for k, v in state.items()}, strict=False
    )
    with torch.no_grad():  # positions may be a non-persistent buffer
        for side in (hf.encoder, hf.decoder):
            side.embed_positions.weight.copy_(table)
    assert not unexpected, unexpected
    assert all("embed_positions" in k or "lm_head" in k for k in missing), missing


def _attention(prefix, m) -> dict:
    out = {}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        linear = getattr(m, name)
        out[f"{prefix}{name}.weight"] = linear.weight
        out[f"{prefix}{name}.bias"] = linear.bias
    return out


def _norm(prefix, residual) -> dict:
    return {
        f"{prefix}weight": residual.norm.weight,
        f"{prefix}bias": residual.norm.bias,
    }


def _ffn(prefix, layer) -> dict:
    ff = layer.feed_forward
    return {
        f"{prefix}fc1.weight": ff.linear1.weight,
        f"{prefix}fc1.bias": ff.linear1.bias,
        f"{prefix}fc2.weight": ff.linear2.weight,
        f"{prefix}fc2.bias": ff.linear2.bias,
        **_norm(prefix + "final_layer_norm.", layer.feed_forward_residual),
    }


class MarianRunner:
    def __init__(self, ckpt, beam: int):
        self.model, self.vocab, self.beam = marian_from(ckpt), ckpt.vocab, beam

    def translate(self, texts):
        import torch

        from transformer_mt.data.dataset import source_tensor

        out = []
        for start in range(0, len(texts), BATCH):
            ids = self.vocab.encode_batch(texts[start : start + BATCH])
            src = source_tensor(ids)
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=src,
                    attention_mask=src != self.vocab.pad_id,
                    num_beams=self.beam,
                    do_sample=False,
                    max_new_tokens=int(src.size(1)) + 50,
                    length_penalty=0.6,
                    early_stopping=True,
                )
            out += [self.vocab.decode(row.tolist()) for row in gen]
        return out


def make_runner(backend, strategy, args, tmp):
    from transformer_mt import checkpoint
    from transformer_mt.decode import DecodeConfig
    from transformer_mt.export.backends import load_translator

    beam = STRATEGIES[strategy]
    config = DecodeConfig(
        strategy="beam" if beam > 1 else "greedy",
        beam_size=beam,
        batch_tokens=10**9,  # batches of BATCH sentences, set below
    )
    if backend == "hf-marian":
        return MarianRunner(checkpoint.load(args.checkpoint), beam)
    name, _, quant = backend.partition("-")
    quant = quant or None
    engine = {"ours": "torch", "ct2": "ctranslate2", "onnx": "onnx"}[name]
    path = args.checkpoint
    if engine != "torch":
        path = Path(tmp) / engine
        export_for(engine, args.checkpoint, path)
    return BatchOf(load_translator(engine, path, config, "cpu", args.threads, quant))


def export_for(engine, checkpoint_path, out):
    if engine == "ctranslate2":
        from transformer_mt.export.ctranslate2 import export

        export(checkpoint_path, out, "float32")
    else:
        from transformer_mt.export.onnx import export

        export(checkpoint_path, out)


class BatchOf:
    """Feed a translator length-sorted batches of BATCH sentences."""

    def __init__(self, translator):
        self.translator = translator

    def translate(self, texts):
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [""] * len(texts)
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            for i, text in zip(
                chunk, self.translator.translate([texts[i] for i in chunk])
            ):
                out[i] = text
        return out


def measure(args) -> dict:
    """Run one back end and strategy in this process: the child side."""
    import torch

    from transformer_mt.data.text import read_lines
    from transformer_mt.evaluate import score
    from transformer_mt.vocab import Vocabulary

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    sources = read_lines(data / "test.src.txt")[: args.sentences]
    refs = read_lines(data / "test.tgt.txt")[: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        runner = make_runner(args.backend, args.strategy, args, tmp)
        runner.translate(sources[:BATCH])  # warm-up
        started = time.perf_counter()
        hyps = runner.translate(sources)
        seconds = time.perf_counter() - started
    vocab = Vocabulary.load(data / "spm.model")
    tokens = sum(len(ids) + 1 for ids in vocab.encode_batch(hyps))  # with EOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "backend": args.backend,
        "strategy": args.strategy,
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(sources) / seconds, 1),
        "target_tokens_per_s": round(tokens / seconds, 1),
        "peak_rss_mb": round(rss, 1),
        "bleu": round(score(hyps, refs)["bleu"], 2),
        "hypotheses": hyps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/demo/model/averaged")
    parser.add_argument("--data", default="runs/demo/data")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--out", default="benchmarks/results/decode.json")
    parser.add_argument("--backend", help=argparse.SUPPRESS)  # child process
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.backend:
        print(json.dumps(measure(args)))
        return
    load_before = os.getloadavg()[0]
    rows = [run_child(args, b, s) for s in STRATEGIES for b in args.backends]
    write_report(args, rows, (load_before, os.getloadavg()[0]))


def run_child(args, backend, strategy) -> dict:
    command = [sys.executable, __file__, "--backend", backend, "--strategy", strategy]
    for flag in ("checkpoint", "data", "sentences", "threads"):
        command += [f"--{flag}", str(getattr(args, flag))]
    env_threads = {"OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **env_threads}
    )
    if done.returncode != 0:
        log.error("%s %s failed:\n%s", backend, strategy, done.stderr[-2000:])
        return {"backend": backend, "strategy": strategy, "error": done.stderr[-500:]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    log.info(
        "%s %s: %s",
        backend,
        strategy,
        {k: v for k, v in row.items() if k != "hypotheses"},
    )
    return row


def write_report(args, rows, load) -> None:
    """Add agreement with ours float32 (same strategy) and BLEU deltas; drop texts."""
    reference = {
        r["strategy"]: r for r in rows if r["backend"] == "ours" and "error" not in r
    }
    for row in rows:
        base = reference.get(row["strategy"])
        if base and "hypotheses" in row:
            same = sum(a == b for a, b in zip(row["hypotheses"], base["hypotheses"]))
            row["identical_to_ours_float32"] = round(same / len(base["hypotheses"]), 3)
            row["bleu_minus_ours_float32"] = round(row["bleu"] - base["bleu"], 2)
    for row in rows:
        row.pop("hypotheses", None)
    report = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "sentences": args.sentences,
        "threads": args.threads,
        "batch_sentences": BATCH,
        # 1-minute load average at start and end: above ~0.5 on this 2-core
        # machine, other processes shared the cores and the timings are not clean.
        "load_average_start_end": [round(x, 2) for x in load],
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
