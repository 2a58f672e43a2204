"""Time from `ml-agent up configs/local.yaml` to the agent's first event and first model call.

    python bench/local_up.py [--warm-runs 3] [--no-cold] [--baseline OLD_AGENT.py]

Cold: a fresh ML_AGENT_HOME, so `up` builds the image (the pip layers' virtualenv) first.
Warm: the image is cached. Both run the real CLI, supervisor, proxy, sandbox and agent
against the fake Anthropic API on 127.0.0.1, and print the phases side by side: CLI start
-> run registered (config, checks, image) -> sandbox started (supervisor, proxy) -> first
event (bwrap, Python, the agent's settings) -> first model request at the upstream (the
agent's SDK imported, its Claude CLI started and connected) -> first assistant event printed
by the CLI -> the CLI's exit (the run's end).

The agent says `ready` as soon as it accepts input, before its Claude CLI is connected, so
"first event" alone would flatter it: the first model request and the first assistant event
are the honest "it is working" numbers. Goal: warm first event under 3 s.

`--baseline FILE` adds a column: warm runs with another agent.py in the sandbox (e.g.
`git show HEAD:agent/agent.py > /tmp/old_agent.py`), interleaved with the repo's own runs.
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

from tests.fakes.anthropic import FakeAnthropic, main_loop  # noqa: E402

KEY = "sk-ant-bench-key"
CLI = [sys.executable, str(Path(sys.executable).with_name("ml-agent"))]
PHASES = ["registered", "supervisor up", "proxy up", "sandbox started", "first event (agent)",
          "first event (CLI)", "first model request", "first assistant event", "result (CLI)"]
# The last four are timed in this process (monotonic clock): the CLI's output and the fake.


def agent_layers(agent: Path) -> str:
    """base.yaml's image layers with another agent.py (same pip layer: same cached image)."""
    files = [(agent, "/agent/agent.py"), (REPO / "agent" / "protocol.py", "/agent/protocol.py")]
    layers = ["{apt: [git, curl]}", "{pip: [claude-agent-sdk==0.2.184, trackio==0.43.0]}",
              *(f"{{file: {{src: {src}, dest: {dest}}}}}" for src, dest in files),
              f"{{dir: {{src: {REPO / '.claude'}, dest: /app/.claude}}}}"]
    return f"image.layers=[{', '.join(layers)}]"


def one_up(home: Path, fake: FakeAnthropic, agent: Path | None = None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE", "MODAL_"))}
    env["ML_AGENT_HOME"] = str(home)
    args = ["up", "configs/local.yaml", "--task", "say ok", "--set", f"proxy.upstream={fake.url}",
            "--set", "proxy.upstream_secret=bench",
            "--set", 'sandbox.env.CLAUDE_CODE_MAX_RETRIES="1"',
            *(["--set", agent_layers(agent)] if agent else [])]
    fake.reset()
    runs = home / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    start_wall = time.time()
    start = time.monotonic()  # the fake stamps its calls with time.monotonic()
    proc = subprocess.Popen([*CLI, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = answer = None
    for line in proc.stdout:  # the CLI prints events as they come
        if first is None and line.strip():
            first = time.monotonic() - start  # `ready`
        if answer is None and line.strip() == "ok":  # the fake model's answer
            answer = time.monotonic() - start
    proc.wait()
    done = time.monotonic() - start
    if proc.returncode != 0 or first is None or answer is None:
        sys.exit(f"up failed ({proc.returncode}):\n{proc.stderr.read() if proc.stderr else ''}")
    # Phases stamped by other processes use the wall clock: it must not have stepped.
    drift = (time.time() - time.monotonic()) - (start_wall - start)
    if abs(drift) > 0.05:
        print(f"  (the wall clock stepped {drift:+.2f} s: the first five rows are off)")
    (run,) = set(runs.iterdir()) - before  # run ids sort by minute only: not by name
    record = json.loads((run / "run.json").read_text())
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    timing = json.loads((run / "timing.json").read_text())
    turns = [c for c in fake.message_calls() if main_loop(c)]
    return {
        "registered": record["created_at"] - start_wall,
        "supervisor up": timing["supervisor"] - start_wall,
        "proxy up": timing["proxy"] - start_wall,
        "sandbox started": timing["sandbox"] - start_wall,
        "first event (agent)": events[0]["ts"] - start_wall,
        "first event (CLI)": first,
        "first model request": turns[0].started_at - start,
        "first assistant event": answer,
        "result (CLI)": done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold build")
    parser.add_argument("--baseline", type=Path, help="another agent.py, for a warm column")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ml-agent-bench-"))
    rows: dict[str, list[dict[str, float]]] = {"cold": [], "warm": [], "baseline": []}
    baseline = args.baseline.resolve() if args.baseline else None
    try:
        with FakeAnthropic(keys={KEY}) as fake:
            home = root / "home"
            (home / "secrets").mkdir(parents=True)
            (home / "secrets" / "bench.env").write_text(f"ANTHROPIC_API_KEY={KEY}\n")
            if not args.no_cold:
                print("cold: building the image (minutes)...", flush=True)
                rows["cold"].append(one_up(home, fake))
            else:  # reuse the test suite's cached image when there is one
                cache = REPO / ".pytest_cache" / "d" / "ml-agent-envs"
                if cache.is_dir():
                    (home / "envs").symlink_to(cache)
            for i in range(args.warm_runs):
                print(f"warm run {i + 1}/{args.warm_runs}...", flush=True)
                rows["warm"].append(one_up(home, fake))
                if baseline is not None:
                    print(f"baseline run {i + 1}/{args.warm_runs}...", flush=True)
                    rows["baseline"].append(one_up(home, fake, baseline))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    columns = [k for k in rows if rows[k]]
    print(f"\n{'seconds from `up`':<24}" + "".join(f"{k:>10}" for k in columns))
    for phase in PHASES:
        cells = [f"{statistics.median(r[phase] for r in rows[k]):>10.2f}" for k in columns]
        print(f"{phase:<24}" + "".join(cells))
    if rows["warm"]:
        warm = {p: statistics.median(r[p] for r in rows["warm"]) for p in PHASES}
        if rows["cold"]:
            cold = rows["cold"][0]["first event (CLI)"]
            print(f"\ncold / warm (first event): {cold / warm['first event (CLI)']:.1f}x")
        if rows["baseline"]:
            base = {p: statistics.median(r[p] for r in rows["baseline"]) for p in PHASES}
            print("\nbaseline / warm: " + ", ".join(
                f"{p} {base[p] / warm[p]:.1f}x" for p in
                ("first event (CLI)", "first model request", "first assistant event")))
        met = "met" if warm["first event (CLI)"] < 3 else "NOT met"
        print(f"warm goal < 3 s to the first event: {met} ({warm['first event (CLI)']:.2f} s); "
              f"first model request after {warm['first model request']:.2f} s")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
