"""The local run registry: `$ML_AGENT_HOME/runs/<run id>/`, one folder per run.

    launch.json     what the supervisor needs (plan, task, run token, host layout); 0600
    run.json        the RunRecord (`ps`), rewritten atomically by the supervisor
    events.jsonl    the agent's protocol events (stdout lines that decode as events)
    output.log      everything the sandbox printed (stdout and stderr)
    supervisor.log  the supervisor's own log (proxy, syncer, lifecycle)
    supervisor.pid  the supervisor's pid (its process group holds the whole run)
    stdin           a FIFO to the agent's stdin (exists while the run is live)
    home/, work/    the sandbox's writable HOME and workdir
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ml_agent.contracts import RUN_ID_RE, RunRecord, ml_agent_home
from ml_agent.errors import RunNotFound
from ml_agent.fileio import atomic_write_json

FINAL = frozenset({"succeeded", "failed", "stopped", "timeout"})
START_GRACE_S = 60.0  # `up` waits as long for a sandbox to start (backend.START_TIMEOUT_S)


def home() -> Path:
    return ml_agent_home()


def runs_dir(root: Path | None = None) -> Path:
    return (root or home()) / "runs"


class RunPaths:
    """The files of one run's registry folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.launch = folder / "launch.json"
        self.record = folder / "run.json"
        self.events = folder / "events.jsonl"
        self.output = folder / "output.log"
        self.log = folder / "supervisor.log"
        self.pid = folder / "supervisor.pid"
        self.stdin = folder / "stdin"
        self.home = folder / "home"
        self.work = folder / "work"

    @property
    def run_id(self) -> str:
        return self.folder.name

    @classmethod
    def of(cls, run_id: str, root: Path | None = None) -> RunPaths:
        return cls(runs_dir(root) / run_id)


def write_json(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Atomic (`fileio.atomic_write_json`): readers see the old or the new file, never half."""
    atomic_write_json(path, data, mode=mode, default=str)


def read_record(paths: RunPaths) -> RunRecord:
    try:
        return RunRecord.from_dict(json.loads(paths.record.read_text()))
    except FileNotFoundError:
        raise RunNotFound(f"no local run {paths.run_id!r} (see `ml-agent ps`)") from None


def write_record(paths: RunPaths, record: RunRecord) -> None:
    write_json(paths.record, record.to_dict())


def write_pid(paths: RunPaths, pid: int) -> None:
    """Atomic, like run.json: `up`, `ps`, `logs -f` and `stop` poll this file while it is
    written, and a reader that saw it empty would take a live supervisor for a dead one."""
    write_json(paths.pid, pid)


def supervisor_pid(paths: RunPaths) -> int | None:
    """The run's live supervisor, checked by its command line (pids get reused)."""
    try:
        pid = int(paths.pid.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"ml_agent.backends.local.supervisor" in cmdline and str(paths.folder).encode() in cmdline:
        return pid
    return None


def supervisor_gone(paths: RunPaths, record: RunRecord, now: float | None = None) -> bool:
    """A run not ended whose supervisor is gone (killed, or the machine rebooted). `up`
    writes a `starting` run.json before it spawns the supervisor: a run that started less
    than START_GRACE_S ago is given that long for its supervisor to appear."""
    if record.status in FINAL or supervisor_pid(paths) is not None:
        return False
    if record.status == "starting":
        started = record.legs[-1].get("started_at") if record.legs else record.created_at
        if isinstance(started, int | float) and (now or time.time()) - started < START_GRACE_S:
            return False
    return True


def exited(pid: int) -> bool:
    """Every thread of `pid` has exited, so its files (a run's GPU locks) are closed. Its
    command line empties, and its main thread turns zombie, while other threads may still
    be exiting and holding them."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z" and [p.name for p in Path(f"/proc/{pid}/task").iterdir()] == [
            str(pid)]
    except (OSError, IndexError):
        return True


def find(run: str, root: Path | None = None) -> RunPaths:
    """A run by id or unique prefix (newest first)."""
    base = runs_dir(root)
    if RUN_ID_RE.match(run) and (base / run).is_dir():
        return RunPaths(base / run)
    matches = sorted(p for p in base.glob(f"{run}*") if p.is_dir()) if base.is_dir() else []
    if "/" in run or not run or not matches:
        raise RunNotFound(f"no local run {run!r} (see `ml-agent ps`)")
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:5])
        raise RunNotFound(f"{run!r} matches several runs ({names}); give more of the id")
    return RunPaths(matches[0])


def all_runs(root: Path | None = None) -> list[RunPaths]:
    base = runs_dir(root)
    if not base.is_dir():
        return []
    return [RunPaths(p) for p in sorted(base.iterdir(), reverse=True) if RUN_ID_RE.match(p.name)]
