"""Training throughput with 1 and 2 data-parallel processes on this machine.

Both runs see the same global batches: one process accumulating 2 batches per
update (2 threads) against two processes of 1 batch each (1 thread each, gloo).

    python benchmarks/scaling.py --data runs/demo/data --steps 40

Writes benchmarks/results/scaling.json; the allocator in use is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from transformer_mt.distributed import local_command


def run(data: str, steps: int, nproc: int, preset: str, max_tokens: int) -> dict:
    save = tempfile.mkdtemp(prefix=f"scaling{nproc}-")
    threads = 2 // nproc
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    train = [
        "train",
        "--data",
        data,
        "--save-dir",
        save,
        "--preset",
        preset,
        "--max-steps",
        str(steps),
        "--max-tokens",
        str(max_tokens),
        "--update-freq",
        str(2 // nproc),
        "--valid-every",
        "0",
        "--valid-bleu-sentences",
        "0",
        "--log-every",
        "5",
        "--warmup",
        "400",
    ]
    if nproc == 1:
        train += ["--threads", "2"]
    command = local_command(nproc, *train)
    subprocess.run(command, check=True, env=env, capture_output=True)
    records = [
        json.loads(x) for x in Path(save, "metrics.jsonl").read_text().splitlines()
    ]
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train"][1:]
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "target_tokens_per_s": sum(speeds) / len(speeds),
        "windows": len(speeds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="prepared data directory")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    args = parser.parse_args()
    results = [
        run(args.data, args.steps, n, args.preset, args.max_tokens) for n in (1, 2)
    ]
    report = {
        "preset": args.preset,
        "max_tokens_per_batch": args.max_tokens,
        "global_batches_per_update": 2,
        "steps": args.steps,
        "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc",
        "cpu_count": os.cpu_count(),
        "results": results,
        "speedup_2_vs_1": results[1]["target_tokens_per_s"]
        / results[0]["target_tokens_per_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
