"""`ml-agent sweep FILE`: launch the cross product of tasks and config values, a few at a time."""

from __future__ import annotations

import json
import sys

import typer

from ml_agent.config.tree import FLAG, FLAG_HELP
from ml_agent.errors import MlAgentError

Allow = typer.Option([], FLAG, metavar="PATH", help=FLAG_HELP)

SWEEP_HELP = """Launch a sweep: every task × every combination of axis values, a few at a time.

The runs are detached, at most `max_parallel` live at once (on the local backend, at most
one per CPU core, and each GPU run gets GPUs of its own: at most GPUs // sandbox.gpu's count
live, waiting while other runs hold them; `share_gpus: true` lets the runs share GPUs
instead). A driver process of its own launches them, so the sweep goes on after
this command returns and its terminal closes (its log: $ML_AGENT_HOME/sweeps/ID.log);
`ml-agent ps --sweep ID` says whether it runs, failed (and why) or is gone;
`ml-agent stop --sweep ID` ends it. `--foreground` launches from this process instead.

`--dry-run` prints every run and the worst-case cost of the whole sweep, launching nothing.
The sweep is recorded in $ML_AGENT_HOME/sweeps/; if its driver stops (a reboot, Ctrl-C in
the foreground), `--resume ID` launches the runs not yet launched. Every run of a sweep logs to
one trackio project (the sweep id) under its own run name; `ml-agent results ID` compares.

A sweep file:

    base: configs/local.yaml
    tasks: ["fine-tune distilbert on sst2; write eval/metrics.json"]
    axes: {agent.model: [claude-sonnet-4-5, claude-opus-4-1]}
    max_parallel: 2
    budget_usd: 20

Examples:

    ml-agent sweep sweeps/sst2.yaml --dry-run
    ml-agent sweep sweeps/sst2.yaml
    ml-agent sweep --resume sw-20261126-0315-a1b2c3
"""


def register(app: typer.Typer) -> None:
    app.command(help=SWEEP_HELP)(sweep)


def sweep(
    file: str = typer.Argument(None, help="The sweep file (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the runs and the worst case."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: the runs as JSON."),
    resume: str = typer.Option(None, "--resume", help="Launch what a sweep has not launched."),
    foreground: bool = typer.Option(False, "--foreground",
                                    help="Launch from this process, until the last run starts."),
    allow: list[str] = Allow,
) -> None:
    from ml_agent.runs.sweepfile import load_sweep
    from ml_agent.runs.sweeps import SweepRecord, check_budget, run_plan

    if (file is None) == (resume is None):
        raise typer.BadParameter("give a sweep FILE or --resume ID")
    if resume is not None:
        if dry_run:
            raise typer.BadParameter("--dry-run takes a FILE, not --resume")
        record = SweepRecord.load(resume)
        _say_state(record)
        _launch(record, foreground)
        return
    loaded = load_sweep(file, allow)
    plans = [run_plan(str(loaded.base), list(r.overrides), allow=allow) for r in loaded.runs]
    if dry_run:
        _print_dry_run(loaded, plans, as_json)
        check_budget([p.proxy.budget_usd for p in plans], loaded.spec.budget_usd)
        return
    check_budget([p.proxy.budget_usd for p in plans], loaded.spec.budget_usd)
    _preflight(plans)
    record = SweepRecord.new(loaded, allow)
    record.save()
    if foreground:
        print(record.sweep_id)
    _launch(record, foreground)


def _preflight(plans) -> None:  # type: ignore[no-untyped-def]
    """What `up` checks before a launch (the key, the sandbox, GPUs), once per backend and
    per different sandbox: a sweep that cannot start fails here, not in its driver's log."""
    from ml_agent.backends import get_backend
    from ml_agent.cli.output import err_console

    runners: dict[str, object] = {}
    seen: set[str] = set()
    for plan in plans:
        key = plan.model_dump_json(include={"backend", "image", "sandbox", "proxy", "syncer"})
        if key in seen:
            continue
        seen.add(key)
        runner = runners.setdefault(plan.backend, get_backend(plan.backend))
        if (check := getattr(runner, "check", None)) is not None:
            check(plan)
    for runner in runners.values():
        for warning in dict.fromkeys(getattr(runner, "warnings", [])):
            err_console().print(f"warning: {warning}", highlight=False, markup=False)


def _launch(record, foreground: bool) -> None:  # type: ignore[no-untyped-def]
    """Launch in this process (`--foreground`), or hand the launching to a detached driver."""
    from ml_agent.cli.output import err_console
    from ml_agent.runs import driver

    if foreground:
        with driver.sweep_lock(record.sweep_id) as free:
            if not free:
                raise MlAgentError(driver.busy_message(record.sweep_id, None))
            _drive(record)
        return
    pending = len(record.pending())
    if not pending or record.stopped:
        _drive(record)  # nothing to launch: say so here, no driver needed
        return
    pid = driver.spawn(record)
    print(record.sweep_id, flush=True)
    sid = record.sweep_id
    err_console().print(
        f"sweep {sid}: {pending} of {len(record.runs)} run(s) to launch, at most "
        f"{record.max_parallel} live at a time, by a driver in the background (pid {pid}, "
        f"log {driver.log_path(sid)})\n"
        f"follow: ml-agent ps --sweep {sid}\ncompare: ml-agent results {sid}\n"
        f"stop:   ml-agent stop --sweep {sid}", highlight=False, soft_wrap=True, markup=False)


def _say_state(record) -> None:  # type: ignore[no-untyped-def]
    """Before a resume: how the last launching ended, when it needs the user."""
    from ml_agent.cli.output import err_console
    from ml_agent.runs.sweepstate import describe

    line, problem = describe(record)
    if problem:
        err_console().print(f"note: {line}", highlight=False, soft_wrap=True, markup=False)


def _drive(record) -> None:  # type: ignore[no-untyped-def]
    from ml_agent.backends import get_backend
    from ml_agent.cli.output import err_console
    from ml_agent.runs.sweeps import Driver
    from ml_agent.runs.sweepstate import driving

    err = err_console()
    pending = len(record.pending())
    err.print(f"sweep {record.sweep_id}: {pending} of {len(record.runs)} run(s) to launch, "
              f"at most {record.max_parallel} live at a time", highlight=False, soft_wrap=True)
    try:
        with driving(record):  # noted in the record: `ps --sweep` shows it, or its failure
            launched = Driver(record, get_backend,
                              say=lambda m: err.print(m, highlight=False, markup=False)).run()
    except KeyboardInterrupt:
        err.print(f"interrupted; `ml-agent sweep --resume {record.sweep_id}` launches the rest")
        raise typer.Exit(130) from None
    except MlAgentError as exc:
        raise MlAgentError(
            f"{exc}\n(sweep {record.sweep_id}: `ml-agent sweep --resume {record.sweep_id}` "
            "launches the runs not yet launched)"
        ) from None
    err.print(f"sweep {record.sweep_id}: {len(launched)} run(s) launched; "
              f"`ml-agent results {record.sweep_id}` compares them", highlight=False,
              soft_wrap=True)


def _print_dry_run(loaded, plans, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    from ml_agent.cli.table import print_table
    from ml_agent.plan import worst_case_cost
    from ml_agent.runs.sweeps import machine_parallel

    rows = []
    for run, plan in zip(loaded.runs, plans, strict=True):
        rows.append({"index": run.index, "label": run.label, "task": run.task,
                     "overrides": list(run.overrides), "backend": plan.backend,
                     "budget_usd": plan.proxy.budget_usd,
                     "worst_case_usd": worst_case_cost(plan)["total"]})
    budgets = [r["budget_usd"] for r in rows]
    api = None if any(b is None for b in budgets) else round(sum(budgets), 2)
    total = round(sum(r["worst_case_usd"] for r in rows), 2)
    parallel = machine_parallel(plans[0].backend, loaded.spec.max_parallel,
                                plans[0].sandbox.gpu, loaded.spec.share_gpus)
    if as_json:
        sys.stdout.write(json.dumps({
            "runs": rows, "max_parallel": parallel, "budget_usd": loaded.spec.budget_usd,
            "api_budget_usd": api, "worst_case_usd": total}, indent=2) + "\n")
        return

    def usd(x: float | None) -> str:
        return "no limit" if x is None else f"${x:.2f}"

    print_table(
        ("#", "RUN NAME", "TASK", "SETTINGS", "BUDGET", "WORST CASE"),
        [[str(r["index"] + 1), r["label"], _short(r["task"]), " ".join(r["overrides"]) or "-",
          usd(r["budget_usd"]), usd(r["worst_case_usd"])] for r in rows],
        right=(0, 4, 5), title=f"sweep {loaded.path.name}: {len(rows)} run(s) of {loaded.base}",
    )
    capped = "" if parallel == loaded.spec.max_parallel else \
        f" (max_parallel {loaded.spec.max_parallel}, capped by this machine's CPU cores" + (
            " and GPUs)" if plans[0].backend == "local" and plans[0].sandbox.gpu
            and not loaded.spec.share_gpus else ")")
    print(f"at most {parallel} live at a time{capped}")
    print(f"worst case of the whole sweep: {usd(total)} (every run to its timeout and budget); "
          f"API budgets add up to {usd(api)}"
          + (f"; the sweep's budget_usd is {usd(loaded.spec.budget_usd)}"
             if loaded.spec.budget_usd is not None else ""))


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
