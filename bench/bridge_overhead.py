"""The cost of `sandbox.network: blocked` on the local backend: the loopback bridge, measured.

    python bench/bridge_overhead.py [--requests 40] [--rounds 5]

With the network blocked, the agent reaches its proxy through a relay inside the sandbox
(127.0.0.1:PORT -> the proxy's Unix socket, bound in: ml_agent/backends/local/bridge.py);
with it open, over the host's loopback directly. Both ways run side by side here, rounds
interleaved, against the same run proxy (`LocalProxy`, in this process as in the supervisor)
and the same fake Anthropic API (a child process): a real bwrap sandbox whose command is a
raw HTTP/1.1 client (stdlib, no client cost hidden in a library) sending 50 KB streaming
Messages requests answered by ~200 SSE deltas, on a new connection each time (the bridge's
worst case: a connect, an accept and a thread per connection) and on one kept-alive
connection (what the Claude CLI does). Printed: time to first and last byte (p50, p90),
the bridged/direct ratio and the per-request difference; and the sandbox start-up to the
command's first output (the bridge is one more Python start before the agent).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml_agent.backends.local import sandbox  # noqa: E402
from ml_agent.backends.local.proxying import LocalProxy  # noqa: E402
from ml_agent.contracts import TokenRecord, hash_token  # noqa: E402
from tests.local.helpers import layout, local_plan, tiny_venv, with_network  # noqa: E402

KEY = "sk-ant-bench-key"
TOKEN = "mla-run-bench-token"

UPSTREAM = """
import sys
from tests.fakes.anthropic import FakeAnthropic, text
words = " ".join(f"w{i % 97}" for i in range(1000))
with FakeAnthropic(keys={sys.argv[1]}, default=text(words, n_text_deltas=200)) as fake:
    print(fake.url, flush=True)
    sys.stdin.read()
"""

#: Runs inside the sandbox: N requests, new connections or one kept alive; prints
#: [[first byte s, last byte s], ...] as JSON.
CLIENT = r"""
import json, os, socket, sys, time
print("up", flush=True)
port, n, keep = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "keep"
body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True,
                   "messages": [{"role": "user", "content": "x" * 50000}]}).encode()
head = ("POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"x-api-key: {os.environ['ANTHROPIC_API_KEY']}\r\nanthropic-version: 2023-06-01\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
out, conn = [], None
for _ in range(n):
    t0 = time.perf_counter()
    if conn is None:
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(head + body)
    first, buf = None, b""
    while not buf.endswith(b"0\r\n\r\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise SystemExit(f"connection closed: {buf[:300]!r}")
        if first is None:
            first = time.perf_counter() - t0
            if not chunk.startswith(b"HTTP/1.1 200"):
                raise SystemExit(chunk[:300].decode(errors="replace"))
        buf += chunk
    out.append([first, time.perf_counter() - t0])
    if not keep:
        conn.close()
        conn = None
print(json.dumps(out), flush=True)
"""


@dataclasses.dataclass
class Sample:
    first: list[float] = dataclasses.field(default_factory=list)
    last: list[float] = dataclasses.field(default_factory=list)
    startup: list[float] = dataclasses.field(default_factory=list)


def run_client(argv: list[str], env: dict[str, str], sample: Sample) -> None:
    t0 = time.perf_counter()
    with sandbox.start(argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        if proc.stdout.readline() != b"up\n":
            raise SystemExit(f"the client did not start: {proc.stderr.read().decode()}")
        sample.startup.append(time.perf_counter() - t0)
        line = proc.stdout.readline()
        if proc.wait(120) != 0 or not line:
            raise SystemExit(f"the client failed: {proc.stderr.read().decode()}")
    for first, last in json.loads(line):
        sample.first.append(first)
        sample.last.append(last)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="per sandbox, per mode")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ml-agent-bench-bridge-"))
    venv = tiny_venv(tmp / "venv")
    with subprocess.Popen([sys.executable, "-c", UPSTREAM, KEY], cwd=ROOT, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as upstream:
        assert upstream.stdout is not None and upstream.stdin is not None
        url = upstream.stdout.readline().strip()
        plan = local_plan(f"proxy.upstream={url}", "proxy.upstream_secret=bench")
        proxy = LocalProxy(plan, KEY, unix_socket=tmp / "proxy.sock").start()
        proxy.tokens.put(hash_token(TOKEN), TokenRecord("bench", time.time() + 86400, None))
        try:
            env = sandbox.sandbox_env(plan, {"ANTHROPIC_API_KEY": TOKEN})
            open_plan, blocked_plan = plan, with_network(plan, "blocked")
            (tmp / "a").mkdir()
            (tmp / "b").mkdir()
            direct_host = layout(open_plan, tmp / "a", venv)
            bridged_host = layout(blocked_plan, tmp / "b", venv,
                                  proxy_socket=str(tmp / "proxy.sock"))
            results: dict[tuple[str, str], Sample] = {}
            for _ in range(args.rounds):
                for keep in ("new", "keep"):
                    command = ["python", "-c", CLIENT, str(proxy.port), str(args.requests), keep]
                    for mode, argv in (
                        ("direct", sandbox.build_argv(open_plan, direct_host, command)),
                        ("bridged", sandbox.build_argv(
                            blocked_plan, bridged_host, sandbox.bridged(command, proxy.port))),
                    ):
                        run_client(argv, env, results.setdefault((keep, mode), Sample()))
        finally:
            proxy.stop()
            upstream.stdin.close()

    n = args.requests * args.rounds
    print(f"{n} requests per row (50 KB request, ~200 SSE deltas), {args.rounds} interleaved "
          "rounds; ms")
    print(f"{'connection':<10} {'metric':<16} {'direct':>8} {'bridged':>8} {'ratio':>6} "
          f"{'diff':>7}")
    for keep in ("new", "keep"):
        direct, bridged = results[(keep, "direct")], results[(keep, "bridged")]
        for name, field in (("first byte", "first"), ("last byte", "last")):
            for q in (50, 90):
                d = pct(getattr(direct, field), q) * 1000
                b = pct(getattr(bridged, field), q) * 1000
                label = "new each" if keep == "new" else "kept alive"
                print(f"{label:<10} {name + f' p{q}':<16} {d:8.2f} {b:8.2f} {b / d:6.2f} "
                      f"{b - d:+7.2f}")
    startup_d = statistics.median(results[("new", "direct")].startup) * 1000
    startup_b = statistics.median(results[("new", "bridged")].startup) * 1000
    print(f"{'sandbox':<10} {'start-up p50':<16} {startup_d:8.1f} {startup_b:8.1f} "
          f"{startup_b / startup_d:6.2f} {startup_b - startup_d:+7.1f}")


if __name__ == "__main__":
    main()
