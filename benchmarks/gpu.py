"""Training throughput and model FLOPs utilisation (MFU) of a preset on one GPU.

Measures, in one run: a bfloat16 matmul ceiling (large square matmuls), then full
training steps (forward, backward, Adam) of the chosen preset under bf16 autocast
on random token batches, and reports target tokens/s and achieved FLOP/s as a
fraction of the ceiling.

    python benchmarks/gpu.py --preset base --batch-tokens 25000      # on CUDA
    python benchmarks/gpu.py --device cpu --preset tiny --steps 3    # smoke run

Writes benchmarks/results/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from transformer_mt.model import Transformer, preset
from transformer_mt.train.loss import SmoothedLossObjective


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(
    device: torch.device, dtype: torch.dtype, n: int, repeats: int
) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def training_flops(
    model: Transformer, src_tokens: int, tgt_tokens: int, length: int
) -> float:
    """6 FLOPs per parameter per token (forward 2, backward 4) for the matmul
    weights each side uses, plus attention scores and mixing (QK^T and AV:
    4 * length * d_model per token per attention, times 3 for backward)."""
    c = model.config
    d, ff = c.d_model, c.d_ff
    attention_weights, ffn_weights = 4 * d * d, 2 * d * ff
    enc = c.encoder_layers * (attention_weights + ffn_weights)
    dec = c.decoder_layers * (2 * attention_weights + ffn_weights) + d * c.vocab_size
    mixing = 3 * 4 * length * d
    return (6 * enc + c.encoder_layers * mixing) * src_tokens + (
        6 * dec + 2 * c.decoder_layers * mixing
    ) * tgt_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--batch-tokens", type=int, default=25000)
    parser.add_argument("--length", type=int, default=32, help="tokens per sentence")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16

    ceiling = matmul_ceiling(device, dtype, 8192 if device.type == "cuda" else 1024, 20)
    torch.manual_seed(0)
    model = Transformer(preset(args.preset, vocab_size=args.vocab_size)).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9
    )
    rows = max(args.batch_tokens // args.length, 1)
    src = torch.randint(4, args.vocab_size, (rows, args.length), device=device)
    tgt = torch.randint(4, args.vocab_size, (rows, args.length + 1), device=device)

    objective = SmoothedLossObjective(model, 0.1)  # what the trainer runs

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype):
            loss, _ = objective(src, tgt[:, :-1], tgt[:, 1:])
        (loss / tgt[:, 1:].numel()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    tokens = rows * args.length
    flops = training_flops(model, tokens, tokens, args.length) / seconds
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else "cpu",
        "torch": torch.__version__,
        "preset": args.preset,
        "precision": "bf16 autocast",
        "parameters": model.num_parameters(),
        "batch_target_tokens": tokens,
        "seconds_per_step": seconds,
        "target_tokens_per_s": tokens / seconds,
        "model_flops_per_s": flops,
        "bf16_matmul_ceiling_flops_per_s": ceiling,
        "mfu_vs_measured_ceiling": flops / ceiling,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
