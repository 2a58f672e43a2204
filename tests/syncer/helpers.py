"""Real collaborators for the syncer tests: trackio databases, a recording uploader, a clock."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ml_agent.syncer.snapshot import Snapshot
from ml_agent.syncer.upload import UploadError

# trackio itself creates the template database (its real schema), in a child interpreter
# because trackio reads TRACKIO_DIR at import.
MAKE_TEMPLATE = """\
import trackio
trackio.init(project="template", name="run-0")
for i in range(3):
    trackio.log({"loss": 1.0 / (i + 1)})
trackio.finish()
"""

# A training script's view: trackio.log continuously, then finish (flushes everything).
TRACKIO_WRITER = """\
import sys, time
import trackio
n = int(sys.argv[1])
trackio.init(project="live", name="run-1")
for i in range(n):
    trackio.log({"loss": 1.0 / (i + 1), "i": i})
    time.sleep(0.002)
trackio.finish()
"""


def clean_env(trackio_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKIO_", "HF_"))}
    env.update(
        TRACKIO_DIR=str(trackio_dir),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(trackio_dir.parent / "hf-home"),
    )
    return env


def make_template(where: Path) -> Path:
    """A trackio-made database with 3 rows in project `template`; returns its path."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", MAKE_TEMPLATE], env=clean_env(where), check=True,
                   capture_output=True, timeout=120)
    return where / "template.db"


def add_project(trackio_dir: Path, template: Path, name: str) -> Path:
    trackio_dir.mkdir(parents=True, exist_ok=True)
    dest = trackio_dir / f"{name}.db"
    shutil.copyfile(template, dest)
    return dest


class WalWriter:
    """Writes metrics rows the way trackio does: WAL mode, synchronous=NORMAL, one txn each."""

    def __init__(self, db: Path, checkpoint_every: int = 0) -> None:
        self.conn = sqlite3.connect(str(db), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.checkpoint_every = checkpoint_every
        self.written = 0

    def log(self, step: int) -> None:
        self.conn.execute(
            "INSERT INTO metrics (run_id, timestamp, run_name, step, metrics) "
            "VALUES ('w', '2026-11-26T00:00:00', 'writer', ?, '{\"loss\": 1.0}')",
            (step,),
        )
        self.written += 1
        if self.checkpoint_every and self.written % self.checkpoint_every == 0:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self.conn.close()


def rows(db: Path, where: str = "1") -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM metrics WHERE {where}").fetchone()[0]
    finally:
        conn.close()


@dataclass
class Upload:
    project: str
    space_id: str
    private: bool
    at: float  # the clock's time
    db: Path  # the stored copy of what was received
    integrity: str
    media: dict[str, bytes] = field(default_factory=dict)


class RecordingUploader:
    """A real uploader with no network: stores each snapshot it receives, checks it, and
    fails the first `fail_first` calls (per project listed in `fail_projects`, or all)."""

    def __init__(self, store: Path, *, clock=time.monotonic, fail_first: int = 0,
                 fail_projects: set[str] | None = None) -> None:
        self.store = store
        self.store.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.fail_first = fail_first
        self.fail_projects = fail_projects
        self.uploads: list[Upload] = []
        self.attempts: list[tuple[str, float]] = []
        self._failures: dict[str, int] = {}

    def upload(self, snapshot: Snapshot, space_id: str, private: bool) -> None:
        project = snapshot.project
        self.attempts.append((project, self.clock()))
        if self.fail_projects is None or project in self.fail_projects:
            done = self._failures.get(project, 0)
            if done < self.fail_first:
                self._failures[project] = done + 1
                raise UploadError(f"the Hub said 503 (failure {done + 1})")
        stored = self.store / f"{len(self.uploads):05d}-{project}.db"
        shutil.copyfile(snapshot.db_path, stored)
        # Only the database itself: a snapshot must be one self-contained file.
        assert not Path(str(snapshot.db_path) + "-wal").exists()
        conn = sqlite3.connect(stored)
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.close()
        media = {}
        media_root = snapshot.root / "media" / project
        if media_root.exists():
            for path in sorted(media_root.rglob("*")):
                assert not path.is_symlink()
                if path.is_file():
                    media[path.relative_to(media_root).as_posix()] = path.read_bytes()
        self.uploads.append(Upload(project, space_id, private, self.clock(), stored, integrity,
                                   media))

    def of(self, project: str) -> list[Upload]:
        return [u for u in self.uploads if u.project == project]


class FakeClock:
    """Monotonic seconds that move only when told to (sleep advances them)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `root` with (size, mtime_ns, mode): the volume must not change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out
