"""The Multi30k recipe: prepare, train on a wall-clock budget, average, translate
test_2016_flickr with beam search, and score with sacreBLEU.

    python benchmarks/multi30k.py --src de --tgt en --minutes 60
    python benchmarks/multi30k.py --src en --tgt de --minutes 60

Model selection uses the validation set only (validation BLEU picks how many
final checkpoints to average, then the beam size and length penalty); the test set
is translated once at the end.
Each stage runs the real CLI, so the commands in the JSON are the recipe.
Writes benchmarks/results/multi30k_SRC-TGT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def cli(*args: str, capture: bool = True) -> str:
    command = [sys.executable, "-m", "transformer_mt", *map(str, args)]
    print("$ transformer-mt " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    result = subprocess.run(
        command, check=True, text=True, stdout=subprocess.PIPE if capture else None
    )
    return result.stdout or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--data-dir", default=str(SHARED))
    parser.add_argument("--work", default="runs/multi30k")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--average", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for training (0: all); 1 when both directions share "
        "the machine",
    )
    parser.add_argument(
        "--train-flags",
        default="--preset small --dropout 0.2 --max-tokens 4096 --warmup 800 "
        "--lr-scale 0.7 --valid-every 500 --save-every 100 --keep-last 10 "
        "--log-every 100",
    )
    args = parser.parse_args()
    pair = f"{args.src}-{args.tgt}"
    work = Path(args.work) / pair
    data, run = work / "data", work / "model"

    if not (data / "data.json").exists():
        cli(
            "prepare",
            "--dataset",
            "multi30k",
            "--data-dir",
            args.data_dir,
            "--src-lang",
            args.src,
            "--tgt-lang",
            args.tgt,
            "--vocab-size",
            args.vocab_size,
            "--out",
            data,
        )
    train_args = [
        "train",
        "--data",
        data,
        "--save-dir",
        run,
        "--resume",
        "--max-time",
        f"{args.minutes}m",
        "--precision",
        args.precision,
        "--threads",
        args.threads,
        *args.train_flags.split(),
    ]
    started = time.monotonic()
    summary = json.loads(cli(*train_args).strip().splitlines()[-1])

    # Pick how many final checkpoints to average on the validation split.
    candidates = {}
    for n in args.average:
        out = work / f"avg{n}"
        cli("average", "--run", run, "--last", n, "--out", out)
        scores = json.loads(
            cli("evaluate", "--checkpoint", out, "--data", data, "--split", "valid")
        )
        candidates[n] = scores["bleu"]
    best_n = max(candidates, key=candidates.get)
    chosen = work / f"avg{best_n}"
    # ... and the beam size and length penalty, also on the validation split.
    decoding = {(4, 0.6): candidates[best_n]}  # the setting used above
    for beam, penalty in ((4, 1.0), (8, 0.6), (8, 1.0)):
        scores = json.loads(
            cli(
                *("evaluate", "--checkpoint", chosen, "--data", data),
                *("--split", "valid", "--beam-size", beam),
                *("--length-penalty", penalty),
            )
        )
        decoding[beam, penalty] = scores["bleu"]
    beam, penalty = max(decoding, key=decoding.get)
    hyp = work / "test.hyp"
    test = json.loads(
        cli(
            "evaluate",
            "--checkpoint",
            chosen,
            "--data",
            data,
            "--split",
            "test",
            "--output",
            hyp,
            *("--beam-size", beam, "--length-penalty", penalty),
        )
    )
    lower = json.loads(
        cli("evaluate", "--hyp", hyp, "--ref", data / "test.tgt.txt", "--lowercase")
    )
    info = json.loads(cli("info", "--checkpoint", chosen, "--json"))
    report = {
        "direction": pair,
        "test_bleu": test["bleu"],
        "test_chrf": test["chrf"],
        "test_bleu_lowercase": lower["bleu"],
        "bleu_signature": test["bleu_signature"],
        "valid_bleu_by_average": candidates,
        "averaged_checkpoints": best_n,
        "training_minutes": summary["elapsed"] / 60,
        "steps": summary["step"],
        "wall_minutes": (time.monotonic() - started) / 60,
        "parameters": info.get("parameters", {}).get("total"),
        "train_command": "transformer-mt " + " ".join(map(str, train_args)),
        "valid_bleu_by_beam_and_length_penalty": {
            f"beam {b}, lp {lp}": bleu for (b, lp), bleu in decoding.items()
        },
        "decoding": f"beam {beam}, length penalty {penalty}, max length source + 50",
        "machine": f"{os.cpu_count()} CPU cores",
        "threads": args.threads or os.cpu_count(),
        "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc",
    }
    out = Path("benchmarks/results") / f"multi30k_{pair}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
