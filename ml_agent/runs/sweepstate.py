"""How a sweep's launching stands: its driver running, failed or gone, in one line.

The process that launches a sweep's runs (the detached driver, or `sweep --foreground`)
notes itself in the sweep record while it runs (`driving`), and notes why it failed when it
does; `ps --sweep`, `results` and `sweep --resume` show `describe`'s line, so a failure is
seen where the user looks, not only in `$ML_AGENT_HOME/sweeps/<id>.log`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ml_agent.errors import MlAgentError
from ml_agent.runs import driver
from ml_agent.runs.sweeps import SweepRecord

#: A failure's message is shown on one line, cut at this many characters (the log has all).
REASON_CHARS = 300


def started(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None when there is none (or
    only its zombie: a killed driver's parent may be slow to reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the name (which may hold spaces): field 3 is the state, field 22 the start time
    return None if fields[0] in ("Z", "X") else int(fields[19])


def running(record: SweepRecord) -> bool:
    """The process noted as launching the sweep is alive (and is that process)."""
    pid = record.driver_pid
    if not pid:
        return False
    if record.driver_start is not None:
        return started(pid) == record.driver_start
    return driver.is_driver(pid, record.sweep_id)  # a record from before driver_start


def reason(exc: BaseException) -> str:
    """Why launching stopped: the message of an error the user can act on; a bug's type."""
    text = str(exc) if isinstance(exc, MlAgentError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


@contextlib.contextmanager
def driving(record: SweepRecord, home: Path | None = None) -> Iterator[None]:
    """While inside, this process launches the sweep: noted in its record, with a former
    failure cleared. An exception that ends the launching is noted (its reason and time)
    and raised on; an interrupt or a stop (SIGTERM: SystemExit) is not a failure."""
    pid = os.getpid()
    record.driver_pid, record.driver_start = pid, started(pid)
    record.driver_error = record.driver_error_at = None
    record.save(home)
    try:
        yield
    except Exception as exc:
        record.driver_error, record.driver_error_at = reason(exc), time.time()
        raise
    finally:
        record.driver_pid = record.driver_start = None
        record.save(home)


def describe(record: SweepRecord, home: Path | None = None) -> tuple[str, bool]:
    """One line on the sweep's launching, and whether it needs the user (a failed or vanished
    driver with runs not launched)."""
    sid = record.sweep_id
    total, pending = len(record.runs), len(record.pending())
    log = driver.log_path(sid, home)
    where = f" — log: {log}" if log.exists() else ""
    if running(record):
        return (f"sweep {sid}: {total - pending} of {total} run(s) launched; its driver "
                f"(pid {record.driver_pid}) is launching the rest"), False
    if record.stopped:
        return (f"sweep {sid}: stopped" + (f"; {pending} run(s) not launched" if pending
                                           else "")), False
    if record.driver_error and pending:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.driver_error_at or 0))
        return (f"sweep {sid}: driver failed: {record.driver_error}{where}; fix it, then "
                f"`ml-agent sweep --resume {sid}` (failed at {when}; {pending} of {total} "
                "run(s) not launched)"), True
    if pending:
        return (f"sweep {sid}: driver not running, {pending} of {total} run(s) not launched"
                f"{where}; `ml-agent sweep --resume {sid}` launches them"), True
    return f"sweep {sid}: all {total} run(s) launched", False
