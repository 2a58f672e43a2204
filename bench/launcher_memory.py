"""The launcher's memory while following many runs: 10 and 100 side by side.

    python bench/launcher_memory.py [--runs 10 100] [--events 2000] [--backlog-kb 0 1024]

Each case runs in a fresh process (so ru_maxrss is its own): a throw-away $ML_AGENT_HOME
with hand-written registry entries (tests/cli/runfolders.py), status `running`, whose
supervisor pid file names a live stand-in process (`sh`, with the supervisor's module and
the run folders on its command line, which is what the registry checks). No sandboxes.
One thread per run iterates `LocalBackend.events(run, follow=True)` (what `attach` and
`up` do per run) and counts the events, keeping none; the main thread appends `--events`
protocol events (~200 bytes each) to every run's events.jsonl in small bursts, then marks
every run succeeded, which ends the followers. `--backlog-kb`: events already in each log
before the followers start (a follower that attaches late reads them first).

Printed per case: events followed, RSS (VmRSS) before and after, the peak (VmHWM, the same
as ru_maxrss), tracemalloc's peak of Python allocations while following, each in total and
per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.protocol import ASSISTANT_TEXT  # noqa: E402
from tests.cli.runfolders import make_run  # noqa: E402


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _event(seq: int) -> bytes:
    return (json.dumps({"type": ASSISTANT_TEXT, "seq": seq, "ts": 1.0,
                        "text": "x" * 150}) + "\n").encode()


def child(runs: int, events: int, backlog_kb: int) -> dict[str, float]:
    from ml_agent.backends.local import LocalBackend, registry

    home = Path(tempfile.mkdtemp(prefix="ml-agent-launcher-mem-"))
    ids = [f"20261204-1200-{i:06x}" for i in range(runs)]
    folders = []
    for run_id in ids:
        make_run(home, run_id, status="running", ended_at=None)
        folders.append(str(registry.RunPaths.of(run_id, home).folder))
    stand_in = subprocess.Popen(["/bin/sh", "-c", "sleep 3600; :",
                                 "ml_agent.backends.local.supervisor", *folders],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    backlog = max(0, backlog_kb * 1024 // len(_event(0)))
    seqs = dict.fromkeys(ids, 0)
    try:
        for run_id in ids:
            paths = registry.RunPaths.of(run_id, home)
            paths.pid.write_text(str(stand_in.pid))
            with open(paths.events, "wb") as fh:
                fh.write(b"".join(_event(s) for s in range(1, backlog + 1)))
            seqs[run_id] = backlog
        backend = LocalBackend(home)
        assert all(registry.supervisor_pid(registry.RunPaths.of(r, home)) for r in ids)

        rss_before = _status_kb("VmRSS")
        tracemalloc.start()
        counts = dict.fromkeys(ids, 0)

        def follow(run_id: str) -> None:
            n = 0
            for _ in backend.events(run_id, follow=True):
                n += 1
            counts[run_id] = n

        threads = [threading.Thread(target=follow, args=(r,), daemon=True) for r in ids]
        for thread in threads:
            thread.start()
        burst = 20
        files = {r: open(registry.RunPaths.of(r, home).events, "ab") for r in ids}  # noqa: SIM115
        rss_during = 0
        for _ in range(0, events, burst):
            for run_id, fh in files.items():
                fh.write(b"".join(_event(seqs[run_id] + k + 1) for k in range(burst)))
                fh.flush()
                seqs[run_id] += burst
            rss_during = max(rss_during, _status_kb("VmRSS"))
            time.sleep(0.02)
        for fh in files.values():
            fh.close()
        for run_id in ids:
            paths = registry.RunPaths.of(run_id, home)
            record = registry.read_record(paths)
            record.status, record.ended_at = "succeeded", time.time()
            registry.write_record(paths, record)
        for thread in threads:
            thread.join(120)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert counts == seqs, "a follower lost or repeated events"
        log_bytes = (home / "runs" / ids[0] / "events.jsonl").stat().st_size
    finally:
        os.killpg(stand_in.pid, signal.SIGKILL)  # sh and its sleep
        stand_in.wait()
        subprocess.run(["rm", "-rf", str(home)], check=False)
    return {"runs": runs, "events_per_run": seqs[ids[0]], "log_kb_per_run": log_bytes / 1024,
            "backlog_kb": backlog_kb, "rss_before_kb": rss_before,
            "rss_during_kb": rss_during, "rss_after_kb": _status_kb("VmRSS"),
            "hwm_kb": _status_kb("VmHWM"),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "traced_peak_kb": traced_peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--backlog-kb", type=int, nargs="+", default=[0, 1024])
    parser.add_argument("--child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    print("runs  backlog   events/run  log/run     RSS before  RSS after  peak RSS "
          "(maxrss)  peak-before per run  tracemalloc peak  per run")
    for backlog_kb in args.backlog_kb:
        for runs in args.runs:
            out = subprocess.run([sys.executable, __file__, "--child", str(runs),
                                  str(args.events), str(backlog_kb)],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out)
            grown = r["maxrss_kb"] - r["rss_before_kb"]
            print(f"{runs:4d}  {backlog_kb:5d} KB  {r['events_per_run']:10d}  "
                  f"{r['log_kb_per_run']:6.0f} KB  {r['rss_before_kb'] / 1024:7.1f} MB  "
                  f"{r['rss_after_kb'] / 1024:6.1f} MB  {r['maxrss_kb'] / 1024:8.1f} MB"
                  f"          {grown / runs:7.0f} KB  {r['traced_peak_kb'] / 1024:13.2f} MB"
                  f"  {r['traced_peak_kb'] / runs:6.0f} KB")


if __name__ == "__main__":
    main()
