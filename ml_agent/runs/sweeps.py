"""Sweeps in the registry, and the driver that launches their runs a few at a time.

A sweep record (`$ML_AGENT_HOME/sweeps/<sweep id>.json`, rewritten atomically) holds every
run of the sweep: its task, its `--set` overrides, its trackio run name and, once chosen,
its run id. The driver launches runs detached, at most `max_parallel` live at a time, and
notes each run id *before* launching it, so a driver that is stopped (Ctrl-C, a closed
terminal) loses nothing: `ml-agent sweep --resume ID` launches what is not yet launched
(a noted id with no run in the registry is launched again, under a new id).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_agent.contracts import ml_agent_home, new_run_id
from ml_agent.errors import GpusBusy, MlAgentError, RunNotFound
from ml_agent.fileio import atomic_write_json

if TYPE_CHECKING:
    from ml_agent.backends import Backend
    from ml_agent.contracts import RunRecord
    from ml_agent.plan import Plan
    from ml_agent.runs.sweepfile import Sweep

SWEEP_ID_RE = re.compile(r"^sw-\d{8}-\d{4}-[0-9a-f]{6}$")
LIVE = ("starting", "running")
POLL_S = 2.0


def new_sweep_id() -> str:
    return "sw-" + new_run_id()


def sweeps_dir(home: Path | None = None) -> Path:
    return (home or ml_agent_home()) / "sweeps"


@dataclasses.dataclass
class SweepRecord:
    sweep_id: str
    file: str  # the sweep file, absolute (for messages; the runs below are what launches)
    base: str  # the base config, absolute
    max_parallel: int
    budget_usd: float | None
    created_at: float
    runs: list[dict[str, Any]]  # index, task, overrides, label, run_id, backend, launched_at
    allow: list[str] = dataclasses.field(default_factory=list)  # --allow-outside folders
    stopped: bool = False  # `ml-agent stop --sweep`: launch nothing more, resume included
    # Kept by runs/sweepstate.py (driver_pid below too: `sweep --foreground` notes itself
    # there): the launching process's start (clock ticks since boot, /proc/PID/stat: a pid
    # reused by another program is not it), and why the last one stopped launching when it
    # failed (message, unix time), for `ps --sweep`, `results` and `sweep --resume` to say.
    driver_start: int | None = None
    driver_error: str | None = None
    driver_error_at: float | None = None
    driver_pid: int | None = None  # the detached driver launching it now (runs/driver.py)
    share_gpus: bool = False  # local GPU runs share GPUs (the sweep file's share_gpus)

    @classmethod
    def new(cls, sweep: Sweep, allow: list[str] | None = None) -> SweepRecord:
        runs = [{"index": r.index, "task": r.task, "overrides": list(r.overrides),
                 "label": r.label, "run_id": None, "backend": None, "launched_at": None}
                for r in sweep.runs]
        return cls(new_sweep_id(), str(sweep.path), str(sweep.base), sweep.spec.max_parallel,
                   sweep.spec.budget_usd, time.time(), runs, list(allow or []),
                   share_gpus=sweep.spec.share_gpus)

    def save(self, home: Path | None = None) -> None:
        """Write the record; a stop (written by `ml-agent stop --sweep`) is never undone."""
        folder = sweeps_dir(home)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.sweep_id}.json"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.stopped = self.stopped or bool(json.loads(path.read_text()).get("stopped"))
        atomic_write_json(path, dataclasses.asdict(self), mode=0o644)

    @classmethod
    def load(cls, sweep: str, home: Path | None = None) -> SweepRecord:
        """A sweep by id or unique prefix."""
        folder = sweeps_dir(home)
        names = sorted(p.stem for p in folder.glob("sw-*.json")) if folder.is_dir() else []
        matches = [n for n in names if n.startswith(sweep) and SWEEP_ID_RE.match(n)]
        if sweep in matches:
            matches = [sweep]
        if not matches or "/" in sweep:
            raise RunNotFound(f"no sweep {sweep!r} (sweeps live in {folder})")
        if len(matches) > 1:
            raise RunNotFound(f"{sweep!r} matches {len(matches)} sweeps; give more of the id")
        data = json.loads((folder / f"{matches[0]}.json").read_text())
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    @classmethod
    def stop(cls, sweep: str, home: Path | None = None) -> str:
        """Mark a sweep stopped (by id or prefix) and end its driver; returns its id."""
        from ml_agent.runs import driver

        record = cls.load(sweep, home)
        record.stopped = True
        record.save(home)
        driver.end(record.sweep_id, home)
        return record.sweep_id

    def pending(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if not r["launched_at"]]


def run_plan(base: str, overrides: list[str], run_id: str | None = None,
             sweep_id: str | None = None, allow: list[str] | None = None,
             label: str | None = None) -> Plan:
    """A run's Plan. A run of sweep `sweep_id` logs to trackio project `sweep_id` under run
    name `label` (the launcher -> agent env: ML_AGENT_TRACKIO_PROJECT / _RUN_NAME)."""
    from ml_agent.config import load_config
    from ml_agent.plan import build_plan

    plan = build_plan(load_config(base, overrides, allow=allow), base)
    return plan.for_launch(run_id or new_run_id(), sweep=sweep_id, trackio_run_name=label)


def check_budget(budgets: list[float | None], sweep_budget: float | None) -> None:
    """Refuse a sweep whose runs may spend more than its budget (or have no budget)."""
    if sweep_budget is None:
        return
    if any(b is None for b in budgets):
        raise MlAgentError(
            f"budget_usd is {sweep_budget:g} but some runs have no proxy.budget_usd (no limit); "
            "set proxy.budget_usd in the base config"
        )
    total = sum(b or 0.0 for b in budgets)
    if total > sweep_budget:
        raise MlAgentError(
            f"the runs' budgets add up to ${total:.2f}, over the sweep's budget_usd "
            f"(${sweep_budget:.2f}); lower proxy.budget_usd or raise budget_usd"
        )


def machine_parallel(backend: str, wanted: int, gpu: str | None = None,
                     share_gpus: bool = False) -> int:
    """Local runs share this machine: at most one per CPU core, and for runs with `gpu`
    that do not share, as many as its GPUs hold (GPUs // GPUs per run, at least 1: a run
    that asks for more than there are is refused by `up`)."""
    if backend != "local":
        return wanted
    limit = min(wanted, os.cpu_count() or 1)
    if gpu and not share_gpus:
        from ml_agent.backends.local.gpus import inventory
        from ml_agent.config.types import GpuSpec

        limit = min(limit, max(1, len(inventory()) // GpuSpec.parse(gpu).count))
    return limit


class Driver:
    """Launches a sweep's pending runs, at most `max_parallel` live at a time."""

    def __init__(self, record: SweepRecord, get_backend: Callable[[str], Backend], *,
                 home: Path | None = None, say: Callable[[str], None] = lambda _: None,
                 poll_s: float = POLL_S, sleep: Callable[[float], None] = time.sleep,
                 make_plan: Callable[..., Plan] | None = None) -> None:
        """`make_plan(base, overrides, sweep_id=, allow=, label=)`: a run's Plan (`run_plan`)."""
        self.record = record
        self.make_plan = make_plan or run_plan
        self.get_backend = get_backend
        self.home = home
        self.say = say
        self.poll_s = poll_s
        self.sleep = sleep
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = self.get_backend(name)
        return self._backends[name]

    def statuses(self) -> dict[str, str]:
        """Run id -> status, for this sweep's noted runs (from each backend's registry)."""
        names = {r["backend"] for r in self.record.runs if r["run_id"]}
        found: dict[str, str] = {}
        for name in names:
            records: list[RunRecord] = self.backend(name).ps()
            found.update((r.run_id, r.status) for r in records if r.sweep == self.record.sweep_id)
        return found

    def forget_unlaunched(self) -> None:
        """Noted ids with no run behind them (the driver stopped mid-launch): launch again."""
        known = self.statuses()
        for run in self.record.runs:
            if run["run_id"] and run["run_id"] not in known:
                run.update(run_id=None, backend=None, launched_at=None)
            elif run["run_id"] and not run["launched_at"]:
                run["launched_at"] = time.time()  # it did start: the note was all that was lost
        self.record.save(self.home)

    def run(self) -> list[str]:
        """Launch every pending run; returns the run ids launched now."""
        self.forget_unlaunched()
        launched = []
        for entry in self.record.pending():
            plan = self.make_plan(self.record.base, entry["overrides"], label=entry["label"],
                                  sweep_id=self.record.sweep_id, allow=self.record.allow)
            if self.record.share_gpus and plan.launch is not None:
                plan = plan.model_copy(update={"launch": plan.launch.model_copy(
                    update={"share_gpus": True})})
            limit = machine_parallel(plan.backend, self.record.max_parallel, plan.sandbox.gpu,
                                     self.record.share_gpus)
            # Fewer noted runs than slots leave a slot free whatever their status: ask the
            # registry (every run's status, O(runs) round trips on Modal) only when needed.
            while sum(1 for r in self.record.runs if r["run_id"]) >= limit:
                live = [i for i, s in self.statuses().items() if s in LIVE]
                if len(live) < limit:
                    break
                self.say(f"waiting for a free slot ({len(live)}/{limit} runs live)")
                self.sleep(self.poll_s)
            if SweepRecord.load(self.record.sweep_id, self.home).stopped:
                self.say(f"sweep {self.record.sweep_id} was stopped: nothing more is launched")
                break
            assert plan.launch is not None
            entry.update(run_id=plan.launch.run_id, backend=plan.backend)
            self.record.save(self.home)  # noted before launching: a resume can tell
            self.say(f"launching run {entry['index'] + 1}/{len(self.record.runs)}: "
                     f"{plan.launch.run_id} ({entry['label']})")
            task = entry["task"]  # the user's, as written (its trackio names are in its env)
            try:
                started = self._up_when_gpus_free(plan, task)
            except BaseException:
                entry.update(run_id=None, backend=None)
                self.record.save(self.home)
                raise
            if not started:  # stopped while it waited for GPUs
                entry.update(run_id=None, backend=None)
                self.record.save(self.home)
                self.say(f"sweep {self.record.sweep_id} was stopped: nothing more is launched")
                break
            entry["launched_at"] = time.time()
            self.record.save(self.home)
            launched.append(plan.launch.run_id)
        return launched

    def _up_when_gpus_free(self, plan: Plan, task: str) -> bool:
        """Launch the run; while its GPUs are held (GpusBusy: by runs outside the sweep, or
        by one of its own that is still ending), wait and retry. False: the sweep was
        stopped meanwhile."""
        said = ""
        while True:
            try:
                self.backend(plan.backend).up(plan, task=task, detach=True)
                return True
            except GpusBusy as exc:
                if str(exc) != said:
                    said = str(exc)
                    self.say(f"waiting for GPUs, retrying every {self.poll_s:g} s: {exc}")
            self.sleep(self.poll_s)
            if SweepRecord.load(self.record.sweep_id, self.home).stopped:
                return False
