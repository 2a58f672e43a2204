"""The launcher's part of a run's result.json: the proxy's metering, merged in at the end.

The agent writes `<data mount>/runs/<run id>/result.json` with `cost_usd` and `proxy_usage`
null (it never sees the proxy's meter) and its own figure as `agent_cost_usd`. Both
backends call `merge_proxy_usage` once the sandbox has ended: the local supervisor on the
host, Modal's `finalize_run` in a container that mounts the data volume. The run folder is
the agent's to write, so the folders are walked without following links, the file is read
through `fileio.read_untrusted` (no FIFO hang, no link, a size cap) and replaced through its
folder's descriptor: nothing planted there can make this read or write anywhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ml_agent.contracts import RUN_ID_RE, protocol
from ml_agent.errors import UnsafeFile
from ml_agent.fileio import atomic_write_json, open_dir, read_untrusted

#: A result.json bigger than this is not the agent's (pip freeze included, it is a few KiB).
MAX_RESULT_BYTES = 4 * 1024 * 1024
#: Statuses the agent writes while it still runs; the launcher's status replaces them.
UNFINISHED = ("starting", "running")
#: What `merge_proxy_usage` returns when it wrote the file.
WRITTEN = "proxy usage written"


def merge_proxy_usage(
    data_root: Path, run_id: str, usage: dict[str, float], *, status: str | None = None,
    ended_at: str | None = None, error: str | None = None,
) -> str:
    """Put the proxy's usage (and its `cost_usd`, the run's cost) into the run's
    result.json; returns what happened, in a few words (`WRITTEN` when it wrote).

    `status`/`ended_at` (the launcher's view) replace the agent's only when the agent never
    wrote a final one (a stopped sandbox ends without its last write). `error` (why the
    launcher ended the run, e.g. a key the upstream refused) makes the run `failed` whatever
    the agent wrote, and is kept under `protocol.RESULT_ERROR_KEY`. Idempotent. Raises
    UnsafeFile (a link, a FIFO, too big), OSError or ValueError (not a JSON object) when
    the file cannot be read or written safely.
    """
    fd = open_run_folder(data_root, run_id)
    if fd is None:
        return "no run folder"
    try:
        try:
            raw = read_untrusted(protocol.RESULT_FILE, cap=MAX_RESULT_BYTES, dir_fd=fd)
        except FileNotFoundError:
            return "no result.json"
        result: Any = json.loads(raw)
        if not isinstance(result, dict):
            raise ValueError("result.json is not a JSON object")
        if "agent_cost_usd" not in result:  # written by an agent.py older than the key
            result["agent_cost_usd"] = result.get("cost_usd")
        result["cost_usd"] = usage.get("cost_usd")
        result["proxy_usage"] = dict(usage)
        if status and result.get("status") in (None, *UNFINISHED):
            result["status"] = status
            if ended_at and not result.get("ended_at"):
                result["ended_at"] = ended_at
        if error:
            result.update({"status": "failed", protocol.RESULT_ERROR_KEY: error})
        atomic_write_json(protocol.RESULT_FILE, result, mode=0o644, dir_fd=fd)
        return WRITTEN
    finally:
        os.close(fd)


#: The launcher's record of a run (contracts.RunRecord), kept in its folder on the data
#: volume: Modal's run registry (a modal.Dict whose entries expire) is rebuilt from these.
RUN_RECORD_FILE = "run.json"
MAX_RECORD_BYTES = 64 * 1024
#: At most this much of a transcript is replayed (events are cut at MAX_TOOL_RESULT_CHARS).
MAX_REPLAY_BYTES = 64 * 1024 * 1024


def open_run_folder(data_root: Path, run_id: str) -> int | None:
    """The one way host-side code opens a run folder the agent could write: a descriptor
    of `<data_root>/runs/<run_id>` (no link followed), None when it does not exist. Raises
    ValueError for anything but a run id."""
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    try:
        return open_dir(data_root, "runs", run_id)
    except FileNotFoundError:
        return None


def write_run_record(data_root: Path, run_id: str, record: dict[str, Any]) -> bool:
    """Keep the run's registry entry in its folder; False when there is no run folder."""
    fd = open_run_folder(data_root, run_id)
    if fd is None:
        return False
    try:
        atomic_write_json(RUN_RECORD_FILE, record, mode=0o644, dir_fd=fd)
    finally:
        os.close(fd)
    return True


def read_run_records(data_root: Path) -> list[dict[str, Any]]:
    """Every run's registry entry kept on the data volume (unreadable ones are skipped)."""
    runs = data_root / "runs"
    names = sorted(os.listdir(runs)) if runs.is_dir() and not runs.is_symlink() else []
    records = []
    for run_id in filter(RUN_ID_RE.match, names):
        try:
            fd = open_run_folder(data_root, run_id)
            if fd is None:
                continue
            try:
                data = json.loads(read_untrusted(RUN_RECORD_FILE, cap=MAX_RECORD_BYTES,
                                                 dir_fd=fd))
            finally:
                os.close(fd)
        except (OSError, ValueError, UnsafeFile):
            continue
        if isinstance(data, dict) and data.get("run_id") == run_id:
            records.append(data)
    return records


def read_run_events(data_root: Path, run_id: str, before: int) -> list[dict[str, Any]]:
    """The events of the run's transcript (the agent's own log) with `seq` below `before`.

    What a re-attaching client replays when the sandbox no longer has the start of its
    output (V2 sandboxes keep only recent output). Lines that are not events are skipped.
    Raises UnsafeFile for a transcript that is a link, not a regular file, or too big.
    """
    fd = open_run_folder(data_root, run_id)
    if fd is None:
        return []
    try:
        raw = read_untrusted(protocol.TRANSCRIPT_FILE, cap=MAX_REPLAY_BYTES, dir_fd=fd)
    except FileNotFoundError:
        return []
    finally:
        os.close(fd)
    events = []
    for line in raw.decode("utf-8", "replace").splitlines():
        event = protocol.decode_event(line)
        if event is not None and event["seq"] < before:
            events.append(event)
    return events
