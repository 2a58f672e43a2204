"""`up --resume RUN`, the backend-neutral part: is the run resumable, what budget is left,
which Claude session it continues.

The conversation lives in the run folder on the data volume (`CLAUDE_CONFIG_DIR` is
`<run dir>/claude`), so a new sandbox that mounts the same volume and starts the agent with
`ML_AGENT_RESUME_SESSION` continues it. The session id comes from, in this order:
result.json's `session_id` (the agent writes it), the newest session file under
`claude/projects/` (an agent that crashed before writing it), the last `result` event of
the run's events. Everything here reads agent-written files: through `fileio`, no link
followed, a size cap.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ml_agent.contracts import RunRecord, protocol
from ml_agent.errors import BackendError, UnsafeFile
from ml_agent.fileio import open_dir, read_untrusted
from ml_agent.results import MAX_RESULT_BYTES, open_run_folder

#: The Claude CLI's session files: `<CLAUDE_CONFIG_DIR>/projects/<cwd, escaped>/<id>.jsonl`.
SESSION_SUFFIX = ".jsonl"
#: Folders (projects) looked at, and session files per folder: a bound on a planted tree.
MAX_ENTRIES = 10_000


def is_session_id(value: Any) -> bool:
    """A value that may be passed on as a session id (the CLI's ids are UUIDs)."""
    return (isinstance(value, str) and 8 <= len(value) <= 64
            and set(value) <= protocol.SESSION_ID_CHARS)


def check_resumable(record: RunRecord, *, live: bool) -> None:
    """Raise BackendError when the run's sandbox still runs (`live`: the backend's view;
    a run whose status says running but whose sandbox is gone crashed, and can be resumed)."""
    if live:
        raise BackendError(
            f"run {record.run_id} is still running: `ml-agent attach {record.run_id}` joins "
            f"it (`ml-agent stop {record.run_id}` ends it, then it can be resumed)"
        )


def spent(record: RunRecord, result: dict[str, Any] | None) -> float:
    """What the run cost so far: the proxy's metering, from result.json's `cost_usd` or the
    registry's, whichever is higher (a crash can leave either one behind)."""
    figures = [record.cost_usd, (result or {}).get("cost_usd")]
    return max((float(x) for x in figures
                if isinstance(x, int | float) and not isinstance(x, bool)), default=0.0)


def remaining_budget(record: RunRecord, budget_usd: float | None,
                     result: dict[str, Any] | None, *,
                     raised_to: float | None = None) -> float | None:
    """The budget the new leg gets: the run's budget minus what it cost so far (None: no
    budget). `raised_to` (`up --resume RUN --budget USD`) replaces the run's budget; it must
    be more than the run has cost. Raises BackendError when nothing is left."""
    cost = spent(record, result)
    if raised_to is not None:
        if not raised_to > cost:
            raise BackendError(
                f"run {record.run_id} has already cost ${cost:.4f}: --budget is the run's "
                f"new total budget and must be more than that (got ${raised_to:g})")
        return round(raised_to - cost, 6)
    if budget_usd is None:
        return None
    left = budget_usd - cost
    if left <= 0:
        raise BackendError(
            f"run {record.run_id} has spent its budget (proxy.budget_usd ${budget_usd:g}; "
            f"cost so far ${cost:.4f}): nothing is left to resume it with; raise it with "
            f"`ml-agent up --resume {record.run_id} --budget USD` (the run's new total "
            "budget), or start a new run (`ml-agent up`)"
        )
    return round(left, 6)


def read_result(data_root: Path, run_id: str) -> dict[str, Any] | None:
    """The run's result.json, or None when it is missing or unreadable."""
    fd = open_run_folder(data_root, run_id)
    if fd is None:
        return None
    try:
        data = json.loads(read_untrusted(protocol.RESULT_FILE, cap=MAX_RESULT_BYTES, dir_fd=fd))
    except (OSError, ValueError, UnsafeFile):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def newest_session(data_root: Path, run_id: str) -> str | None:
    """The newest session file's id under the run's `claude/projects/` (None: none).

    Walked through descriptors without following links; only regular files count."""
    try:
        top = open_dir(data_root, "runs", run_id, "claude", "projects")
    except (OSError, ValueError, UnsafeFile):
        return None
    best: tuple[float, str] | None = None
    try:
        for project in os.listdir(top)[:MAX_ENTRIES]:
            try:
                fd = os.open(project, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            except OSError:
                continue
            try:
                for name in os.listdir(fd)[:MAX_ENTRIES]:
                    session = name.removesuffix(SESSION_SUFFIX)
                    if name == session or not is_session_id(session):
                        continue
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) and (best is None or st.st_mtime > best[0]):
                        best = (st.st_mtime, session)
            finally:
                os.close(fd)
    finally:
        os.close(top)
    return best[1] if best else None


def session_from_events(events: Iterable[dict[str, Any]]) -> str | None:
    """The session id of the last `result` event that names a valid one."""
    found = None
    for event in events:
        if event.get("type") == protocol.RESULT and is_session_id(event.get("session_id")):
            found = event["session_id"]
    return found


def find_session(data_root: Path, run_id: str, result: dict[str, Any] | None,
                 events: Iterable[dict[str, Any]] = ()) -> str:
    """The Claude session the run continues (see the module docstring for the order).

    Raises BackendError when the run has none (its agent never reached the model)."""
    recorded = (result or {}).get("session_id")
    if is_session_id(recorded):
        return str(recorded)
    session = newest_session(data_root, run_id) or session_from_events(events)
    if session is None:
        raise no_session(run_id)
    return session


def no_session(run_id: str) -> BackendError:
    """The error for a run whose agent never reached the model: nothing to continue."""
    return BackendError(
        f"run {run_id} has no conversation to continue (no session in its result.json, "
        f"its claude/projects folder or its events): start a new run with `ml-agent up`"
    )
