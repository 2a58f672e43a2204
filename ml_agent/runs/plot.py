"""`results --plot METRIC`: one metric's curves across runs, from the trackio databases.

Each database is agent-written, so it is never opened in place: the syncer's snapshot
(`syncer.snapshot.snapshot_database`: no link followed, size-capped, consistent under a
live writer) copies it into a private temp folder first. A trackio run belongs to an
ml-agent run when its config says so (`ml_agent_run_id`, written by the workspace's
`setup_trackio.py`). The PNG is drawn by matplotlib, the optional extra `ml-agent[plot]`.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ml_agent.contracts import RunRecord
from ml_agent.errors import MlAgentError
from ml_agent.syncer.scan import find_projects
from ml_agent.syncer.snapshot import SnapshotError, snapshot_database

#: Points read per database at most (a curve of a million steps is already unreadable).
MAX_POINTS = 1_000_000


@dataclass
class Curve:
    run_id: str  # the ml-agent run
    label: str  # what the legend says
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def collect_curves(
    records: list[RunRecord], metric: str, trackio_dir: Callable[[RunRecord], Path | None]
) -> tuple[list[Curve], list[str]]:
    """The curves of `metric` of these runs, and notes on what could not be read."""
    wanted = {r.run_id for r in records}
    folders: dict[Path, None] = {}
    notes = []
    for record in records:
        folder = trackio_dir(record)
        if folder is None:
            notes.append(f"{record.run_id}: no trackio folder known on this machine "
                         f"({record.backend} run); skipped")
        else:
            folders[folder] = None
    curves: dict[tuple[str, str, str], Curve] = {}
    with tempfile.TemporaryDirectory(prefix="ml-agent-plot-") as tmp:
        for n, folder in enumerate(folders):
            for project in find_projects(folder):
                dest = Path(tmp) / f"{n}-{project}.db"
                try:
                    snapshot_database(folder, project, dest, Path(tmp) / f"scratch-{n}")
                except SnapshotError as exc:
                    notes.append(f"{folder}/{project}: {exc}")
                    continue
                _read(dest, project, metric, wanted, curves)
    found = {c.run_id for c in curves.values()}
    notes += [f"{r}: no {metric!r} curve in trackio" for r in sorted(wanted - found)]
    return sorted(curves.values(), key=lambda c: c.label), notes


def _read(db: Path, project: str, metric: str, wanted: set[str],
          curves: dict[tuple[str, str, str], Curve]) -> None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        owners = {}
        for trackio_run, name, config in con.execute(
            "SELECT run_id, run_name, config FROM configs"
        ):
            try:
                run = json.loads(config).get("ml_agent_run_id")
            except (ValueError, AttributeError, TypeError):
                continue
            if run in wanted:
                owners[trackio_run] = (run, str(name))
        if not owners:
            return
        marks = ",".join("?" * len(owners))
        rows = con.execute(
            f"SELECT run_id, step, metrics FROM metrics WHERE run_id IN ({marks}) "
            "ORDER BY run_id, step LIMIT ?", [*owners, MAX_POINTS],
        )
        for trackio_run, step, metrics in rows:
            try:
                value = json.loads(metrics).get(metric)
            except (ValueError, AttributeError, TypeError):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value) or not isinstance(step, int):
                continue
            run, name = owners[trackio_run]
            key = (run, project, trackio_run)
            curve = curves.get(key)
            if curve is None:
                label = "".join(ch for ch in f"{run} {project}/{name}" if ch.isprintable())
                curve = curves[key] = Curve(run, _text(label[:80]))
            curve.steps.append(step)
            curve.values.append(float(value))
    except sqlite3.DatabaseError:
        return  # not a trackio database (no such table): not ours to plot
    finally:
        con.close()


def _text(text: str) -> str:
    """Plain text for matplotlib, which reads `$...$` as math (and can fail on it)."""
    return text.replace("$", r"\$")


def default_path(metric: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("._") or "metric"
    return Path(f"ml-agent-{stem}.png")


def write_png(curves: list[Curve], metric: str, out: Path | None) -> Path:
    """Draw the curves; returns the file written (`out`, a folder or a file; default ./)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: a file, never a window
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise MlAgentError(
            "--plot needs matplotlib: install the extra with `pip install 'ml-agent[plot]'`"
        ) from None
    path = out or default_path(metric)
    if path.is_dir():
        path = path / default_path(metric)
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    try:
        for curve in curves:
            ax.plot(curve.steps, curve.values, label=curve.label, linewidth=1.4)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(_text(metric))
        ax.set_title(f"{_text(metric)} across {len({c.run_id for c in curves})} run(s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path.resolve()
