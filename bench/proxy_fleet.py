"""One proxy app serving 100 concurrent agents: no lost usage record, budgets hold.

    python bench/proxy_fleet.py [--agents 100] [--requests 6] [--concurrency 3]

The proxy is `ml_agent.proxy.create_app` with the in-memory token store and usage sink,
served by `ServerThread` on 127.0.0.1 in this process; the upstream is the fake Anthropic
(tests/fakes/anthropic.py) in a child process. The Modal proxy is the same app with a
`modal.Dict` usage sink and token store; those are not run here (the in-memory ones are).

Each agent has its own run token and budget and issues `--requests` streamed Messages
requests, `--concurrency` at a time (httpx.AsyncClient). Like the Claude CLI it retries a
429 (another request of its own is in flight and holds the budget) and stops at a 402
(the budget cannot fit another request). Every answer bills the same usage, priced by
ml_agent.proxy.pricing; each request names its agent in `metadata.user_id`, so the fake
upstream counts what it billed per agent.

Printed: requests forwarded, usage recorded per token (the sink) against what the fake
billed (tokens and requests must match exactly, the cost to float rounding), whether any
token's spend exceeded its budget plus the documented overshoot (docs/security.md
"Budgets: what a run can spend": budget + the sum of (cost - reservation) over requests
that overlapped; at most 2 x budget + the input under-estimate), and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk-ant-fleet-bench-key"
MODEL = "claude-sonnet-4-5"
MAX_TOKENS = 1024
PROMPT_BYTES = 8000  # -> an input estimate of 2000 tokens (bytes / 4)
#: What every answer bills: the input the estimate expects, and more output than the
#: reservation's half of max_tokens (so each request costs more than it reserved: the
#: overshoot the docs describe is exercised, not avoided).
USAGE = {"input_tokens": 2000, "output_tokens": 900, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0}
TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
              "cache_read_input_tokens")


def upstream_child() -> None:
    """The fake API in its own process; `report` on stdin prints what it billed per agent."""
    from tests.fakes.anthropic import FakeAnthropic, text

    with FakeAnthropic(keys={KEY}, default=text("w " * 300, n_text_deltas=30,
                                                usage=USAGE)) as fake:
        print(fake.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "report":
                billed: dict[str, int] = {}
                incomplete = 0
                for call in list(fake.calls):
                    if call.path.endswith("/v1/messages") and call.json:
                        agent = call.json.get("metadata", {}).get("user_id", "?")
                        if call.completed:
                            billed[agent] = billed.get(agent, 0) + 1
                        else:
                            incomplete += 1
                print(json.dumps({"billed": billed, "incomplete": incomplete}), flush=True)


def body_for(agent: str) -> bytes:
    head = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": True,
            "metadata": {"user_id": agent}, "messages": [{"role": "user", "content": ""}]}
    filler = PROMPT_BYTES - len(json.dumps(head))
    head["messages"][0]["content"] = "x" * filler
    body = json.dumps(head).encode()
    assert len(body) == PROMPT_BYTES, len(body)
    return body


async def agent_loop(client, url: str, token: str, agent: str, n: int, concurrency: int,
                     stats: dict[str, int]) -> None:
    body = body_for(agent)
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01",
               "content-type": "application/json"}
    queue = list(range(n))
    stopped = False

    async def worker() -> None:
        nonlocal stopped
        while queue and not stopped:
            queue.pop()
            while True:
                async with client.stream("POST", url + "/v1/messages", content=body,
                                         headers=headers) as response:
                    async for _ in response.aiter_bytes():
                        pass
                status = response.status_code
                stats[str(status)] = stats.get(str(status), 0) + 1
                if status == 429:
                    await asyncio.sleep(0.05)
                    continue
                if status != 200:
                    stopped = True  # 402: no request fits the budget left
                break

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def drive(url: str, tokens: dict[str, str], n: int, concurrency: int
                ) -> dict[str, int]:
    """Every agent with its own httpx.AsyncClient, as each agent is its own Claude CLI: one
    shared client would measure httpcore's pool (O(connections) per request), not the
    proxy."""
    import httpx

    stats: dict[str, int] = {}

    async def one(agent: str, token: str) -> None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            await agent_loop(client, url, token, agent, n, concurrency, stats)

    await asyncio.gather(*(one(agent, token) for agent, token in tokens.items()))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--upstream-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream_child:
        upstream_child()
        return

    from ml_agent.contracts import TokenRecord, hash_token
    from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, create_app
    from ml_agent.proxy.budget import estimate
    from ml_agent.proxy.pricing import cost_usd
    from ml_agent.proxy.serving import ServerThread

    child = subprocess.Popen([sys.executable, __file__, "--upstream-child"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin and child.stdout
    upstream = child.stdout.readline().strip()
    try:
        store, sink = MemoryTokenStore(), MemoryUsageSink()
        per_request = cost_usd(MODEL, USAGE)
        reserve = estimate(body_for("agent-000")).usd
        tokens: dict[str, str] = {}
        budgets: dict[str, float] = {}
        for i in range(args.agents):
            agent = f"agent-{i:03d}"
            # From room for one request to more than all of them: most run out mid-way.
            budgets[agent] = round(per_request * (1.2 + (i % 10) * 0.7), 6)
            tokens[agent] = f"mla-fleet-{i:03d}-0123456789abcdef"
            store.put(hash_token(tokens[agent]), TokenRecord(agent, time.time() + 3600,
                                                             budgets[agent]))
        app = create_app(upstream=upstream, api_key=KEY, tokens=store, usage=sink)
        with ServerThread(app, "127.0.0.1") as server:
            started = time.perf_counter()
            stats = asyncio.run(drive(server.url, tokens, args.requests, args.concurrency))
            elapsed = time.perf_counter() - started
        child.stdin.write("report\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait()

    billed: dict[str, int] = report["billed"]
    forwarded = sum(billed.values())
    lost = mismatched = over = 0
    recorded_cost = billed_cost = 0.0
    recorded_tokens = {k: 0 for k in TOKEN_KEYS}
    worst = 0.0
    for agent, budget in budgets.items():
        used = sink.get(agent)
        n = billed.get(agent, 0)
        want = {k: USAGE[k] * n for k in TOKEN_KEYS}
        got = {k: int(used.get(k, 0)) for k in TOKEN_KEYS}
        for k in TOKEN_KEYS:
            recorded_tokens[k] += got[k]
        recorded_cost += used["cost_usd"]
        billed_cost += per_request * n
        if int(used["requests"]) != n or got != want:
            mismatched += 1
            lost += max(0, n - int(used["requests"]))
        if not math.isclose(used["cost_usd"], per_request * n, rel_tol=1e-9, abs_tol=1e-12):
            mismatched += 1
        # The documented bound: budget + sum over overlapping requests of (cost - r); an
        # agent has at most `concurrency` in flight at once.
        bound = budget + args.concurrency * max(0.0, per_request - reserve)
        worst = max(worst, used["cost_usd"] / budget)
        if used["cost_usd"] > bound + 1e-12 or used["cost_usd"] > 2 * budget:
            over += 1

    total_billed = {k: USAGE[k] * forwarded for k in TOKEN_KEYS}
    print(f"agents {args.agents}, {args.requests} streamed requests each, "
          f"{args.concurrency} at a time; one proxy app (in-memory token store and usage "
          f"sink; the Modal proxy uses a modal.Dict sink, not run here)")
    print(f"per request: cost ${per_request:.6f}, reservation ${reserve:.6f} "
          f"(excess ${max(0.0, per_request - reserve):.6f}); budgets "
          f"${min(budgets.values()):.4f}..${max(budgets.values()):.4f}")
    print(f"responses: {json.dumps(dict(sorted(stats.items())))}; "
          f"requests forwarded (fake billed): {forwarded}; upstream streams cut: "
          f"{report['incomplete']}")
    recorded_requests = sum(int(sink.get(a)["requests"]) for a in budgets)
    print(f"usage recorded by the proxy: requests {recorded_requests}, tokens "
          f"{json.dumps(recorded_tokens)}, cost ${recorded_cost:.6f}")
    print(f"usage billed by the fake:    requests {forwarded}, tokens "
          f"{json.dumps(total_billed)}, cost ${billed_cost:.6f}")
    print(f"tokens whose recorded usage differs from the billed: {mismatched} "
          f"(lost records: {lost})")
    print(f"tokens over budget + documented overshoot: {over} (highest spend/budget "
          f"{worst:.3f}; bound per token: budget + {args.concurrency} x excess, and <= 2 x "
          f"budget)")
    print(f"throughput: {forwarded / elapsed:.0f} forwarded requests/s, "
          f"{sum(stats.values()) / elapsed:.0f} responses/s, {elapsed:.2f} s wall")
    if mismatched or over or report["incomplete"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
