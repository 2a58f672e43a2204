"""`ps` and `results` with 1,000 runs in the local registry (issue 15's goal: < 1 s each),
side by side in one run, each as the user runs it (a fresh `ml-agent` process).

    python bench/results_scale.py [--runs 1000] [--repeat 5]

Builds a throw-away $ML_AGENT_HOME with `--runs` finished runs, each with its run.json, a
result.json and two eval/*.json files on the data volume (what `results` reads per run),
then times `ps --backend local`, `results --last 0` (every run: a table of 1,000 rows) and
`results --last 0 --json`, against `ml-agent --version` (interpreter start-up, the floor).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cli.runfolders import make_run  # noqa: E402


def build(home: Path, runs: int) -> None:
    for n in range(runs):
        day, minute = divmod(n, 1440)
        run_id = f"202611{day + 1:02d}-{minute // 60:02d}{minute % 60:02d}-{n:06x}"
        make_run(home, run_id, created_at=1_000.0 + n, ended_at=1_600.0 + n,
                 sweep=f"sw-20261101-0000-{n // 100:06x}",
                 result={"run_id": run_id, "status": "succeeded", "cost_usd": 0.01 * n,
                         "agent_cost_usd": 0.01 * n, "turns": n % 40,
                         "pip_freeze": ["torch==2.9.0"] * 200},
                 evals={"metrics": {"accuracy": n / runs, "f1": n / runs / 2},
                        "test": {"loss": 1 - n / runs}})


def timed(args: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ml_agent", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        build(home, args.runs)
        env = {**os.environ, "ML_AGENT_HOME": str(home), "COLUMNS": "200",
               "MODAL_CONFIG_PATH": str(Path(tmp) / "no-modal.toml")}
        env.pop("MODAL_TOKEN_ID", None)
        env.pop("MODAL_TOKEN_SECRET", None)
        commands = {
            "--version (start-up)": ["--version"],
            "ps --backend local": ["ps", "--backend", "local"],
            "results (20 newest)": ["results", "--backend", "local"],
            "results --last 0": ["results", "--backend", "local", "--last", "0"],
            "results --last 0 --json": ["results", "--backend", "local", "--last", "0",
                                        "--json"],
        }
        med = {name: timed(argv, env, args.repeat) for name, argv in commands.items()}
        rows = json.loads(subprocess.run(
            [sys.executable, "-m", "ml_agent", *commands["results --last 0 --json"]],
            env=env, check=True, capture_output=True, text=True).stdout)
    assert len(rows) == args.runs, len(rows)
    floor = med["--version (start-up)"]
    print(f"{args.runs} runs in the local registry; median of {args.repeat}, wall clock "
          f"of a fresh process")
    for name, seconds in med.items():
        print(f"  {name:26s} {seconds * 1000:7.0f} ms   {seconds / floor:4.1f}x start-up")


if __name__ == "__main__":
    main()
