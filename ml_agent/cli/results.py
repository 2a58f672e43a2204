"""`ml-agent results`: runs side by side (status, duration, cost, final metrics), one table
per sweep; `--json`, `--csv`, `--sort`, and `--plot METRIC` (curves from trackio)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ml_agent.errors import MlAgentError, RunNotFound

if TYPE_CHECKING:
    from ml_agent.contracts import RunRecord
    from ml_agent.runs.gather import Row

RESULTS_HELP = """Runs side by side: status, duration, cost, and the final metrics each run wrote.

Metrics are the flat numeric keys of the run folder's `eval/*.json` (named `<file stem>.<key>`)
and `turns` from its result.json. COST is the proxy's metering; the agent's own figure is a
second opinion. Give run ids (or unique prefixes) or sweep ids; with none, the recent runs.
One table per sweep.

Examples:

    ml-agent results
    ml-agent results sw-20261126-0315-a1b2c3 --sort -metrics.accuracy
    ml-agent results 20261126-0315 20261126-0412 --csv > runs.csv
    ml-agent results sw-20261126-0315-a1b2c3 --plot eval/loss
"""

NO_SWEEP = "runs"
Items = typer.Argument(None, help="Run ids, unique prefixes or sweep ids.")
Out = typer.Option(None, "--out", "-o", help="Where --plot writes: a file or folder (default ./).")


def register(app: typer.Typer) -> None:
    app.command(help=RESULTS_HELP)(results)


def _select(items: list[str], last: int, which: str = "all") -> list[RunRecord]:
    """The records named by run ids, run id prefixes or sweep ids (in the order given)."""
    from ml_agent.cli.runs import _all_records, _backend_for, _record, sweep_state

    if not items:
        records = _all_records(which)
        return records[:last] if last > 0 else records
    chosen: dict[str, RunRecord] = {}
    everything: list[RunRecord] | None = None
    for item in items:
        if item.startswith("sw-"):
            everything = everything if everything is not None else _all_records(which)
            members = [r for r in everything if r.sweep and r.sweep.startswith(item)]
            sweeps = {r.sweep for r in members}
            if not members:
                state = sweep_state(item, only_problems=True)
                raise RunNotFound(f"no runs of sweep {item!r} yet" if state else
                                  f"no runs of sweep {item!r} (see `ml-agent ps`)")
            if len(sweeps) > 1:
                raise RunNotFound(f"{item!r} matches several sweeps; give more of the id")
            chosen.update((r.run_id, r) for r in members)
            continue
        backend, run_id = _backend_for(item)
        record = _record(backend, run_id)
        if record is None:
            raise RunNotFound(f"no run {item!r} (see `ml-agent ps`)")
        chosen[run_id] = record
    return list(chosen.values())


#: Modal reads are network round trips (a few per run): that many runs are read at once.
MODAL_WORKERS = 16


def gather(records: list[RunRecord], workers: int | None = None) -> list[Row]:
    """One row per record, in order. Local folders are read in this thread (fast: 1,000
    runs in ~0.3 s); with Modal runs, `workers` threads (default MODAL_WORKERS) read at once."""
    from concurrent.futures import ThreadPoolExecutor

    from ml_agent.cli.runs import _data_volume_name
    from ml_agent.errors import VolumeGone
    from ml_agent.runs.gather import gather_row
    from ml_agent.runs.locate import Locator

    locator = Locator(data_volume_of=_data_volume_name)

    def one(record: RunRecord) -> Row:
        try:
            folder = locator.folder(record)
        except VolumeGone as exc:
            row = gather_row(record, None)
            row.notes.append(str(exc))
            return row
        return gather_row(record, folder)

    if workers is None:
        workers = MODAL_WORKERS if any(r.backend == "modal" for r in records) else 1
    if workers <= 1 or len(records) <= 1:
        return [one(r) for r in records]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="results") as pool:
        return list(pool.map(one, records))


def _groups(records: list[RunRecord], rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for record, row in zip(records, rows, strict=True):
        groups.setdefault(record.sweep or NO_SWEEP, []).append(row)
    return groups


def _sort_key(sort: str | None, desc: bool) -> tuple[str | None, bool]:
    if sort and sort.startswith("-"):
        return sort[1:], True
    return sort, desc


def results(
    items: list[str] = Items,
    sort: str = typer.Option(None, "--sort", help="Sort by a column or metric; -NAME: descending."),
    desc: bool = typer.Option(False, "--desc", help="Sort descending."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array of rows."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout (a `sweep` column first)."),
    last: int = typer.Option(20, "--last", help="With no RUN: the N newest runs (0: all)."),
    plot: str = typer.Option(None, "--plot", help="Write a PNG of this metric's curves."),
    out: Path = Out,
    backend: str = typer.Option("all", "--backend", help="all | local | modal."),
) -> None:
    from ml_agent.cli.runs import sweep_state
    from ml_agent.runs.gather import columns, sort_rows, to_csv

    if as_json and as_csv:
        raise typer.BadParameter("give --json or --csv, not both")
    if backend not in ("all", "local", "modal"):
        raise typer.BadParameter(f"unknown backend {backend!r}: use all, local or modal")
    records = _select(items or [], last, backend)
    if plot:
        _plot(records, plot, out)
        return
    rows = gather(records)
    key, descending = _sort_key(sort, desc)
    cols = columns(rows)
    if key is not None and key not in cols:
        raise typer.BadParameter(
            f"--sort {key!r}: no such column; the columns are {', '.join(cols)}"
        )
    groups = _groups(records, rows)
    for name in groups:  # a failed or vanished driver, said above the tables
        if name != NO_SWEEP:
            sweep_state(name, only_problems=True)
    if key is not None:
        groups = {name: sort_rows(g, key, descending=descending) for name, g in groups.items()}
    if as_json:
        data = [{"sweep": None if name == NO_SWEEP else name, **row.to_dict()}
                for name, group in groups.items() for row in group]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    if as_csv:
        text = ""
        for name, group in groups.items():
            body = to_csv(group, cols).splitlines(keepends=True)
            head = body.pop(0) if body else ""
            text = text or "sweep," + head
            text += "".join(f"{'' if name == NO_SWEEP else name},{line}" for line in body)
        sys.stdout.write(text)
        return
    _print_tables(groups)


def _fmt(column: str, value: object) -> str:
    from ml_agent.cli.runs import _age

    if value is None:
        return "-"
    if column == "duration_s":
        return _age(float(value))  # type: ignore[arg-type]
    if column.endswith("cost_usd"):
        number = float(value)  # type: ignore[arg-type]
        return f"${number:.{2 if number >= 0.01 else 4}f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


HEADERS = {"run": "RUN", "status": "STATUS", "duration_s": "DURATION", "cost_usd": "COST",
           "agent_cost_usd": "AGENT SAYS"}


def _print_tables(groups: dict[str, list[Row]]) -> None:
    from rich.markup import escape

    from ml_agent.cli.output import err_console
    from ml_agent.cli.table import print_table
    from ml_agent.runs.gather import columns

    if not groups:
        err_console().print("no runs yet: `ml-agent up` starts one")
        return
    for n, (name, rows) in enumerate(groups.items()):
        cols = columns(rows)
        title = f"{len(rows)} run(s)" if name == NO_SWEEP else f"sweep {name} ({len(rows)} runs)"
        if n:
            print()
        print_table([HEADERS.get(c, c) for c in cols],
                    [[_fmt(c, row.value(c)) for c in cols] for row in rows],
                    right=range(2, len(cols)), title=title)
        for row in rows:
            for note in row.notes:
                err_console().print(f"[yellow]note:[/] {row.run_id}: {escape(note)}",
                                    highlight=False, soft_wrap=True)


def _plot(records: list[RunRecord], metric: str, out: Path | None) -> None:
    from ml_agent.cli.output import err_console
    from ml_agent.runs.locate import Locator
    from ml_agent.runs.plot import collect_curves, write_png

    locator = Locator()
    try:
        curves, notes = collect_curves(records, metric, locator.trackio_dir)
    finally:
        locator.close()
    for note in [*locator.notes, *notes]:
        err_console().print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if not curves:
        raise MlAgentError(
            f"no curve of {metric!r} in the trackio databases of these {len(records)} run(s)"
        )
    path = write_png(curves, metric, out)
    print(f"wrote {path} ({len(curves)} curve(s) of {metric})")
