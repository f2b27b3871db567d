"""Training throughput of transformer-mt against its peers, side by side in one run.

On the same Multi30k batches (about 4,000 target tokens each, joint vocabulary of
the prepared directory) it times full training steps (forward, label-smoothed loss,
backward, Adam) of one architecture implemented three ways:

  ours         transformer_mt.model.Transformer with the trainer's objective
               (train.loss.SmoothedLossObjective: output projection and loss in
               one step over the non-padding rows)
  ours_logits  the same model through full (B, T, V) logits and the peers' loss:
               what the model alone contributes
  torch_nn     torch.nn.Transformer with the same embeddings and optimizer
  marian       Hugging Face MarianMTModel of the same sizes, same optimizer

The peers (and ours_logits) are scored with PyTorch's own label-smoothed
``F.cross_entropy`` (smoothing 0.1, padding ignored), the fastest stock loss
for them (``--peer-loss plain`` uses our reference ``label_smoothed_loss``
instead). The loss definitions differ only in where the smoothing mass goes
(torch: eps/V on every token; ours: eps/(V-1) on the non-gold ones); the work is
the same. It reports target tokens/s, the ratio of ours to each peer, and model
FLOP/s as a fraction of a float32 (and bfloat16) matmul ceiling measured in the
same run.
Systems take turns in rounds so machine noise hits all of them alike.
Every system steps the same torch.optim.Adam: fused (one kernel over all
parameters, as the trainer runs it) unless ``--adam loop`` asks for PyTorch's
per-tensor loop, its CPU default.

    python benchmarks/train_throughput.py --data runs/demo/data --presets small base

Writes benchmarks/results/train_throughput.json. State the allocator with the
figures (LD_PRELOAD is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from peers import marian_config  # benchmarks/ is on sys.path when run as a script
from torch import nn

from transformer_mt.data.dataset import TokenPairs, collate, token_batches
from transformer_mt.inspect.info import count_parameters, flops_per_token
from transformer_mt.model import Transformer, preset
from transformer_mt.model.embeddings import ScaledEmbedding, SinusoidalPositions
from transformer_mt.train.loss import SmoothedLossObjective, label_smoothed_loss
from transformer_mt.vocab import Vocabulary


class TorchNNTransformer(nn.Module):
    """torch.nn.Transformer with our shared scaled embedding and sinusoids."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embedding = ScaledEmbedding(config.vocab_size, d, config.pad_id)
        self.positions = SinusoidalPositions(config.max_positions, d)
        self.dropout = nn.Dropout(config.dropout)
        self.core = nn.Transformer(
            d,
            config.heads,
            config.encoder_layers,
            config.decoder_layers,
            config.d_ff,
            config.dropout,
            batch_first=True,
        )
        # nn.Transformer also drops out attention weights and the feed-forward's
        # inner activations. The paper (and ours, and Marian as set up below)
        # drops out only sub-layer outputs and embeddings: switch the extra sites
        # off so all three systems do the same work.
        for layer in [*self.core.encoder.layers, *self.core.decoder.layers]:
            layer.dropout = nn.Identity()  # between the two feed-forward linears
            for attention in (layer.self_attn, getattr(layer, "multihead_attn", None)):
                if attention is not None:
                    attention.dropout = 0.0

    def embed(self, tokens):
        return self.dropout(self.embedding(tokens) + self.positions(tokens.size(1)))

    def forward(self, src, tgt_in):
        T = tgt_in.size(1)
        causal = nn.Transformer.generate_square_subsequent_mask(T)
        pad = src == self.config.pad_id
        hidden = self.core(
            self.embed(src),
            self.embed(tgt_in),
            tgt_mask=causal,
            tgt_is_causal=True,
            src_key_padding_mask=pad,
            memory_key_padding_mask=pad,
        )
        return hidden @ self.embedding.weight.t()


class Marian(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        from transformers import MarianMTModel

        self.config = config
        self.model = MarianMTModel(marian_config(config, dropout=config.dropout))

    def forward(self, src, tgt_in):
        return self.model(
            input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt_in
        ).logits


SYSTEMS = {
    "ours": Transformer,
    "ours_logits": Transformer,
    "torch_nn": TorchNNTransformer,
    "marian": Marian,
}
PEERS = ("torch_nn", "marian")


def peer_loss(kind: str):
    """(logits (B, T, V), target (B, T)) -> summed smoothed loss, padding 0."""
    if kind == "plain":
        return lambda logits, target: label_smoothed_loss(logits, target, 0.1, 0)[0]

    def cross_entropy(logits, target):
        return F.cross_entropy(
            logits.float().flatten(0, 1),
            target.flatten(),
            ignore_index=0,
            label_smoothing=0.1,
            reduction="sum",
        )

    return cross_entropy


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (figures differ a lot between CPUs)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


class Runner:
    """One system: model, optimizer and the timing it has accumulated."""

    def __init__(
        self, name, precision, compiled=False, *, config, loss, fused_adam=True
    ) -> None:
        torch.manual_seed(0)
        self.name, self.precision = name, precision
        self.key = name + ("_bf16" if precision == "bfloat16" else "")
        self.key += "_compiled" if compiled else ""
        self.model = SYSTEMS[name](config).train()
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=1e-4,
            betas=(0.9, 0.98),
            eps=1e-9,
            fused=fused_adam,
        )
        self.objective = None
        if name == "ours":  # exactly what the trainer runs
            self.objective = SmoothedLossObjective(
                self.model, 0.1, compile_features=compiled
            )
        elif compiled:
            self.model = torch.compile(self.model, dynamic=True)
        self.loss = loss
        self.seconds = 0.0
        self.tokens = 0
        self.warm_up_seconds = 0.0

    def step(self, batch) -> None:
        autocast = torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"
        )
        with autocast:
            if self.objective is not None:
                loss, _ = self.objective(batch.src, batch.tgt_in, batch.tgt_out)
            else:
                loss = self.loss(self.model(batch.src, batch.tgt_in), batch.tgt_out)
        (loss / batch.ntokens).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, batches) -> None:
        start = time.perf_counter()
        for batch in batches:
            self.step(batch)
        self.seconds += time.perf_counter() - start
        self.tokens += sum(b.ntokens for b in batches)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def measure(
    preset_name, vocab_size, batches, rounds, per_round, systems, loss, fused_adam
):
    config = preset(preset_name, vocab_size=vocab_size)
    runners = [
        Runner(*system, config=config, loss=loss, fused_adam=fused_adam)
        for system in systems
    ]
    for runner in runners:
        start = time.perf_counter()
        runner.step(batches[0])  # warm-up: allocator, kernels, compilation
        runner.step(batches[-1])  # a second shape: no recompilation after this
        runner.warm_up_seconds = time.perf_counter() - start
    for r in range(rounds):
        chunk = batches[r * per_round : (r + 1) * per_round]
        for runner in runners:
            runner.timed(chunk)
    counts = count_parameters(config)
    non_embedding = counts["total"] - counts["embedding"] - counts["positions"]
    mean_len = sum(b.tgt_out.size(1) for b in batches) / len(batches)
    per_token = flops_per_token(config, non_embedding, int(mean_len))["training"]
    rows = {}
    for runner in runners:
        rows[runner.key] = {
            "warm_up_seconds": runner.warm_up_seconds,
            "target_tokens_per_s": runner.tokens_per_s,
            "model_flops_per_s": runner.tokens_per_s * per_token,
            "steps": runner.tokens and rounds * per_round,
        }
    return {"preset": preset_name, "parameters": counts["total"], "systems": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="prepared Multi30k directory")
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=4600,
        help="padded tokens per batch (about 4,000 target tokens)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument(
        "--systems",
        nargs="+",
        default=list(SYSTEMS),
        choices=list(SYSTEMS),
        help="ours and the two peers are always timed",
    )
    parser.add_argument(
        "--peer-loss", choices=["cross_entropy", "plain"], default="cross_entropy"
    )
    parser.add_argument(
        "--compile",
        nargs="*",
        default=[],
        metavar="PRESET",
        help="presets for which our model is also timed under torch.compile "
        "(peers stay eager)",
    )
    parser.add_argument(
        "--adam",
        choices=["fused", "loop"],
        default="fused",
        help="torch.optim.Adam implementation, the same for every system "
        "(fused: what the trainer uses)",
    )
    parser.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = TokenPairs(args.data, "train")
    vocab = Vocabulary.load(Path(args.data) / "spm.model")
    order = token_batches(
        data.src_lens, data.tgt_lens, args.max_tokens, seed=1, epoch=1
    )
    batches = [collate(data, ids) for ids in order[: args.rounds * args.per_round]]
    ceilings = {
        "float32": matmul_ceiling(torch.float32),
        "bfloat16": matmul_ceiling(torch.bfloat16),
    }
    names = ["ours", *(n for n in args.systems if n not in ("ours", *PEERS)), *PEERS]
    systems = [(name, precision) for precision in args.precisions for name in names]
    compiled = [("ours", precision, True) for precision in args.precisions]
    results = []
    for name in args.presets:
        result = measure(
            name,
            len(vocab),
            batches,
            args.rounds,
            args.per_round,
            systems + (compiled if name in args.compile else []),
            peer_loss(args.peer_loss),
            args.adam == "fused",
        )
        rows = result["systems"]
        for key, row in rows.items():
            bf16 = "_bf16" in key
            ceiling = ceilings["bfloat16" if bf16 else "float32"]
            row["fraction_of_matmul_ceiling"] = row["model_flops_per_s"] / ceiling
            ours = rows["ours_bf16" if bf16 else "ours"]["target_tokens_per_s"]
            row["ours_same_precision_over_this"] = ours / row["target_tokens_per_s"]
        # ours (eager or compiled, either precision) over the faster eager peer
        # of the same precision
        result["ours_over_faster_peer"] = {
            key: row["target_tokens_per_s"]
            / max(
                rows[peer + ("_bf16" if "_bf16" in key else "")]["target_tokens_per_s"]
                for peer in PEERS
            )
            for key, row in rows.items()
            if key.startswith("ours")
        }
        print(json.dumps(result["ours_over_faster_peer"]), flush=True)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    report = {
        "threads": args.threads,
        "peer_loss": args.peer_loss,
        "adam": args.adam,
        "malloc_conf": os.environ.get("MALLOC_CONF", ""),
        "allocator": os.environ.get("LD_PRELOAD") or "glibc",
        "mean_target_tokens_per_batch": sum(b.ntokens for b in batches) / len(batches),
        "matmul_ceiling_flops_per_s": ceilings,
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
