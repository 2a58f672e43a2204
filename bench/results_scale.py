"""`ps` and `results` with 1,000 runs in the local registry (issue 15's goal: < 1 s each),
side by side in one run, each as the user runs it (a fresh `ml-agent` process).

    python bench/results_scale.py [--runs 1000] [--repeat 5]

Builds a throw-away $ML_AGENT_HOME with `--runs` finished runs, each with its run.json, a
result.json and two eval/*.json files on the data volume (what `results` reads per run),
then times `ps --backend local`, `results --last 0` (every run: a table of 1,000 rows) and
`results --last 0 --json`, against `ml-agent --version` (interpreter start-up, the floor).

`--modal N` also reads N Modal runs (registry Dict + data volume, through the real SDK
against the fake control plane on 127.0.0.1, so round trips cost loopback time only), one
run at a time against `results`' thread pool, in-process.
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


def modal_side_by_side(runs: int, repeat: int) -> None:
    from ml_agent.backends.modal.stores import RunRegistry
    from ml_agent.cli.results import MODAL_WORKERS, gather
    from ml_agent.contracts import RunRecord
    from tests.fakes.modal_server import FakeModal

    with tempfile.TemporaryDirectory() as tmp, FakeModal() as fake, \
            fake.environ(str(Path(tmp) / "no-modal.toml")):
        home = Path(tmp) / "home"
        registry = RunRegistry()
        for n in range(runs):
            run_id = f"20261101-{n // 60:02d}{n % 60:02d}-{n:06x}"
            make_run(home, run_id, result={"cost_usd": 0.1, "turns": 3},
                     evals={"metrics": {"accuracy": n / runs}})
            registry.put(RunRecord(run_id=run_id, backend="modal", app="ml-agent",
                                   config="c.yaml", config_hash="h", gpu="A10",
                                   status="succeeded", created_at=1.0, ended_at=2.0,
                                   data_volume="sandbox-data"))
        fake.volume_files("sandbox-data", home / "volumes" / "sandbox-data")
        records = registry.all()
        med = {}
        for workers in (1, MODAL_WORKERS):
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                rows = gather(records, workers)
                times.append(time.perf_counter() - start)
            assert all(r.metrics for r in rows), rows[0].notes
            med[workers] = statistics.median(times)
    print(f"{runs} Modal runs (fake control plane on loopback), rows gathered in-process:")
    for workers, seconds in med.items():
        print(f"  {workers:2d} thread(s)  {seconds * 1000:7.0f} ms  "
              f"{seconds / runs * 1000:5.1f} ms/run")
    print(f"  ratio 1 thread / {MODAL_WORKERS}: {med[1] / med[MODAL_WORKERS]:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--modal", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.modal:
        modal_side_by_side(args.modal, args.repeat)
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
