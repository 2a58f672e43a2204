"""One results row per run: status, duration, cost, and the final metrics the run wrote.

Pure but for the reads through a `RunFolder`: the metrics come from `eval/*.json` (flat
numeric keys, named `<file stem>.<key>`) and `result.json` (`turns`), files the agent wrote,
so every read is capped and nothing in them can make a row unbounded or a name unprintable.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ml_agent.contracts import RunRecord, protocol
from ml_agent.errors import UnsafeFile, VolumeGone
from ml_agent.runs.folders import FILE, RunFolder

#: An eval/*.json or result.json bigger than this is not a metrics file.
MAX_METRICS_BYTES = 1 << 20
#: At most this many eval files per run, and this many metrics per file.
MAX_EVAL_FILES = 50
MAX_KEYS_PER_FILE = 200
MAX_NAME = 80
#: The fixed columns, in order, then the metrics (sorted by name).
FIXED = ("run", "status", "duration_s", "cost_usd", "agent_cost_usd")
#: Numeric keys of result.json shown as metrics (cost is a fixed column).
RESULT_METRICS = ("turns",)


@dataclass
class Row:
    run_id: str
    status: str
    backend: str
    duration_s: float | None
    cost_usd: float | None  # the proxy's metering
    agent_cost_usd: float | None  # what the agent says: a second opinion
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # files skipped, and why

    def value(self, column: str) -> Any:
        if column == "run":
            return self.run_id
        if column in FIXED:
            return getattr(self, column)
        return self.metrics.get(column)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run_id, "status": self.status, "backend": self.backend,
                "duration_s": self.duration_s, "cost_usd": self.cost_usd,
                "agent_cost_usd": self.agent_cost_usd, "metrics": dict(self.metrics),
                "notes": list(self.notes)}


def clean_name(name: str) -> str:
    """A metric name fit for a table header or a CSV column: printable, bounded."""
    text = "".join(ch for ch in name if ch.isprintable() and ch not in "[]\\")[:MAX_NAME]
    # a spreadsheet would run a cell that starts like a formula
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _json_object(folder: RunFolder, path: str) -> dict[str, Any]:
    data = json.loads(folder.read(path, MAX_METRICS_BYTES))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def flat_metrics(stem: str, data: dict[str, Any]) -> dict[str, float]:
    """The top-level numeric values of one metrics file, as `<stem>.<key>`."""
    out: dict[str, float] = {}
    for key, value in data.items():
        number = _number(value)
        if number is not None and isinstance(key, str):
            out[clean_name(f"{stem}.{key}")] = number
            if len(out) >= MAX_KEYS_PER_FILE:
                break
    return out


def gather_row(record: RunRecord, folder: RunFolder | None, *, now: float | None = None) -> Row:
    """The row of one run: the registry's record, completed from its run folder."""
    end = record.ended_at or (now if now is not None else time.time())
    row = Row(record.run_id, record.status, record.backend,
              max(0.0, end - record.created_at) if record.created_at else None,
              record.cost_usd, record.agent_cost_usd)
    if folder is None:
        return row
    try:
        folder.check()
    except VolumeGone as exc:
        row.notes.append(str(exc))
        return row
    try:
        result = _json_object(folder, protocol.RESULT_FILE)
    except FileNotFoundError:
        result = {}
    except (UnsafeFile, ValueError, OSError) as exc:
        row.notes.append(f"result.json skipped: {exc}")
        result = {}
    if result:
        cost, said = _number(result.get("cost_usd")), _number(result.get("agent_cost_usd"))
        row.cost_usd = cost if cost is not None else row.cost_usd
        row.agent_cost_usd = said if said is not None else row.agent_cost_usd
        for key in RESULT_METRICS:
            number = _number(result.get(key))
            if number is not None:
                row.metrics[key] = number
    try:
        names = [e for e in folder.listdir("eval") if e.kind == FILE and e.path.endswith(".json")]
    except (FileNotFoundError, UnsafeFile, NotADirectoryError):
        return row
    except OSError as exc:
        row.notes.append(f"eval/ skipped: {exc.strerror or exc}")
        return row
    if len(names) > MAX_EVAL_FILES:
        row.notes.append(f"eval/ has {len(names)} JSON files; read the first {MAX_EVAL_FILES}")
    for entry in names[:MAX_EVAL_FILES]:
        stem = entry.path.rsplit("/", 1)[-1][: -len(".json")]
        try:
            row.metrics.update(flat_metrics(stem, _json_object(folder, entry.path)))
        except (UnsafeFile, ValueError, OSError) as exc:
            row.notes.append(f"{entry.path} skipped: {exc}")
    return row


def columns(rows: Iterable[Row]) -> list[str]:
    """The fixed columns, then every metric any row has, by name."""
    names: set[str] = set()
    for row in rows:
        names.update(row.metrics)
    return [*FIXED, *sorted(names)]


def sort_rows(rows: list[Row], key: str, *, descending: bool = False) -> list[Row]:
    """Rows by one column; rows without a value always go last."""
    present = [r for r in rows if r.value(key) is not None]
    missing = [r for r in rows if r.value(key) is None]
    return sorted(present, key=lambda r: r.value(key), reverse=descending) + missing


def to_csv(rows: list[Row], cols: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow(["" if row.value(c) is None else row.value(c) for c in cols])
    return out.getvalue()
