"""Launch time per run of a sweep on Modal (issue 15's goal: < 0.2 s per run after the
first), side by side with the same number of sequential `up --detach`, in one run.

    python bench/sweep_launch.py [--runs 100] [--profile]

Both go through the real CLI, plan building and Modal SDK, in-process, against the fake
control plane on 127.0.0.1 (tests/fakes/modal_server.py), so a round trip costs loopback
time only: what is measured is our own work per launch. The sweep is `configs/a10.yaml`
over `--runs` tasks with `max_parallel` at `--runs` (no run ever waits for a slot), driven
in the foreground (the detached driver runs the same `Driver`, in a process of its own);
its per-run times come from the `launched_at` the driver notes in the sweep record. Each
side gets a fresh control plane, so each first run deploys the app; the sweep's first run
also loads the sweep file and plans all `--runs` runs (the budget check) before launching.
`--profile` prints where the sweep's time goes (cProfile, top functions by cumulative time).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml_agent.cli import main as cli  # noqa: E402
from ml_agent.contracts import CONFIGS_DIR  # noqa: E402
from tests.fakes.modal_server import FakeModal  # noqa: E402

SECRETS = {"anthropic-secret": {"ANTHROPIC_API_KEY": "sk-ant-bench"},
           "github-secret": {"GITHUB_TOKEN": "gh"}, "hf-write": {"HF_TOKEN": "hf"}}


def run_cli(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli(argv)
    assert code == 0, argv


def sweep(tmp: Path, runs: int, profile: bool) -> tuple[float, list[float]]:
    """Seconds to the first launch, and the seconds between launches after it."""
    from ml_agent.runs.sweeps import SweepRecord, sweeps_dir

    path = tmp / "sweep.yaml"
    tasks = "".join(f"  - task {n}\n" for n in range(runs))
    path.write_text(f"base: {CONFIGS_DIR / 'a10.yaml'}\ntasks:\n{tasks}"
                    f"max_parallel: {runs}\n")
    profiler = cProfile.Profile() if profile else None
    start = time.time()
    if profiler:
        profiler.enable()
    run_cli(["sweep", str(path), "--foreground"])
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())
    [record_path] = sweeps_dir().glob("sw-*.json")
    record = SweepRecord.load(record_path.stem)
    stamps = sorted(r["launched_at"] for r in record.runs)
    assert len(stamps) == runs and all(stamps)
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def ups(runs: int) -> list[float]:
    config = str(CONFIGS_DIR / "a10.yaml")
    times = []
    for n in range(runs):
        start = time.perf_counter()
        run_cli(["up", config, "--detach", "--task", f"task {n}"])
        times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def control_plane(runs: int) -> Iterator[Path]:
    """A fresh fake control plane and $ML_AGENT_HOME: each side deploys the app once."""
    with tempfile.TemporaryDirectory() as tmp, FakeModal() as fake, \
            fake.environ(str(Path(tmp) / "no-modal.toml")):
        os.environ["ML_AGENT_HOME"] = str(Path(tmp) / "home")
        for name, env in SECRETS.items():
            fake.add_secret(name, env)
        yield Path(tmp)
        assert len(fake.sandboxes) == runs, len(fake.sandboxes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench"
    with control_plane(args.runs) as tmp:
        first, after = sweep(tmp, args.runs, args.profile)
    with control_plane(args.runs):
        up_times = ups(args.runs)
    per_run = sum(after) / len(after)
    up_first, up_after = up_times[0], sum(up_times[1:]) / (len(up_times) - 1)
    print(f"{args.runs} runs on the fake Modal control plane (loopback), in-process:")
    print(f"  sweep (one driver):      first run {first:6.2f} s   after the first "
          f"{per_run:6.3f} s/run   slowest {max(after):6.3f} s   (goal < 0.2 s/run)")
    print(f"  {args.runs} x up --detach:     first run {up_first:6.2f} s   after the first "
          f"{up_after:6.3f} s/run   slowest {max(up_times[1:]):6.3f} s")
    print(f"  ratio up --detach / sweep, per run after the first: {up_after / per_run:.2f}x")


if __name__ == "__main__":
    main()
