"""`ml-agent pull RUN [DEST]`: copy a run folder (model, eval, logs, report, transcript) here."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ml_agent.errors import MlAgentError, RunNotFound

PULL_HELP = """Copy a run's folder from its data volume (local or Modal) to this machine.

A second pull copies only files whose size or modification time changed. Symbolic links
the agent made are skipped (never followed) and FIFOs or devices refused; each is listed.
`--include`/`--exclude` take globs on the path inside the run folder (`*` also crosses
folders; a glob that names a folder covers everything in it). DEST defaults to ./RUN.

Examples:

    ml-agent pull 20261126-0315-a1b2c3
    ml-agent pull 20261126-0315 ~/runs/sst2 --exclude 'checkpoints'
    ml-agent pull 20261126-0315 --include 'eval/*' --include REPORT.md
"""

Include = typer.Option([], "--include", "-i", help="Copy only paths matching (repeatable).")
Exclude = typer.Option([], "--exclude", "-x", help="Skip paths matching (repeatable).")
Dest = typer.Argument(None, help="Destination folder (default: ./RUN).")


def register(app: typer.Typer) -> None:
    app.command(help=PULL_HELP)(pull)


def pull(
    run: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    dest: Path = Dest,
    include: list[str] = Include,
    exclude: list[str] = Exclude,
) -> None:
    from rich.markup import escape

    from ml_agent.cli.output import err_console
    from ml_agent.cli.runs import _backend_for, _data_volume_name, _record
    from ml_agent.cli.table import clean
    from ml_agent.runs.copy import check_space, copy_file, make_folders, plan_copy
    from ml_agent.runs.locate import Locator

    backend, run_id = _backend_for(run)
    record = _record(backend, run_id)
    if record is None:
        raise RunNotFound(f"no run {run!r} (see `ml-agent ps`)")
    folder = Locator(data_volume_of=_data_volume_name).folder(record)
    folder.check()
    target = dest or Path(run_id)
    err = err_console()
    plan = plan_copy(folder, target, include, exclude)
    check_space(plan, target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        make_folders(plan, target)
    except (FileExistsError, NotADirectoryError):
        raise MlAgentError(f"{target} exists and is not a folder; give another DEST") from None
    failed = []
    with _Progress(plan.bytes) as advance:
        for entry in plan.copy:
            try:
                copy_file(folder, entry, target, advance)
            except (MlAgentError, OSError) as exc:
                failed.append((entry.path, str(exc)))
    for path, why in [*plan.skipped, *failed]:
        err.print(f"[yellow]skipped[/] {escape(clean(path))}: {escape(clean(why))}",
                  highlight=False, soft_wrap=True)
    copied = len(plan.copy) - len(failed)
    err.print(
        f"pulled run {run_id} from {escape(folder.where)} to {escape(str(target))}: "
        f"{copied} file(s) copied ({_size(plan.bytes)}), {len(plan.unchanged)} unchanged, "
        f"{len(plan.skipped) + len(failed)} skipped", highlight=False, soft_wrap=True,
    )
    if failed:
        raise typer.Exit(1)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _Progress:
    """A Rich progress bar of bytes on a terminal (stderr); nothing otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not sys.stderr.isatty() or not self.total:
            return lambda _: None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from ml_agent.cli.output import err_console

        self.bar = Progress("pulling", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=err_console(), transient=True)
        self.bar.start()
        task = self.bar.add_task("pull", total=self.total)
        return lambda n: self.bar.advance(task, n)  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
