"""Throughput and latency of `transformer-mt serve` under concurrent clients, with
dynamic batching on and off (off: batch_window_ms=0, max_batch_requests=1).

Each mode starts the server as a subprocess on a loopback port; for 1, 8 and 32
concurrent clients a fixed number of LibreTranslate requests (one sentence each)
is sent and timed. Loopback only; the request count is bounded.

    python benchmarks/serve_load.py --checkpoint runs/demo/model/best

Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TEST_DE = ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
MODES = {
    "batching": [],
    "one_at_a_time": ["--batch-window-ms", "0", "--max-batch-requests", "1"],
}


def sentences(path: Path | None, count: int) -> list[str]:
    from transformer_mt.data.text import read_lines

    source = path or TEST_DE
    lines = [line for line in read_lines(source) if line.strip()]
    return lines[:count]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: str, extra: list[str], threads: int) -> tuple:
    port = free_port()
    command = [sys.executable, "-m", "transformer_mt", "-q", "serve"]
    command += ["--checkpoint", checkpoint, "--port", str(port)]
    command += ["--threads", str(threads), *extra]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start within 120 s")


async def load(url: str, texts: list[str], clients: int, requests: int) -> dict:
    """``clients`` concurrent loops share ``requests`` requests; latency of each."""
    latencies, failures, next_index = [], 0, 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures, next_index
        while next_index < requests:
            text = texts[next_index % len(texts)]
            next_index += 1
            body = {"q": text, "source": "auto", "target": "en"}
            started = time.perf_counter()
            reply = await http.post(f"{url}/translate", json=body)
            latencies.append(time.perf_counter() - started)
            failures += reply.status_code != 200

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": requests,
        "failed": failures,
        "sentences_per_s": round(requests / elapsed, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(
            1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1
        ),
    }


def run_mode(args, name: str, texts: list[str]) -> list[dict]:
    process, url = start_server(args.checkpoint, MODES[name], args.threads)
    try:
        asyncio.run(load(url, texts, 4, 8))  # warm-up
        rows = []
        for clients in args.clients:
            before = httpx.get(f"{url}/health").json()
            row = asyncio.run(load(url, texts, clients, args.requests))
            after = httpx.get(f"{url}/health").json()
            calls = after["batches"] - before["batches"]
            row["mean_batch"] = round(
                (after["requests"] - before["requests"]) / calls, 2
            )
            print(name, json.dumps(row), flush=True)
            rows.append(row)
        return rows
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument(
        "--sentences", type=Path, help="source lines (default Multi30k test)"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="per client level")
    parser.add_argument("--threads", type=int, default=1, help="server torch threads")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/serve_load.json")
    )
    args = parser.parse_args()

    texts = sentences(args.sentences, 256)
    load_before = os.getloadavg()
    results = {name: run_mode(args, name, texts) for name in MODES}
    top = max(args.clients)
    speedup = [
        next(r for r in results[name] if r["clients"] == top)["sentences_per_s"]
        for name in MODES
    ]
    summary = {
        "checkpoint": args.checkpoint,
        "cpus": os.cpu_count(),
        "server_threads": args.threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        f"speedup_at_{top}_clients": round(speedup[0] / speedup[1], 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in list(summary)[-1:]}))


if __name__ == "__main__":
    main()
