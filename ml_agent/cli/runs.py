"""`ml-agent up`, `attach`, `ps`, `logs`, `stop` and `doctor`: the run commands, both backends.

Heavy imports (backends, Rich) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ml_agent.errors import MlAgentError, RunNotFound

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ml_agent.backends import Backend
    from ml_agent.cli.chat import Renderer
    from ml_agent.contracts import RunRecord

UP_HELP = """Launch the agent: chat with it (on a terminal), or give it a `--task`.

With no CONFIG, runs the shipped `configs/local.yaml`: this machine, a bubblewrap sandbox,
no Modal account (needs ANTHROPIC_API_KEY or `$ML_AGENT_HOME/secrets/anthropic-secret.env`).
At any moment: Ctrl-D ends the conversation (the agent finishes its turn, the run ends),
/detach leaves the run going (`ml-agent attach` re-joins), Ctrl-C stops it, then runs a
final metric sync. `--detach` returns at once. A `--task` run ends by printing where its
result.json, transcript and outputs are.

`--resume RUN` continues a run that has ended (done, stopped, timed out or crashed) in a new
sandbox: the same conversation and run folder, a new run token, the budget that is left;
with `--budget USD`, the run's budget becomes USD in all (more than it has cost so far).

GPUs on the local backend: each run gets `sandbox.gpu`'s count of this machine's GPUs for
itself (CUDA_VISIBLE_DEVICES), or a clear error naming the runs that hold them.
`--share-gpus` lets the run share GPUs with other `--share-gpus` runs (never with a run
that holds its GPUs alone).

Examples:

    ml-agent up
    ml-agent up configs/local.yaml --task "fine-tune distilbert on imdb for one epoch"
    ml-agent up configs/a10.yaml --detach --set sandbox.timeout=4h
    ml-agent up --resume 20261126-0315-a1b2c3 --task "now evaluate it on the test split"
    ml-agent up --resume 20261126-0315-a1b2c3 --budget 40 --detach
    ml-agent up configs/a10.yaml --backend local --share-gpus --detach
"""

Sets = typer.Option([], "--set", metavar="KEY=VALUE",
                    help="Override a config value: dotted.key=value (repeatable).")


def register(app: typer.Typer) -> None:
    app.command(help=UP_HELP)(up)
    app.command()(attach)
    app.command()(ps)
    app.command()(logs)
    app.command()(stop)
    app.command()(doctor)


# -- helpers -------------------------------------------------------------------------------


def _console():  # type: ignore[no-untyped-def]
    from ml_agent.cli.output import console

    return console()


def _err():  # type: ignore[no-untyped-def]
    from ml_agent.cli.output import err_console

    return err_console()


def _modal_configured() -> bool:
    """A Modal token is configured (env or ~/.modal.toml): only then ask Modal anything."""
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    path = os.environ.get("MODAL_CONFIG_PATH") or str(Path.home() / ".modal.toml")
    return Path(path).is_file()


def _backend(name: str) -> Backend:
    from ml_agent.backends import get_backend

    return get_backend(name)


def _backend_for(run: str) -> tuple[Backend, str]:
    """The backend whose registry holds `run` (an id or a unique prefix), and the full id.

    Local runs first: Modal is asked only when no local run matches. A prefix that matches
    several runs is an error that lists them.
    """
    from ml_agent.backends.local import registry

    if not run or "/" in run:
        raise RunNotFound(f"no run {run!r} (see `ml-agent ps`)")
    local = [p.run_id for p in registry.all_runs() if p.run_id.startswith(run)]
    if run in local:
        local = [run]
    if len(local) > 1:
        shown = ", ".join(local[:5]) + (", …" if len(local) > 5 else "")
        raise RunNotFound(f"{run!r} matches {len(local)} runs ({shown}); give more of the id")
    if local:
        return _backend("local"), local[0]
    if not _modal_configured():
        raise RunNotFound(f"no run {run!r} (see `ml-agent ps`)")
    backend = _backend("modal")
    # The registry as it is: `ps` would also record how a run that ended by itself ended,
    # and leave nothing for `finish` (its final metric sync) to do.
    find = getattr(backend, "find", None)
    if find is not None:
        return backend, find(run).run_id
    for record in backend.ps():
        if record.run_id.startswith(run):
            return backend, record.run_id
    raise RunNotFound(f"no run {run!r} (see `ml-agent ps`)")


def where(record: RunRecord) -> dict[str, Any]:
    """Where a run's folder is, from this machine: the host path of a local run; the volume
    name and path of a Modal run (`modal volume get` fetches it)."""
    rel = f"runs/{record.run_id}"
    if record.backend == "local":
        from ml_agent.backends.local import registry

        try:  # launch.json: our own file (0600), written by `up`
            launch = json.loads(registry.RunPaths.of(record.run_id).launch.read_text())
            return {"host_path": str(Path(launch["host"]["volumes"]["data"]) / rel)}
        except (OSError, ValueError, KeyError, TypeError):
            return {"host_path": None}
    return {"volume": _data_volume_name(record), "path": rel}


def _data_volume_name(record: RunRecord) -> str | None:
    """The data volume of a Modal run: recorded in the registry since issue 15; for older
    records, from its config."""
    return record.data_volume or _config_data_volume(record.config)


@functools.cache
def _config_data_volume(config: str) -> str | None:
    """One load per config file, however many runs `ps --json` lists; None when the config
    is gone or no longer valid."""
    from ml_agent.config import load_config
    from ml_agent.plan import build_plan

    try:
        return build_plan(load_config(config), config).data_volume.name
    except (MlAgentError, OSError):
        return None


def _record(backend: Backend, run_id: str) -> RunRecord | None:
    getter = getattr(backend, "record", None)
    if getter is not None:
        return getter(run_id)  # type: ignore[no-any-return]
    return next((r for r in backend.ps() if r.run_id == run_id), None)


def _secrets(backend: Backend, run_id: str) -> list[str]:
    """What never reaches the terminal: the run's token (when this machine knows it)."""
    token_of = getattr(backend, "token", None)
    token = token_of(run_id) if token_of is not None else None
    return [token] if token else []


def _renderer(backend: Backend, run_id: str) -> Renderer:
    from ml_agent.cli.chat import Renderer

    return Renderer(_console(), _secrets(backend, run_id))


def _stop_run(backend: Backend, run_id: str) -> None:
    """Stop a run and say what happens, in the order both backends do it."""
    err = _err()
    err.print(f"stopping run {run_id}: the sandbox, then a final metric sync…", highlight=False)
    with _progress_to_terminal(backend, run_id):
        record = backend.stop(run_id)
    err.print(f"run {run_id} {record.status}", highlight=False)


def _finish_run(backend: Backend, run_id: str) -> RunRecord | None:
    """The end of a run that ended by itself: a backend with end-of-run steps (Modal: final
    metric sync, token revoked, usage into result.json) does them now, showing each step.

    None when the backend has none (locally the supervisor does them) or they failed.
    """
    finish: Callable[[str], RunRecord] | None = getattr(backend, "finish", None)
    if finish is None:
        return None
    err = _err()
    err.print(f"finishing run {run_id}: a final metric sync, then its usage…", highlight=False)
    try:
        with _progress_to_terminal(backend, run_id):
            return finish(run_id)
    except MlAgentError as exc:
        err.print(f"[yellow]warning:[/] the end of run {run_id} is incomplete: {exc}; "
                  f"`ml-agent stop {run_id}` retries it", highlight=False)
    except KeyboardInterrupt:
        err.print(f"interrupted; `ml-agent stop {run_id}` completes the end of the run")
    return None


@contextlib.contextmanager
def _progress_to_terminal(backend: Backend, run_id: str) -> Iterator[None]:
    """While the block runs, the backend's progress lines go to stderr, one per line:
    untrusted text, so markup-escaped, control characters dropped, the run token redacted."""
    if not hasattr(backend, "progress"):
        yield
        return
    from ml_agent.cli.chat import Renderer

    out = Renderer(_err(), _secrets(backend, run_id))

    def show(line: str) -> None:
        out.print(f"[dim]  {out.clean(line)}[/]")

    before = backend.progress  # type: ignore[attr-defined]
    backend.progress = show  # type: ignore[attr-defined]
    try:
        yield
    finally:
        backend.progress = before  # type: ignore[attr-defined]


# -- up / attach ---------------------------------------------------------------------------


def up(
    config: str = typer.Argument(None, help="Config file; default: the shipped local.yaml."),
    task: str = typer.Option(None, "--task", "-t", metavar="TEXT",
                             help="Run this task one-shot, then exit."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the run id and return."),
    sets: list[str] = Sets,
    backend: str = typer.Option(None, "--backend", metavar="modal|local",
                                help="Overrides the config's `backend:`."),
    allow: list[str] = typer.Option(  # noqa: B008 - the project tree rule: ml_agent.config.tree
        [],
        "--allow-outside",
        metavar="PATH",
        help="Let extends: and src: name files in PATH, outside the project tree (also "
        "$ML_AGENT_ALLOW_OUTSIDE).",
    ),
    resume: str = typer.Option(None, "--resume", metavar="RUN",
                               help="Continue an ended run's conversation in a new sandbox "
                               "(same run folder, new token, the budget left)."),
    share_gpus: bool = typer.Option(False, "--share-gpus",
                                    help="Local GPUs: share them with other --share-gpus runs "
                                    "instead of holding them alone."),
    budget: float = typer.Option(None, "--budget", metavar="USD",
                                 help="With --resume: the run's new total budget, more than "
                                 "it has cost so far (else it keeps proxy.budget_usd)."),
) -> None:
    if budget is not None and resume is None:
        raise typer.BadParameter("goes with --resume RUN (a new run's budget is "
                                 "proxy.budget_usd: --set proxy.budget_usd=USD)",
                                 param_hint="'--budget'")
    if budget is not None and not 0 < budget < float("inf"):
        raise typer.BadParameter(f"must be a positive amount in USD (got {budget:g})",
                                 param_hint="'--budget'")
    if resume is not None:
        if config or sets or backend or allow or share_gpus:
            raise typer.BadParameter("--resume continues a run with its own config: give no "
                                     "CONFIG, --set, --backend, --allow-outside or "
                                     "--share-gpus with it", param_hint="'--resume'")
        _resume(resume, task=task, detach=detach, budget=budget)
        return
    from ml_agent.config import load_config
    from ml_agent.contracts import CONFIGS_DIR, new_run_id
    from ml_agent.plan import build_plan

    if backend not in (None, "modal", "local"):
        raise typer.BadParameter(f"choose modal or local (got {backend!r})",
                                 param_hint="'--backend'")
    path = config or str(CONFIGS_DIR / "local.yaml")
    overrides = [*sets, *([f"backend={backend}"] if backend else [])]
    plan = build_plan(load_config(path, overrides, allow=allow), path).for_launch(
        new_run_id(), share_gpus=share_gpus)
    if share_gpus and (plan.backend != "local" or not plan.sandbox.gpu):
        raise typer.BadParameter("GPUs are shared on the local backend only, by runs with a "
                                 "sandbox.gpu (Modal gives each sandbox GPUs of its own)",
                                 param_hint="'--share-gpus'")
    runner = _backend(plan.backend)
    err = _err()
    if task is None and not detach and not sys.stdin.isatty():
        raise typer.BadParameter("stdin is not a terminal: give a --task, or use --detach")
    said: set[str] = set()  # the check's warnings: said before the launch, and if it fails
    if (check := getattr(runner, "check", None)) is not None:
        try:
            with err.status("checking…"):
                check(plan)
        finally:
            _say_warnings(runner, said)
    with err.status(f"launching run {plan.launch.run_id if plan.launch else ''}…") as status:
        if hasattr(runner, "progress"):
            runner.progress = _progress(status)  # type: ignore[attr-defined]
        try:
            record = runner.up(plan, task=task, detach=detach)
        except KeyboardInterrupt:
            err.print("interrupted: nothing is running")
            raise typer.Exit(130) from None
        finally:
            _say_warnings(runner, said)
    if detach:
        _console().print(record.run_id, highlight=False)
        err.print(
            f"run {record.run_id} started ({record.backend}); "
            f"`ml-agent attach {record.run_id}` to join, `ml-agent stop {record.run_id}` to stop"
        )
        return
    raise typer.Exit(_converse(runner, record.run_id, one_shot=task is not None))


def _say_warnings(runner: Backend, said: set[str]) -> None:
    """The backend's notes and warnings not said yet."""
    from rich.markup import escape

    err = _err()
    for note in getattr(runner, "notes", []):
        if note not in said:
            said.add(note)
            err.print(note, highlight=False, markup=False)
    for warning in getattr(runner, "warnings", []):
        if warning not in said:
            said.add(warning)
            err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)


def _resume(run: str, *, task: str | None, detach: bool, budget: float | None = None) -> None:
    """`up --resume RUN`: a new leg of an ended run, then chat, a task, or detach (as `up`)."""
    runner, run_id = _backend_for(run)
    resumer: Callable[..., RunRecord] | None = getattr(runner, "resume", None)
    if resumer is None:
        raise typer.BadParameter(f"the {runner.name} backend cannot resume runs",
                                 param_hint="'--resume'")
    if task is None and not detach and not sys.stdin.isatty():
        raise typer.BadParameter("stdin is not a terminal: give a --task, or use --detach")
    since = 0  # the earlier legs' events: not shown again
    with contextlib.suppress(MlAgentError):
        since = max((e["seq"] for e in runner.events(run_id, follow=False)), default=0)
    err = _err()
    with err.status(f"resuming run {run_id}…") as status:
        if hasattr(runner, "progress"):
            runner.progress = _progress(status)  # type: ignore[attr-defined]
        try:
            record = resumer(run_id, task=task, detach=detach, budget_usd=budget)
        except KeyboardInterrupt:
            err.print(f"interrupted: run {run_id} was not resumed")
            raise typer.Exit(130) from None
    _say_warnings(runner, set())
    legs = max(len(record.legs), 1)
    err.print(f"run {run_id} resumed (leg {legs})", highlight=False)
    if detach:
        _console().print(record.run_id, highlight=False)
        err.print(f"`ml-agent attach {run_id}` to join, `ml-agent stop {run_id}` to stop")
        return
    raise typer.Exit(_converse(runner, record.run_id, one_shot=task is not None, since=since))


def _progress(status: Any) -> Any:
    """Steps and details on a terminal's status line; only the steps in a log (no TTY)."""
    err = _err()

    def show(line: str) -> None:
        if err.is_terminal:
            status.update(_short(line.strip()))
        elif not line.startswith(" "):
            err.print(_short(line), highlight=False)

    return show


def _short(line: str, width: int = 100) -> str:
    from rich.markup import escape

    line = " ".join(line.split())
    return escape(line if len(line) <= width else line[: width - 1] + "…")


def attach(run: str = typer.Argument(..., help="Run id (or a unique prefix).")) -> None:
    """Re-join a run's conversation: replays what happened, then follows it live.

    At any moment, also during a long tool call or on a `--task` run: /detach leaves the run
    going, Ctrl-D ends the conversation (on a `--task` run: detaches), Ctrl-C stops the run
    and runs a final metric sync.

    Examples:

        ml-agent attach 20261126-0315-a1b2c3
        ml-agent attach 20261126-0315        # a unique prefix is enough
    """
    runner, run_id = _backend_for(run)
    raise typer.Exit(_converse(runner, run_id, one_shot=False))


def _converse(backend: Backend, run_id: str, *, one_shot: bool, since: int = 0) -> int:
    """Follow a run's events and, on a terminal, read the keyboard at the same time: a
    message, `/detach`, Ctrl-D or Ctrl-C is acted on at any moment, also during a long tool
    call and when attached to a `--task` run. The exit code of the agent. Events up to seq
    `since` are not shown (a resumed run's earlier legs)."""
    import queue
    import threading

    from ml_agent.cli import chat
    from ml_agent.contracts import protocol

    renderer = _renderer(backend, run_id)
    renderer.one_shot = one_shot
    keys = chat.Keyboard() if chat.is_interactive() else None
    state = _Conversation(one_shot=one_shot)
    result: dict[str, Any] | None = None
    ended_by_user = False
    activity = _Activity(_err())
    try:
        last = 0
        for event in protocol.dedupe(backend.events(run_id, follow=False)):
            last = event["seq"]
            if last <= since:
                continue
            renderer.render(event)
            state.saw(event)
            result = _ended_by(event, result)
        # The live events come from a thread: the main thread reads the keyboard meanwhile.
        events: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()

        def pump() -> None:
            try:
                for event in protocol.dedupe(backend.events(run_id, follow=True), after=last):
                    events.put(event)
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, raised there
                events.put(exc)
            events.put(None)

        following = result is None  # a replay that holds the result: the run is over
        if following:
            threading.Thread(target=pump, daemon=True, name="events").start()
        if keys is not None and result is None:
            _err().print(f"[dim]{chat.KEYS_HELP_TASK if state.one_shot else chat.KEYS_HELP}[/]")
        if last <= since:  # the agent is still starting (its Claude CLI): say so until it speaks
            activity.start("waiting for the agent to start")
        prompted = False
        # Until the stream ends, also after the result: the run's end (status recorded, the
        # final metric sync) follows the agent's result, and `ps` right after must see it.
        while following:
            if keys is not None and state.waiting and not prompted and not state.one_shot:
                activity.stop()
                _console().print("[bold]you>[/] ", end="")
                prompted = True
            for line in keys.lines(0.05) if keys is not None else ():
                if line is chat.Keyboard.EOF or (line or "").strip() == chat.DETACH_COMMAND:
                    if line is not None or state.one_shot:  # /detach; Ctrl-D on a --task run
                        activity.stop()
                        _err().print(f"detached; `ml-agent attach {run_id}` to re-join")
                        return 0
                    # Ctrl-D: the conversation is over; the agent ends its turn, then the run
                    backend.send(run_id, protocol.encode_input(protocol.IN_END))
                    ended_by_user = True
                    if prompted:  # Ctrl-D echoes no newline
                        _console().print()
                        prompted = False
                    _err().print("[dim]ending the conversation: the agent finishes its turn, "
                                 "then the run ends (Ctrl-C stops it now)[/]")
                    keys = None
                    break
                text = (line or "").strip()
                if not text:
                    continue
                if state.one_shot:
                    _err().print(f"[dim]this run works on its task: {chat.KEYS_HELP_TASK}[/]")
                    continue
                if not state.waiting:
                    _err().print("[dim](the agent is working: your message comes next)[/]")
                renderer.sent.append(text)
                backend.send(run_id, protocol.encode_input(protocol.IN_USER, text=text))
                state.waiting, prompted = False, False
            try:
                item = events.get(timeout=0.05 if keys is not None else 0.5)
            except queue.Empty:
                activity.tick()
                continue
            while True:  # everything that arrived meanwhile
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                if prompted:  # the prompt's line is the user's: events go below it
                    _console().print()
                    prompted = False
                activity.stop()
                renderer.render(item)
                state.saw(item)
                result = _ended_by(item, result)
                if item["type"] == protocol.TOOL_USE:
                    activity.start(f"{item.get('name', 'tool')} running")
                if result is not None and keys is not None:
                    keys = None  # nothing to say to a run that has ended
                    activity.start("ending the run")
                try:
                    item = events.get_nowait()
                except queue.Empty:
                    break
            if item is None:
                break
    except KeyboardInterrupt:
        activity.stop()
        _stop_run(backend, run_id)
        return 130
    finally:
        activity.stop()
    # The run ended by itself (its result, or the end of its output): end it now, so that a
    # one-shot run's final metric sync and usage do not wait for a later `ps` or `stop`.
    record = _finish_run(backend, run_id) or _record(backend, run_id)
    if result is not None:
        renderer.summary(result, run_id, by_user=ended_by_user,
                         metered=record.cost_usd if record else None)
        status = str(result.get("status"))
    else:
        status = record.status if record else "unknown"
        said = "finished by the user" if ended_by_user and status == "succeeded" else status
        _err().print(f"run {run_id} ended: {said}")
    if record is not None:
        _print_where(record)
    return 0 if status == "succeeded" else 1


def _ended_by(event: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `result` event that ended the run so far: a `ready` after it starts a new leg of
    the run (`up --resume`), which has not ended."""
    from ml_agent.contracts import protocol

    if event["type"] == protocol.RESULT:
        return event
    return None if event["type"] == protocol.READY else result


class _Conversation:
    """What the replayed and live events say about the conversation."""

    def __init__(self, *, one_shot: bool) -> None:
        self.one_shot = one_shot
        self.waiting = False  # the agent waits for the user's next message

    def saw(self, event: dict[str, Any]) -> None:
        from ml_agent.cli import chat
        from ml_agent.contracts import protocol

        if event["type"] == protocol.READY:  # each leg of a resumed run says its own mode
            self.one_shot = event.get("mode") == "one-shot"
        self.waiting = chat.turn_over(event) or event["type"] == protocol.READY


class _Activity:
    """A spinner with the elapsed time while nothing is printed (a long tool call, the
    agent's start); only on a terminal, so logs get no control sequences."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.status: Any = None
        self.what = ""
        self.since = 0.0

    def start(self, what: str) -> None:
        self.stop()
        if not self.console.is_terminal:
            return
        self.what, self.since = what, time.monotonic()
        self.status = self.console.status(self._text())
        self.status.start()

    def tick(self) -> None:
        if self.status is not None:
            self.status.update(self._text())

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def _text(self) -> str:
        from rich.markup import escape

        return f"{escape(self.what)}… {time.monotonic() - self.since:.0f} s"


def _print_where(record: RunRecord) -> None:
    """Where the run's results are: result.json, the transcript, the outputs."""
    from ml_agent.contracts import protocol

    place = where(record)
    err = _err()
    if place.get("host_path"):
        folder = place["host_path"]
        # soft_wrap: a path is copied from the terminal, so it is never broken by Rich
        err.print(f"results: {folder}/{protocol.RESULT_FILE}", highlight=False, soft_wrap=True)
        err.print(f"transcript: {folder}/{protocol.TRANSCRIPT_FILE}", highlight=False,
                  soft_wrap=True)
        err.print(f"outputs: {folder}/", highlight=False, soft_wrap=True)
    elif place.get("path"):
        volume = place.get("volume") or "<data volume>"
        err.print(f"results: volume {volume}, {place['path']}/ ({protocol.RESULT_FILE}, "
                  f"{protocol.TRANSCRIPT_FILE}, the outputs); "
                  f"`modal volume get {volume} {place['path']}` copies them here",
                  highlight=False, soft_wrap=True)


# -- ps / logs / stop ----------------------------------------------------------------------


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _all_records(which: str) -> list[RunRecord]:
    records = []
    if which in ("all", "local"):
        records += _backend("local").ps()
    if which == "modal" or (which == "all" and _modal_configured()):
        try:
            records += _backend("modal").ps()
        except MlAgentError as exc:
            if which == "modal":
                raise
            _err().print(f"[yellow]warning:[/] Modal runs not listed: {exc}")
    return sorted(records, key=lambda r: r.created_at, reverse=True)


def ps(
    as_json: bool = typer.Option(False, "--json", help="One JSON array of run records."),
    backend: str = typer.Option("all", "--backend", metavar="all|local|modal",
                                help="Which registries to list."),
    sweep: str = typer.Option(None, "--sweep", help="Only the runs of this sweep (id or prefix)."),
) -> None:
    """Live and finished runs, newest first: status, config, GPU, age, cost so far.

    COST is what the proxy metered (the agent's own figure shows beside it when it differs).

    Local runs come from $ML_AGENT_HOME/runs, Modal runs from the app's run registry.

    Examples:

        ml-agent ps
        ml-agent ps --backend local --json
        ml-agent ps --sweep sw-20261126-0315-a1b2c3
    """
    records = _all_records(backend)
    if sweep is not None:
        records = [r for r in records if r.sweep and r.sweep.startswith(sweep)]
        sweep_state(sweep)
    if as_json:
        rows = [{**r.to_dict(), "where": where(r)} for r in records]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    # Rich's Table took 1.4 s for 1,000 runs; the plain table never cuts a cell (the run id
    # is what people paste into attach/logs/stop)
    from ml_agent.cli.table import print_table

    now = time.time()
    # LEGS: the sandboxes a resumed run has had (`up --resume`), shown once a run has two.
    legs = any(len(r.legs) > 1 for r in records)
    cells = [[r.run_id, r.status, r.backend, r.config, r.gpu or "-", _age(now - r.created_at),
              _cost(r), *([str(max(len(r.legs), 1))] if legs else [])] for r in records]
    if not records:
        _err().print("no runs yet: `ml-agent up` starts one" if sweep is None
                     else f"no runs of sweep {sweep} yet", highlight=False, markup=False)
        return
    print_table(("RUN", "STATUS", "BACKEND", "CONFIG", "GPU", "AGE", "COST",
                 *(["LEGS"] if legs else [])), cells)


def sweep_state(sweep: str, *, only_problems: bool = False) -> str | None:
    """Say on stderr how the launching of `sweep` (an id or prefix) stands: its driver
    running, failed, or gone with runs not launched. Returns the line; None for a sweep
    not recorded on this machine (its runs are still listed)."""
    from ml_agent.runs.sweeps import SweepRecord
    from ml_agent.runs.sweepstate import describe

    try:
        record = SweepRecord.load(sweep)
    except (MlAgentError, OSError, ValueError):
        return None
    line, problem = describe(record)
    if problem or not only_problems:
        _err().print(("warning: " if problem else "") + line, highlight=False, soft_wrap=True,
                     markup=False)
    return line


def _cost(record: RunRecord) -> str:
    """COST: the proxy's metering (so far, for a live run); the agent's own figure beside
    it, labelled, when it says something else (an agent can print any number)."""
    from ml_agent.cli.chat import cost_text

    return cost_text(record.cost_usd, record.agent_cost_usd)


def logs(
    run: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until it ends."),
) -> None:
    """The run's raw output (the sandbox's stdout and stderr).

    The run token is redacted; everything else is printed as the sandbox wrote it.

    Examples:

        ml-agent logs 20261126-0315-a1b2c3
        ml-agent logs 20261126-0315 -f      # follow until the run ends or Ctrl-C
    """
    runner, run_id = _backend_for(run)
    renderer = _renderer(runner, run_id)
    try:
        for line in runner.logs(run_id, follow=follow):
            text = line
            for secret in renderer.secrets:
                text = text.replace(secret, "<run token>")
            text = "".join(ch for ch in text if ch == "\t" or ch.isprintable())
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def stop(
    run: str = typer.Argument(None, help="Run id (or a unique prefix)."),
    all_runs: bool = typer.Option(False, "--all", help="Stop every live run."),
    sweep: str = typer.Option(None, "--sweep", help="Stop a sweep: no more launches, and "
                              "its live runs (id or prefix)."),
) -> None:
    """Stop a run: the sandbox, then a final metric sync; idempotent.

    The run token is revoked, and the proxy's usage lands in the run's result.json.

    Examples:

        ml-agent stop 20261126-0315-a1b2c3
        ml-agent stop --all
        ml-agent stop --sweep sw-20261126-0315-a1b2c3
    """
    if [all_runs, run is not None, sweep is not None].count(True) != 1:
        raise typer.BadParameter("give a RUN, --all or --sweep ID")
    if run is not None:
        runner, run_id = _backend_for(run)
        _stop_run(runner, run_id)
        return
    records = None
    if sweep is not None:
        from ml_agent.errors import RunNotFound
        from ml_agent.runs.sweeps import SweepRecord

        try:
            sweep = SweepRecord.stop(sweep)  # its driver launches nothing more
        except RunNotFound:  # launched from another machine: its runs are in the registry
            records = _all_records("all")
            ids = sorted({r.sweep for r in records if r.sweep and r.sweep.startswith(sweep)})
            if len(ids) != 1:
                raise
            sweep = ids[0]
            _err().print(f"[yellow]warning:[/] sweep {sweep} was launched from another "
                         "machine: its runs here are stopped, but its driver there may launch "
                         "more; run `ml-agent stop --sweep` on that machine too")
    live = [r for r in (records or _all_records("all")) if r.status in ("starting", "running")
            and (sweep is None or r.sweep == sweep)]
    if not live:
        _err().print("no live runs")
    for record in live:
        _stop_run(_backend(record.backend), record.run_id)


# -- doctor --------------------------------------------------------------------------------


def doctor() -> None:
    """What the local backend and Modal each need, and what this machine has (no secrets).

    Exits 0 when at least one backend is ready.

    Example:

        ml-agent doctor
    """
    from rich.markup import escape
    from rich.table import Table

    from ml_agent.backends.local.doctor import local_checks, modal_checks

    by_backend = {"local": local_checks(), "modal": modal_checks()}
    for name, checks in by_backend.items():
        table = Table(box=None, show_header=False, title=f"{name} backend", title_justify="left")
        table.add_column(width=1)
        table.add_column(style="bold")
        table.add_column()
        for check in checks:
            mark = "[green]✓[/]" if check.ok else ("[red]✗[/]" if check.required else "[dim]-[/]")
            table.add_row(mark, check.what, escape(check.detail))
        _console().print(table)
    ready = [n for n, cs in by_backend.items() if all(c.ok or not c.required for c in cs)]
    _console().print(f"ready: {', '.join(ready) if ready else 'neither backend yet'}")
    raise typer.Exit(0 if ready else 1)
