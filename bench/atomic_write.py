"""What the durable atomic write costs: fileio.atomic_write_json (fsync of the file and its
folder) against the unsynced temp-and-rename it replaced, side by side in one run.

    python bench/atomic_write.py [--dir DIR] [--writes 200]

Writes a run.json-sized record (~0.4 KB) `--writes` times each way, interleaved, in DIR
(default: a temp folder under $ML_AGENT_HOME's parent, i.e. the disk the registry is on).
The supervisor writes run.json at each status change, each agent turn and at most once a
second while the proxy's meter moves; so per-write cost × a few per second is the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from ml_agent.contracts import ml_agent_home
from ml_agent.fileio import atomic_write_json

RECORD = {"run_id": "20261126-0315-a1b2c3", "backend": "local", "app": "ml-agent",
          "config": "configs/local.yaml", "config_hash": "0" * 64, "gpu": None,
          "status": "running", "created_at": 1.0, "ended_at": None, "sandbox_id": "bwrap:1",
          "run_dir": "/data/runs/20261126-0315-a1b2c3", "cost_usd": 0.1234, "exit_code": None,
          "agent_cost_usd": 0.12}


def unsynced(path: Path, data: object) -> None:
    """The registry's write before fileio: temp file, rename, no fsync."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    base = args.dir or ml_agent_home().parent
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as folder:
        path = Path(folder) / "run.json"
        times: dict[str, list[float]] = {"unsynced": [], "atomic_write_json": []}
        for _ in range(args.writes):
            for name, write in (("unsynced", unsynced), ("atomic_write_json", _durable)):
                start = time.perf_counter()
                write(path, RECORD)
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) * 1000 for name, ts in times.items()}
    print(f"folder: {base} ({args.writes} writes each, interleaved)")
    for name, ms in med.items():
        print(f"  {name:18s} median {ms:7.3f} ms")
    print(f"  ratio durable/unsynced: {med['atomic_write_json'] / med['unsynced']:.1f}x")


def _durable(path: Path, data: object) -> None:
    atomic_write_json(path, data, mode=0o644, default=str)


if __name__ == "__main__":
    main()
