"""The proxy's overhead, measured side by side against the same fake upstream.

    python bench/proxy_overhead.py [--quick] [--profile FILE]

Three processes: the fake Anthropic API (tests/fakes/anthropic.py), the proxy (uvicorn,
as `ml-agent proxy serve` runs it) and this load generator, a minimal HTTP/1.1 client on
raw asyncio streams so that client cost does not hide the proxy's. A realistic exchange:
a 50 KB streaming Messages request answered by ~200 SSE text deltas. For concurrency 1, 16
and 64, direct and through the proxy: time to first and last byte (p50, p99), throughput,
and the proxy's own CPU time per request (from /proc/<pid>/stat: all of the proxy process's
CPU during the measured round over its requests, so idle work such as uvicorn's 10 Hz timer
counts too; measured at ~2 ms per second, under 0.02 ms per request even at concurrency 1,
where each answer's events arrive in many separate reads). Then the event latency:
with 200 ms between upstream events, how long each event takes to reach the client
(CLOCK_MONOTONIC is shared by processes, so the fake's send times compare directly).
Last, the upstream transports alone, in this process against the fake: CPU time per
200-event answer through the proxy's wire (wire.py) and through httpx's own transport
(httpcore + h11), read the way the proxy reads them. The run token has a budget
(`--budget`, USD; 0 for none) as configs have: each request is priced and reserved.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "mla-run-bench-token"
KEY = "sk-ant-bench-key"
TICK = os.sysconf("SC_CLK_TCK")


# -- Child processes -----------------------------------------------------------------------
def upstream_child() -> None:
    """The fake API; commands on stdin: `times` (last call's event times), `gap`, `reset`."""
    from tests.fakes.anthropic import FakeAnthropic, text

    words = " ".join(f"w{i % 97}" for i in range(1000))
    with FakeAnthropic(keys={KEY}, default=text(words, n_text_deltas=200)) as fake:
        print(fake.url, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "times":
                print(json.dumps(fake.calls[-1].event_times), flush=True)
            elif command == "gap":
                fake.script(text("x" * 40, n_text_deltas=40, event_gap=0.2))
                print("ok", flush=True)
            elif command == "reset":
                fake.calls.clear()
                print("ok", flush=True)


def proxy_child(upstream: str, port: int, profile: str | None, budget: float | None) -> None:
    import contextlib
    import time as _time

    from ml_agent.contracts import TokenRecord, hash_token
    from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, create_app, serve

    tokens = MemoryTokenStore()
    tokens.put(hash_token(TOKEN), TokenRecord("bench", _time.time() + 86400, budget))
    app = create_app(upstream=upstream, api_key=KEY, tokens=tokens, usage=MemoryUsageSink())
    if profile:
        import cProfile

        # CPU time, not wall time: on a shared 2-core machine a wall-clock profile charges
        # the proxy for time it spent preempted (e.g. inside a socket send that woke the
        # client), which sends the search to the wrong place.
        profiler = cProfile.Profile(_time.process_time)
        profiler.enable()
        try:
            with contextlib.suppress(KeyboardInterrupt):
                serve(app, "127.0.0.1", port)
        finally:
            profiler.disable()
            profiler.dump_stats(profile)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            serve(app, "127.0.0.1", port)


# -- A minimal client ----------------------------------------------------------------------
def build_request(host: str, port: int, path: str, key: str) -> bytes:
    content = "lorem ipsum dolor sit amet " * (50_000 // 27)
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": True,
                       "messages": [{"role": "user", "content": content}]}).encode()
    head = (f"POST {path}?beta=true HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes, on_data=None) -> tuple[float, float, int]:
        """Send; return (ttfb, ttlb, status). `on_data(now)` is called per read."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=1 << 20)
        reader = self.reader
        started = time.perf_counter()
        self.writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        lower = head.lower()
        ttfb = None
        if b"transfer-encoding: chunked" in lower:
            tail = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed mid-stream")
                now = time.perf_counter()
                if ttfb is None:
                    ttfb = now - started
                if on_data:
                    on_data(time.monotonic(), data)
                tail = (tail + data)[-7:]
                if tail.endswith(b"0\r\n\r\n") and b"\r\n0\r\n\r\n" in b"\r\n" + tail:
                    break
        else:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            ttfb = time.perf_counter() - started
        return ttfb, time.perf_counter() - started, status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, path: str, key: str, concurrency: int, total: int) -> dict:
    host, port = url.split("//")[1].split(":")
    request = build_request(host, int(port), path, key)
    results: list[tuple[float, float]] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        conn = Connection(host, int(port))
        try:
            while remaining > 0:
                remaining -= 1
                ttfb, ttlb, status = await conn.exchange(request)
                assert status == 200, status
                results.append((ttfb, ttlb))
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ttfb = sorted(r[0] for r in results)
    ttlb = sorted(r[1] for r in results)

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] * 1000

    return {"n": len(results), "rps": len(results) / elapsed,
            "ttfb50": pct(ttfb, 0.5), "ttfb99": pct(ttfb, 0.99),
            "ttlb50": pct(ttlb, 0.5), "ttlb99": pct(ttlb, 0.99)}


async def event_latency(url: str, path: str, key: str, upstream) -> list[float]:
    host, port = url.split("//")[1].split(":")
    upstream("gap")
    arrivals: list[float] = []
    conn = Connection(host, int(port))
    try:
        await conn.exchange(build_request(host, int(port), path, key),
                            on_data=lambda now, data: arrivals.append(now))
    finally:
        conn.close()
    sent = json.loads(upstream("times"))
    # 200 ms apart, each event comes in its own read (the first after the headers).
    count = min(len(sent), len(arrivals))
    return [(arrivals[i] - sent[i]) * 1000 for i in range(1, count)]


async def transport_cpu(url: str, n: int) -> list[tuple[str, float]]:
    """CPU per answer of each upstream transport, alternating rounds (medians)."""
    import httpx

    from ml_agent.proxy.wire import Http11Transport

    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": True,
                       "messages": [{"role": "user", "content": "x" * 50_000}]}).encode()
    results: dict[str, list[float]] = {"wire": [], "httpx": []}
    transports = {"wire": Http11Transport(verify=False), "httpx": httpx.AsyncHTTPTransport()}
    timeouts = httpx.Timeout(30.0).as_dict()
    for _ in range(3):
        for name, transport in transports.items():
            started = time.process_time()
            for _ in range(n):
                request = httpx.Request("POST", url + "/v1/messages", content=body,
                                        headers={"x-api-key": KEY},
                                        extensions={"timeout": timeouts})
                response = await transport.handle_async_request(request)
                stream = response.stream
                assert isinstance(stream, httpx.AsyncByteStream)
                async for _chunk in stream:
                    pass
                await response.aclose()
            results[name].append((time.process_time() - started) * 1000 / n)
    for transport in transports.values():
        await transport.aclose()
    return [(name, statistics.median(values)) for name, values in results.items()]


# -- Orchestration -------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--profile", help="cProfile the proxy into this file")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3, help="direct/proxy pairs per level")
    parser.add_argument("--budget", type=float, default=1000.0,
                        help="the run token's budget in USD (0: none)")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        if args.child[0] == "upstream":
            upstream_child()
        else:
            proxy_child(args.child[1], int(args.child[2]), args.child[3] or None,
                        float(args.child[4]) or None)
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    me = [sys.executable, __file__, "--child"]
    fake = subprocess.Popen([*me, "upstream"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    upstream_url = fake.stdout.readline().strip()

    def upstream(command: str) -> str:
        fake.stdin.write(command + "\n")
        fake.stdin.flush()
        return fake.stdout.readline().strip()

    port = free_port()
    proxy = subprocess.Popen([*me, "proxy", upstream_url, str(port), args.profile or "",
                              str(args.budget)], env=env)
    proxy_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        scale = 0.25 if args.quick else 1.0
        summary = []
        for c in [int(x) for x in args.concurrency.split(",")]:
            total = int(max(60, 12 * c) * scale) or c
            ratios, added, cpus = [], [], []
            # Direct and proxied runs alternate, so that load drifting on a shared machine
            # hits both alike; the summary takes medians over the rounds.
            for _ in range(args.rounds):
                pair = {}
                for name, url, key in (("direct", upstream_url, KEY),
                                       ("proxy", proxy_url, TOKEN)):
                    asyncio.run(load(url, "/v1/messages", key, c, max(c, total // 6)))  # warm
                    upstream("reset")
                    before = cpu_seconds(proxy.pid)
                    result = asyncio.run(load(url, "/v1/messages", key, c, total))
                    cpu_ms = (cpu_seconds(proxy.pid) - before) * 1000 / result["n"]
                    pair[name] = result
                    print(f"c={c:<3} {name:<7} n={result['n']:<5} {result['rps']:7.1f} req/s  "
                          f"TTFB p50 {result['ttfb50']:7.1f} p99 {result['ttfb99']:7.1f} ms  "
                          f"TTLB p50 {result['ttlb50']:7.1f} p99 {result['ttlb99']:7.1f} ms"
                          + (f"  proxy CPU {cpu_ms:.2f} ms/req" if name == "proxy" else ""),
                          flush=True)
                ratios.append(pair["proxy"]["rps"] / pair["direct"]["rps"])
                added.append((pair["proxy"]["ttfb50"] - pair["direct"]["ttfb50"],
                              pair["proxy"]["ttlb50"] - pair["direct"]["ttlb50"]))
                cpus.append(cpu_ms)
            summary.append(
                f"c={c:<3} throughput {statistics.median(ratios):.2f}x direct "
                f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); added p50 TTFB "
                f"{statistics.median(a[0] for a in added):+.1f} ms, TTLB "
                f"{statistics.median(a[1] for a in added):+.1f} ms; proxy CPU "
                f"{statistics.median(cpus):.2f} ms/request")
        print("\nmedians over rounds:")
        print("\n".join(summary))
        for name, url, key in (("direct", upstream_url, KEY), ("proxy", proxy_url, TOKEN)):
            delays = sorted(asyncio.run(event_latency(url, "/v1/messages", key, upstream)))
            print(f"events 200 ms apart, {name:<6}: delay to client p50 "
                  f"{statistics.median(delays):.2f} ms, p90 {delays[int(0.9 * len(delays))]:.2f}"
                  f" ms, max {delays[-1]:.2f} ms ({len(delays)} events)")
        upstream("reset")
        n = 50 if args.quick else 200
        for name, cpu in asyncio.run(transport_cpu(upstream_url, n)):
            print(f"transport {name:<6}: {cpu:.2f} ms CPU per 200-event answer ({n} answers)")
    finally:
        proxy.send_signal(signal.SIGINT)  # uvicorn stops; the profile (if any) is written
        proxy.wait(10)
        fake.stdin.close()
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
