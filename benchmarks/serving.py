"""Throughput of `rft-jax serve` under 1, 8 and 32 concurrent clients (requests/s and completion tokens/s).

    python benchmarks/serving.py                      # SmolLM2-135M, ~3-4 minutes on a 2-core CPU
    python benchmarks/serving.py --seconds 10 --clients 1,4

The server runs in this process on a loopback port (the real HTTP stack and the
official `openai` client, one thread per client); each client sends chat
requests back to back for --seconds. A warm-up pass first compiles the jitted
shapes, so compile time is not counted. Expected (2-core CPU, SmolLM2-135M,
float32): a few requests/s and tens of tokens/s, rising with concurrency.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import platform
import threading
import time

QUESTIONS = [
    "What is the capital of France?", "Give me three tips for better sleep.", "Explain photosynthesis briefly.",
    "Write a haiku about the sea.", "What is 17 times 23?", "Name a famous painting and its painter.",
    "How do I boil an egg?", "Summarise the plot of Cinderella in two sentences.",
]


def run_level(client, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    totals = {"requests": 0, "tokens": 0, "latency": 0.0}

    def worker(k: int) -> None:
        i = k
        while True:  # at least one request each, so seconds=0 is a warm-up burst
            start = time.monotonic()
            out = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                max_tokens=max_tokens, temperature=0.7, seed=i)
            with lock:
                totals["requests"] += 1
                totals["tokens"] += out.usage.completion_tokens
                totals["latency"] += time.monotonic() - start
            i += clients
            if time.monotonic() >= stop_at:
                break

    begin = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    elapsed = time.monotonic() - begin
    n = max(totals["requests"], 1)
    return {"clients": clients, "requests": totals["requests"], "seconds": elapsed,
            "req_s": totals["requests"] / elapsed, "tok_s": totals["tokens"] / elapsed,
            "mean_latency_s": totals["latency"] / n, "mean_tokens": totals["tokens"] / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--seconds", type=float, default=40.0, help="measured time per concurrency level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--max-context", type=int, default=512)
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    import openai

    from rft_jax.serving import BackgroundServer, make_app
    from rft_jax.serving.loading import load_served_model

    t0 = time.monotonic()
    served = load_served_model(args.model, slots=args.slots, max_context=args.max_context)
    engine = served.engine.start()
    print(f"loaded {served.name} in {time.monotonic() - t0:.1f}s; {args.slots} slots x {args.max_context} tokens")
    try:
        with BackgroundServer(make_app(engine, served.tokenizer, served.name)) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)
            t0 = time.monotonic()
            for burst in (1, 2, 4, 8, 16, 32)[: max(levels).bit_length() + 1]:  # compile the batch shapes
                run_level(client, served.name, burst, 0.0, 4)
            print(f"warm-up (compilation) {time.monotonic() - t0:.1f}s")
            rows = [run_level(client, served.name, c, args.seconds, args.max_tokens) for c in levels]
    finally:
        engine.stop()
    print(f"\n{datetime.date.today()} {platform.processor() or platform.machine()}, model {served.name}, "
          f"max_tokens {args.max_tokens}, temperature 0.7")
    print("| clients | requests | req/s | tok/s | mean latency (s) | mean tokens/request |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['req_s']:.2f} | {r['tok_s']:.1f} | "
              f"{r['mean_latency_s']:.2f} | {r['mean_tokens']:.1f} |")


if __name__ == "__main__":
    from rft_jax.hugepages import reexec_with_hugepages  # noqa: PLC0415

    reexec_with_hugepages()  # the same setting as the `rft-jax` commands (rft_jax/hugepages.py)
    main()
