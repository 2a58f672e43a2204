"""Time from `ml-agent up configs/local.yaml` to the agent's first event: cold vs warm.

    python bench/local_up.py [--warm-runs 3] [--no-cold]

Cold: a fresh ML_AGENT_HOME, so `up` builds the image (the pip layers' virtualenv) first.
Warm: the image is cached. Both run the real CLI, supervisor, proxy, sandbox and agent
against the fake Anthropic API on 127.0.0.1 (the agent's `ready` event comes before any
model call), and print the phases side by side: CLI start -> run registered (config,
checks, image) -> sandbox started (supervisor, proxy) -> first event (bwrap, Python, agent
imports). Goal: warm under 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakes.anthropic import FakeAnthropic  # noqa: E402

KEY = "sk-ant-bench-key"
CLI = [sys.executable, str(Path(sys.executable).with_name("ml-agent"))]


def one_up(home: Path, url: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE", "MODAL_"))}
    env["ML_AGENT_HOME"] = str(home)
    args = ["up", "configs/local.yaml", "--task", "say ok", "--set", f"proxy.upstream={url}",
            "--set", "proxy.upstream_secret=bench",
            "--set", 'sandbox.env.CLAUDE_CODE_MAX_RETRIES="1"']
    start_wall = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen([*CLI, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = None
    for line in proc.stdout:
        if first is None and line.strip():
            first = time.perf_counter() - start  # the CLI printed the first event
    proc.wait()
    if proc.returncode != 0 or first is None:
        sys.exit(f"up failed ({proc.returncode}):\n{proc.stderr.read() if proc.stderr else ''}")
    run = sorted((home / "runs").iterdir())[-1]
    record = json.loads((run / "run.json").read_text())
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    timing = json.loads((run / "timing.json").read_text())
    return {
        "registered": record["created_at"] - start_wall,
        "supervisor up": timing["supervisor"] - start_wall,
        "proxy up": timing["proxy"] - start_wall,
        "sandbox started": timing["sandbox"] - start_wall,
        "first event (agent)": events[0]["ts"] - start_wall,
        "first event (CLI)": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold build")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ml-agent-bench-"))
    rows: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    try:
        with FakeAnthropic(keys={KEY}) as fake:
            home = root / "home"
            (home / "secrets").mkdir(parents=True)
            (home / "secrets" / "bench.env").write_text(f"ANTHROPIC_API_KEY={KEY}\n")
            if not args.no_cold:
                print("cold: building the image (minutes)...", flush=True)
                rows["cold"].append(one_up(home, fake.url))
            else:  # reuse the test suite's cached image when there is one
                cache = REPO / ".pytest_cache" / "d" / "ml-agent-envs"
                if cache.is_dir():
                    (home / "envs").symlink_to(cache)
            for i in range(args.warm_runs):
                print(f"warm run {i + 1}/{args.warm_runs}...", flush=True)
                rows["warm"].append(one_up(home, fake.url))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    phases = ["registered", "supervisor up", "proxy up", "sandbox started",
              "first event (agent)", "first event (CLI)"]
    print(f"\n{'seconds from `up`':<24}" + "".join(f"{k:>10}" for k in rows if rows[k]))
    for phase in phases:
        cells = []
        for runs in rows.values():
            if runs:
                cells.append(f"{statistics.median(r[phase] for r in runs):>10.2f}")
        print(f"{phase:<24}" + "".join(cells))
    if rows["cold"] and rows["warm"]:
        cold = rows["cold"][0]["first event (CLI)"]
        warm = statistics.median(r["first event (CLI)"] for r in rows["warm"])
        print(f"\ncold / warm: {cold / warm:.1f}x; warm goal < 3 s: "
              f"{'met' if warm < 3 else 'NOT met'} ({warm:.2f} s)")
    elif rows["warm"]:
        warm = statistics.median(r["first event (CLI)"] for r in rows["warm"])
        print(f"\nwarm goal < 3 s: {'met' if warm < 3 else 'NOT met'} ({warm:.2f} s)")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
