"""The launcher's part of a run's result.json: the proxy's usage, merged in when the run ends.

The agent writes `<data mount>/runs/<run id>/result.json` with `proxy_usage: null` (it never
sees the proxy's meter). `finalize_run` (app.py) calls `merge_proxy_usage` in a container
that mounts the data volume. The run folder is the agent's to write, so every component is
opened without following links and the file is replaced through its folder's descriptor: a
planted symlink cannot make this write anywhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from ml_agent.contracts import RUN_ID_RE, protocol

#: A result.json bigger than this is not the agent's (pip freeze included, it is a few KiB).
MAX_RESULT_BYTES = 4 * 1024 * 1024
#: Statuses the agent writes while it still runs; the launcher's status replaces them.
UNFINISHED = ("starting", "running")


def merge_proxy_usage(
    data_root: Path, run_id: str, usage: dict[str, float], *, status: str | None = None,
    ended_at: str | None = None,
) -> str:
    """Set `proxy_usage` in the run's result.json; returns what happened, in a few words.

    `status`/`ended_at` (the launcher's view) replace the agent's only when the agent never
    wrote a final one (a stopped sandbox ends without its last write). Raises OSError or
    ValueError when the file cannot be read or written safely.
    """
    fd = _run_folder(data_root, run_id)
    if fd is None:
        return "no run folder"
    try:
        try:
            src = os.open(protocol.RESULT_FILE, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            return "no result.json"
        with os.fdopen(src, "rb") as fh:
            raw = fh.read(MAX_RESULT_BYTES + 1)
        if len(raw) > MAX_RESULT_BYTES:
            raise ValueError(f"result.json is larger than {MAX_RESULT_BYTES} bytes")
        result: Any = json.loads(raw)
        if not isinstance(result, dict):
            raise ValueError("result.json is not a JSON object")
        result["proxy_usage"] = dict(usage)
        if status and result.get("status") in (None, *UNFINISHED):
            result["status"] = status
            if ended_at and not result.get("ended_at"):
                result["ended_at"] = ended_at
        _replace_json(fd, protocol.RESULT_FILE, result)
        return "proxy usage written"
    finally:
        os.close(fd)


def _replace_json(fd: int, name: str, data: Any) -> None:
    """Write `name` in the folder `fd` through a fresh temp file and a rename."""
    tmp = f".{name}.{os.getpid()}.tmp"
    # Whatever is there (a leftover, a planted link or FIFO) goes, not its target.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=fd)
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
    with os.fdopen(out, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)


#: The launcher's record of a run (contracts.RunRecord), kept in its folder on the data
#: volume: the run registry (a modal.Dict whose entries expire) is rebuilt from these.
RUN_RECORD_FILE = "run.json"
MAX_RECORD_BYTES = 64 * 1024


def write_run_record(data_root: Path, run_id: str, record: dict[str, Any]) -> bool:
    """Keep the run's registry entry in its folder; False when there is no run folder."""
    fd = _run_folder(data_root, run_id)
    if fd is None:
        return False
    try:
        _replace_json(fd, RUN_RECORD_FILE, record)
    finally:
        os.close(fd)
    return True


def read_run_records(data_root: Path) -> list[dict[str, Any]]:
    """Every run's registry entry kept on the data volume (unreadable ones are skipped)."""
    runs = data_root / "runs"
    names = sorted(os.listdir(runs)) if runs.is_dir() and not runs.is_symlink() else []
    records = []
    for run_id in filter(RUN_ID_RE.match, names):
        fd = _run_folder(data_root, run_id)
        if fd is None:
            continue
        try:
            src = os.open(RUN_RECORD_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                          dir_fd=fd)
            with os.fdopen(src, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    continue
                raw = fh.read(MAX_RECORD_BYTES + 1)
            if len(raw) > MAX_RECORD_BYTES:
                continue
            data = json.loads(raw)
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
        if isinstance(data, dict) and data.get("run_id") == run_id:
            records.append(data)
    return records


def _run_folder(data_root: Path, run_id: str) -> int | None:
    """A descriptor of `<data_root>/runs/<run_id>`, opened without following links; None
    when it does not exist. Raises ValueError for anything but a run id."""
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    fd = os.open(data_root, os.O_RDONLY | os.O_DIRECTORY)
    for part in ("runs", run_id):
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


#: At most this much of a transcript is replayed (events are cut at MAX_TOOL_RESULT_CHARS).
MAX_REPLAY_BYTES = 64 * 1024 * 1024


def read_run_events(data_root: Path, run_id: str, before: int) -> list[dict[str, Any]]:
    """The events of the run's transcript (the agent's own log) with `seq` below `before`.

    What a re-attaching client replays when the sandbox no longer has the start of its
    output (V2 sandboxes keep only recent output). Lines that are not events are skipped.
    """
    fd = _run_folder(data_root, run_id)
    if fd is None:
        return []
    try:
        try:
            src = os.open(protocol.TRANSCRIPT_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                          dir_fd=fd)
        except FileNotFoundError:
            return []
        with os.fdopen(src, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ValueError("the transcript is not a regular file")
            raw = fh.read(MAX_REPLAY_BYTES)
    finally:
        os.close(fd)
    events = []
    for line in raw.decode("utf-8", "replace").splitlines():
        event = protocol.decode_event(line)
        if event is not None and event["seq"] < before:
            events.append(event)
    return events
