"""One proxy app serving 100 concurrent agents: no lost usage record, budgets hold.

    python bench/proxy_fleet.py [--agents 100] [--requests 6] [--concurrency 3]
                                [--stores memory,modal] [--modal-latency-ms 0]

The same fleet is run, one after the other in one run, against each kind of stores:

- memory: `ml_agent.proxy.create_app` with the in-memory token store and usage sink (the
  local backend, `proxy serve`);
- modal: the deployed Modal proxy itself (`ml_agent.backends.modal.app.proxy()`, the
  function Modal calls in the container), whose token store and usage sink are the
  `<app>-tokens` / `<app>-usage` modal.Dicts, reached through the real modal SDK talking to
  the fake Modal control plane (tests/fakes/modal_server.py) in a child process. Tokens are
  written as `up` writes them (`ModalTokenStore.put`) and usage read back as `ps` and
  `finalize_run` read it (`ModalUsageSink.get`), after the fleet is done.
  `--modal-latency-ms` adds that much to every call to the fake control plane (the fake
  answers at once; Modal's Dicts are a network round trip away from the proxy container).

Either proxy is served by `ServerThread` on 127.0.0.1 in this process; the upstream is the
fake Anthropic (tests/fakes/anthropic.py) in a child process, one per kind of stores.

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
that overlapped; at most 2 x budget + the input under-estimate), and throughput, one
column per kind of stores, then the throughput ratio modal.Dict / in-memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
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


def modal_child(latency_ms: float) -> None:
    """The fake Modal control plane in its own process (Modal's is not in the proxy's).

    Prints the MODAL_* environment that points the SDK at it; serves until stdin closes."""
    from tests.fakes.modal_server import FakeModal

    with FakeModal() as fake:
        fake.latency = latency_ms / 1000
        print(json.dumps(fake.env("/nonexistent/modal.toml")), flush=True)
        sys.stdin.read()


def child(*flags: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, __file__, *flags], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout
    return process, process.stdout.readline().strip()


def budgets_and_tokens(agents: int, per_request: float) -> tuple[dict[str, float],
                                                                  dict[str, str]]:
    budgets: dict[str, float] = {}
    tokens: dict[str, str] = {}
    for i in range(agents):
        agent = f"agent-{i:03d}"
        # From room for one request to more than all of them: most run out mid-way.
        budgets[agent] = round(per_request * (1.2 + (i % 10) * 0.7), 6)
        tokens[agent] = f"mla-fleet-{i:03d}-0123456789abcdef"
    return budgets, tokens


def run_fleet(kind: str, args: argparse.Namespace) -> dict[str, object]:
    """One fleet against one kind of stores; what it measured."""
    import contextlib

    from ml_agent.contracts import TokenRecord, hash_token
    from ml_agent.proxy.pricing import cost_usd
    from ml_agent.proxy.serving import ServerThread

    per_request = cost_usd(MODEL, USAGE)
    budgets, tokens = budgets_and_tokens(args.agents, per_request)
    upstream_process, upstream = child("--upstream-child")
    assert upstream_process.stdin and upstream_process.stdout
    modal_process = None
    with contextlib.ExitStack() as stack:
        try:
            if kind == "modal":
                from ml_agent.backends.modal import app as modal_app
                from ml_agent.backends.modal.stores import ModalTokenStore, ModalUsageSink
                from ml_agent.proxy.paths import DEFAULT_ALLOWED
                from tests.fakes.modal_server import isolated_modal_env

                modal_process, modal_env = child("--modal-child", "--modal-latency-ms",
                                                 str(args.modal_latency_ms))
                stack.enter_context(isolated_modal_env(json.loads(modal_env)))
                app_name = "ml-agent-fleet"
                env = {"ML_AGENT_APP": app_name, "ML_AGENT_PROXY_UPSTREAM": upstream,
                       "ANTHROPIC_API_KEY": KEY,
                       "ML_AGENT_PROXY_ALLOWED_PATHS": json.dumps(list(DEFAULT_ALLOWED))}
                saved = {k: os.environ.get(k) for k in env}
                stack.callback(restore_env, saved)
                os.environ.update(env)
                store = ModalTokenStore.for_app(app_name)
                sink = ModalUsageSink.for_app(app_name)
                app = modal_app.proxy()
            else:
                from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, create_app

                store, sink = MemoryTokenStore(), MemoryUsageSink()  # type: ignore[assignment]
                app = create_app(upstream=upstream, api_key=KEY, tokens=store, usage=sink)
            for agent, token in tokens.items():
                store.put(hash_token(token), TokenRecord(agent, time.time() + 3600,
                                                         budgets[agent]))
            with ServerThread(app, "127.0.0.1") as server:
                started = time.perf_counter()
                stats = asyncio.run(drive(server.url, tokens, args.requests,
                                          args.concurrency))
                elapsed = time.perf_counter() - started
            # Read back as `ps` and finalize_run read it (a new handle on the Dict).
            reader = ModalUsageSink.for_app(app_name) if kind == "modal" else sink
            used = {agent: reader.get(agent) for agent in budgets}
            upstream_process.stdin.write("report\n")
            upstream_process.stdin.flush()
            report = json.loads(upstream_process.stdout.readline())
        finally:
            for process in (upstream_process, modal_process):
                if process is not None:
                    process.kill()
                    process.wait()
    return check(kind, args, budgets, used, report, stats, elapsed)


def restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def check(kind: str, args: argparse.Namespace, budgets: dict[str, float],
          used_by_agent: dict[str, dict[str, float]], report: dict[str, object],
          stats: dict[str, int], elapsed: float) -> dict[str, object]:
    """Compare what the proxy recorded with what the fake billed, agent by agent."""
    from ml_agent.proxy.budget import estimate
    from ml_agent.proxy.pricing import cost_usd

    per_request = cost_usd(MODEL, USAGE)
    reserve = estimate(body_for("agent-000")).usd
    billed: dict[str, int] = report["billed"]  # type: ignore[assignment]
    forwarded = sum(billed.values())
    lost = mismatched = over = 0
    recorded_cost = billed_cost = 0.0
    recorded_requests = 0
    worst = 0.0
    for agent, budget in budgets.items():
        used = used_by_agent[agent]
        n = billed.get(agent, 0)
        want = {k: USAGE[k] * n for k in TOKEN_KEYS}
        got = {k: int(used.get(k, 0)) for k in TOKEN_KEYS}
        requests = int(used.get("requests", 0))
        cost = float(used.get("cost_usd", 0.0))
        recorded_requests += requests
        recorded_cost += cost
        billed_cost += per_request * n
        if requests != n or got != want or not math.isclose(cost, per_request * n,
                                                            rel_tol=1e-9, abs_tol=1e-12):
            mismatched += 1
            lost += max(0, n - requests)
        # The documented bound: budget + sum over overlapping requests of (cost - r); an
        # agent has at most `concurrency` in flight at once.
        bound = budget + args.concurrency * max(0.0, per_request - reserve)
        worst = max(worst, cost / budget)
        if cost > bound + 1e-12 or cost > 2 * budget:
            over += 1
    return {"kind": kind, "forwarded": forwarded, "recorded": recorded_requests,
            "recorded_cost": recorded_cost, "billed_cost": billed_cost,
            "mismatched": mismatched, "lost": lost, "over": over, "worst": worst,
            "cut": report["incomplete"], "responses": dict(sorted(stats.items())),
            "elapsed": elapsed, "rps": forwarded / elapsed,
            "per_request": per_request, "reserve": reserve, "budgets": budgets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--stores", default="memory,modal",
                        help="comma-separated: memory, modal (default: both, side by side)")
    parser.add_argument("--modal-latency-ms", type=float, default=0.0,
                        help="added to every call to the fake Modal control plane (the "
                        "network between the proxy container and Modal's Dicts)")
    parser.add_argument("--upstream-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--modal-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream_child:
        upstream_child()
        return
    if args.modal_child:
        modal_child(args.modal_latency_ms)
        return
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    if not kinds or set(kinds) - {"memory", "modal"}:
        parser.error("--stores takes memory, modal or both")
    results = [run_fleet(kind, args) for kind in kinds]

    first = results[0]
    budgets: dict[str, float] = first["budgets"]  # type: ignore[assignment]
    print(f"agents {args.agents}, {args.requests} streamed requests each, "
          f"{args.concurrency} at a time; one proxy app per kind of stores")
    print(f"per request: cost ${first['per_request']:.6f}, reservation "
          f"${first['reserve']:.6f} (excess "
          f"${max(0.0, first['per_request'] - first['reserve']):.6f}); budgets "  # type: ignore[operator]
          f"${min(budgets.values()):.4f}..${max(budgets.values()):.4f}; bound per token: "
          f"budget + {args.concurrency} x excess, and <= 2 x budget")
    rows = [
        ("stores", lambda r: {"memory": "in-memory",
                              "modal": f"modal.Dict (fake Modal, +{args.modal_latency_ms:g} "
                                       "ms/call)"}[r["kind"]]),
        ("responses", lambda r: json.dumps(r["responses"])),
        ("requests forwarded (fake billed)", lambda r: str(r["forwarded"])),
        ("requests recorded by the proxy", lambda r: str(r["recorded"])),
        ("cost recorded / billed", lambda r: f"${r['recorded_cost']:.6f} / "
                                             f"${r['billed_cost']:.6f}"),
        ("tokens recorded != billed", lambda r: str(r["mismatched"])),
        ("lost records", lambda r: str(r["lost"])),
        ("upstream streams cut", lambda r: str(r["cut"])),
        ("tokens over budget + overshoot", lambda r: str(r["over"])),
        ("highest spend / budget", lambda r: f"{r['worst']:.3f}"),
        ("forwarded requests/s", lambda r: f"{r['rps']:.0f}"),
        ("wall", lambda r: f"{r['elapsed']:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    cells = [[show(r) for r in results] for _, show in rows]
    cols = [max(len(row[i]) for row in cells) for i in range(len(results))]
    for (name, _), row in zip(rows, cells, strict=True):
        print(f"{name:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, cols,
                                                                           strict=True)))
    if len(results) == 2:
        print(f"throughput modal.Dict / in-memory: "
              f"{results[1]['rps'] / results[0]['rps']:.2f}x")  # type: ignore[operator]
    if any(r["mismatched"] or r["over"] or r["cut"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
