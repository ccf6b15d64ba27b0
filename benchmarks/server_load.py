"""Bounded loopback load on `rft-jax serve` and `rft-jax reward serve`: requests/s, latency, errors, RSS, slow clients.

    python -m benchmarks.server_load --target both --clients 64 --seconds 120 --out runs/server_load

Each server is the real CLI in a subprocess on a free 127.0.0.1 port (so this measures the product).
After /health answers and one untimed warm-up request (the chat server compiles its shapes then),
N client tasks (asyncio, one httpx2.AsyncClient each: the installed httpx fork openai uses) send requests back to back for --seconds:
chat: a short prompt with max_tokens 8; reward: a batch of 8 `math_answer` samples. The server's
RSS (VmRSS) is sampled every 2 s. Memory growth is RSS at the end minus RSS after the warm-up
(the first 20% of the run); over 10% is flagged.

Slow clients: in the middle of the run, for --slow-seconds, one raw socket sends its request
body one byte every --slow-interval s and another sends a request then reads the answer one byte at
a time. The others' p99 while they run is compared with the p99 before; "stalled" means the others
finished nothing during that window, or their p99 rose above max(3x before, before + 1 s).
Expected (2 shared AMD EPYC vCPUs): see benchmarks/RESULTS.md, "Server load".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REWARD_SAMPLES = [{"id": f"s{i}", "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                               {"role": "assistant", "content": f"The answer is {2 * i}."}],
                   "metadata": {"reference_answer": str(2 * i)}} for i in range(8)]
PROMPTS = ["What is 2 + 3?", "Name a colour.", "Say hello.", "What is the capital of France?"]
WARMUP_FRACTION = 0.2
GROWTH_FLAG = 0.10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(target: str, port: int, model: str) -> list[str]:
    cli = [sys.executable, "-m", "rft_jax.cli"]
    if target == "chat":
        return cli + ["serve", "--model", model, "--port", str(port)]
    return cli + ["reward", "serve", "math_answer", "--port", str(port)]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_spec(target: str, model: str) -> tuple[str, dict | list]:
    """(path, JSON body) of one request; the chat body's prompt is varied by the caller."""
    if target == "chat":
        return "/v1/chat/completions", {"model": model, "max_tokens": 8, "temperature": 0.0,
                                        "messages": [{"role": "user", "content": PROMPTS[0]}]}
    return "/score", REWARD_SAMPLES


async def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode} before answering /health")
            try:
                if (await client.get(base + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError(f"the server did not answer {base}/health within {timeout_s} s")


async def client_loop(index: int, base: str, path: str, body, stop_at: float, records: list) -> None:
    """Requests back to back until stop_at; records (start time, latency s, ok, error text)."""
    import httpx2 as httpx

    async with httpx.AsyncClient(base_url=base, timeout=120.0) as client:
        n = 0
        while time.monotonic() < stop_at:
            if isinstance(body, dict):  # chat: vary the prompt
                body = {**body, "messages": [{"role": "user", "content": PROMPTS[(index + n) % len(PROMPTS)]}]}
            n += 1
            start = time.monotonic()
            try:
                response = await client.post(path, json=body)
                ok, why = response.status_code == 200, f"HTTP {response.status_code}"
            except Exception as err:  # noqa: BLE001 - every failure is an error to count
                ok, why = False, f"{type(err).__name__}: {err}"
            records.append((start, time.monotonic() - start, ok, "" if ok else why))


async def slow_body(port: int, path: str, payload: bytes, interval: float, seconds: float) -> str:
    """Send the headers, then the body one byte per interval for `seconds`, then the rest; return the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    sent, stop_at = 0, time.monotonic() + seconds
    while sent < len(payload) - 1 and time.monotonic() < stop_at:
        writer.write(payload[sent:sent + 1])
        await writer.drain()
        sent += 1
        await asyncio.sleep(interval)
    writer.write(payload[sent:])
    await writer.drain()
    status = (await asyncio.wait_for(reader.readline(), 300.0)).decode().strip()
    writer.close()
    return status


async def slow_reader(port: int, path: str, payload: bytes, interval: float, seconds: float) -> str:
    """Send a whole request on a socket with a tiny receive buffer, then read the answer one byte per interval."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    await writer.drain()
    got, stop_at = b"", time.monotonic() + seconds
    while time.monotonic() < stop_at:
        byte = await asyncio.wait_for(reader.read(1), 120.0)
        if not byte:
            break
        got += byte
        await asyncio.sleep(interval)
    while b"\r\n" not in got:  # the window is over: read the status line at full speed
        byte = await asyncio.wait_for(reader.read(1), 300.0)
        if not byte:
            break
        got += byte
    writer.close()
    return got.split(b"\r\n", 1)[0].decode() or "(nothing read)"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(records: list, rss: list, t0: float, seconds: float, slow_window: tuple[float, float]) -> dict:
    warm_end = t0 + WARMUP_FRACTION * seconds
    latencies = [lat for _, lat, _, _ in records]
    errors = [why for _, _, ok, why in records if not ok]
    rss_warm = next((m for t, m in rss if t >= warm_end), rss[-1][1])
    before = [lat for start, lat, _, _ in records if warm_end <= start < slow_window[0]]
    during = [lat for start, lat, _, _ in records if slow_window[0] <= start < slow_window[1]]
    p99_before, p99_during = percentile(before, 0.99), percentile(during, 0.99)
    stalled = not during or p99_during > max(3 * p99_before, p99_before + 1.0)
    growth = rss[-1][1] - rss_warm
    elapsed = max((start + lat for start, lat, _, _ in records), default=t0 + seconds) - t0  # the last request ends after the deadline
    return {"requests": len(records), "requests_per_s": len(records) / elapsed,
            "p50_s": percentile(latencies, 0.50), "p99_s": percentile(latencies, 0.99),
            "errors": len(errors), "error_kinds": sorted(set(errors))[:5],
            "rss_start_mib": rss[0][1], "rss_warm_mib": rss_warm, "rss_end_mib": rss[-1][1],
            "rss_growth_mib": growth, "rss_growth_flag": growth > GROWTH_FLAG * rss_warm,
            "p99_before_slow_s": p99_before, "p99_during_slow_s": p99_during,
            "requests_during_slow": len(during), "stalled": stalled}


async def measure(target: str, base: str, port: int, pid: int, model: str, clients: int, seconds: float,
                  slow_seconds: float, slow_interval: float) -> dict:
    import httpx2 as httpx

    path, body = request_spec(target, model)
    # Untimed warm-up: the chat server compiles its batch shapes on the first concurrent burst.
    burst = min(clients, 16) if target == "chat" else 1
    async with httpx.AsyncClient(base_url=base, timeout=900.0) as client:
        for response in await asyncio.gather(*[client.post(path, json=body) for _ in range(burst)]):
            response.raise_for_status()
    records, rss = [], []
    t0 = time.monotonic()
    stop_at = t0 + seconds

    async def sample_rss():
        while time.monotonic() < stop_at:
            rss.append((time.monotonic(), rss_mib(pid)))
            await asyncio.sleep(2.0)
        rss.append((time.monotonic(), rss_mib(pid)))

    async def slow_phase():
        await asyncio.sleep(max(0.0, seconds / 2 - slow_seconds / 2))
        payload = json.dumps(body).encode()
        return await asyncio.gather(slow_body(port, path, payload, slow_interval, slow_seconds),
                                    slow_reader(port, path, payload, slow_interval, slow_seconds),
                                    return_exceptions=True)

    slow_start = t0 + max(0.0, seconds / 2 - slow_seconds / 2)
    tasks = [client_loop(i, base, path, body, stop_at, records) for i in range(clients)]
    *_, slow_status = await asyncio.gather(sample_rss(), *tasks, slow_phase())
    result = summarise(records, rss, t0, seconds, (slow_start, slow_start + slow_seconds))
    result.update(target=target, clients=clients, seconds=seconds,
                  slow_body_status=str(slow_status[0]), slow_reader_status=str(slow_status[1]))
    return result


def run_target(target: str, *, clients: int, seconds: float, model: str = "smollm2-135m-instruct",
               slow_seconds: float = 20.0, slow_interval: float = 0.5, ready_timeout_s: float = 300.0) -> dict:
    """Start the server's CLI, load it, stop it; returns the summary dict."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix=f"server_load_{target}_", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(server_command(target, port, model), stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(base, proc, ready_timeout_s))
        result = asyncio.run(measure(target, base, port, proc.pid, model, clients, seconds,
                                     slow_seconds, slow_interval))
        result["server_alive"] = proc.poll() is None
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def markdown(results: list[dict]) -> str:
    head = ("| server | clients | s | requests | req/s | p50 s | p99 s | errors | RSS start / warm / end MiB | growth "
            "| p99 before / during slow clients s | stalled |\n|" + "---|" * 12)
    rows = [f"| {r['target']} | {r['clients']} | {r['seconds']:.0f} | {r['requests']} | {r['requests_per_s']:.1f} "
            f"| {r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['errors']} "
            f"| {r['rss_start_mib']:.0f} / {r['rss_warm_mib']:.0f} / {r['rss_end_mib']:.0f} "
            f"| {r['rss_growth_mib']:+.1f} MiB{' (FLAGGED)' if r['rss_growth_flag'] else ''} "
            f"| {r['p99_before_slow_s']:.3f} / {r['p99_during_slow_s']:.3f} | {'YES' if r['stalled'] else 'no'} |"
            for r in results]
    notes = [f"- {r['target']}: slow-body client got `{r['slow_body_status']}`, slow reader got "
             f"`{r['slow_reader_status']}`; errors: {r['error_kinds'] or 'none'}" for r in results]
    return "\n".join([head, *rows, "", *notes])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["chat", "reward", "both"], default="both")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--slow-seconds", type=float, default=20.0)
    parser.add_argument("--slow-interval", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    targets = ["reward", "chat"] if args.target == "both" else [args.target]
    results = [run_target(t, clients=args.clients, seconds=args.seconds, model=args.model,
                          slow_seconds=args.slow_seconds, slow_interval=args.slow_interval) for t in targets]
    table = markdown(results)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "server_load.md").write_text(table + "\n")
        (args.out / "server_load.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
