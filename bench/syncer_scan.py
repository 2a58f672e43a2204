"""Syncer cycle cost: idle over 100 projects vs one changed project, side by side.

    python bench/syncer_scan.py [--projects 100] [--repeat 50]

Builds a trackio folder of real trackio 0.43 databases (one made by trackio itself, then
copied), then times `Syncer.cycle()` with an uploader that only counts calls: an idle cycle
(nothing changed: lstat only), a cycle where one project got a row (one snapshot), and for
scale the cost of snapshotting every project each cycle (what a syncer without change
detection would pay before even uploading). Goal: idle cycle under 50 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml_agent.syncer import Syncer  # noqa: E402
from ml_agent.syncer.snapshot import Snapshot, snapshot_project  # noqa: E402

MAKE = """\
import trackio
trackio.init(project="template", name="run-0")
for i in range(200):
    trackio.log({"loss": 1.0 / (i + 1), "acc": i / 200})
trackio.finish()
"""


class CountingUploader:
    def __init__(self) -> None:
        self.calls = 0

    def upload(self, snapshot: Snapshot, space_id: str, private: bool) -> None:
        self.calls += 1


def timed(fn, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncer-bench-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKIO_")}
        env.update(TRACKIO_DIR=str(root / "template"), HF_HUB_OFFLINE="1")
        subprocess.run([sys.executable, "-c", MAKE], env=env, check=True, capture_output=True)
        template = root / "template" / "template.db"
        size = template.stat().st_size
        vol = root / "vol"
        vol.mkdir()
        for i in range(args.projects):
            shutil.copyfile(template, vol / f"idle-{i:03d}.db")
        busy_db = vol / "busy.db"
        shutil.copyfile(template, busy_db)
        writer = sqlite3.connect(busy_db, isolation_level=None)
        writer.execute("PRAGMA journal_mode = WAL")
        uploader = CountingUploader()
        syncer = Syncer(vol, uploader, resolve_space=lambda: "my-org/metrics",
                        work_dir=root / "work", log=lambda _: None)
        syncer.cycle()  # first cycle: everything uploaded once
        first_calls = uploader.calls

        idle_med, idle_max = timed(syncer.cycle, args.repeat)
        assert uploader.calls == first_calls, "an idle cycle uploaded something"

        step = [0]

        def one_change() -> None:
            step[0] += 1
            writer.execute(
                "INSERT INTO metrics (run_id, timestamp, run_name, step, metrics) "
                "VALUES ('b', '2026-11-26T00:00:00', 'busy', ?, '{\"loss\": 0.5}')", (step[0],))
            report = syncer.cycle()
            assert report.uploaded == ["busy"], report

        # The insert is inside the timed call; it costs microseconds next to the snapshot.
        change_med, change_max = timed(one_change, args.repeat)

        def snapshot_all() -> None:
            for i in range(args.projects):
                snapshot_project(vol, f"idle-{i:03d}", root / "naive" / str(i))

        naive_med, naive_max = timed(snapshot_all, max(3, args.repeat // 10))
        writer.close()
        syncer.close()

    n = args.projects + 1
    print(f"trackio folder: {n} trackio-made projects ({args.projects} idle + 1 busy, "
          f"{size // 1024} KiB each); {args.repeat} cycles each")
    print(f"{'cycle':<44} {'median ms':>10} {'max ms':>10}")
    print(f"{'idle (nothing changed; goal < 50 ms)':<44} {idle_med:>10.2f} {idle_max:>10.2f}")
    print(f"{'one project changed (1 snapshot + upload)':<44} "
          f"{change_med:>10.2f} {change_max:>10.2f}")
    print(f"{'for scale: snapshot all ' + str(args.projects) + ' every cycle':<44} "
          f"{naive_med:>10.2f} {naive_max:>10.2f}")
    print(f"one-changed / idle = {change_med / idle_med:.1f}x; "
          f"snapshot-all / idle = {naive_med / idle_med:.0f}x")
    print("idle goal met" if idle_med < 50 else "IDLE GOAL MISSED (>= 50 ms)")


if __name__ == "__main__":
    main()
