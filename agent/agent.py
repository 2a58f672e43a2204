#!/usr/bin/env python3
"""The sandbox's own command: a Claude agent (claude-agent-sdk) that speaks the JSON-lines protocol.

Interactive (default): one ClaudeSDKClient kept across turns, driven by protocol inputs on
stdin (`{"type": "user", "text": ...}`, `{"type": "interrupt"}`); `{"type": "end"}` (the
user's Ctrl-D) or a closed stdin ends the session cleanly. One-shot (`--one-shot`): runs
one task, the first `user` line on stdin (of any length: an argv word could not hold a long
one), to completion; exit 0 on success. Each turn starts with a `user_text` event (the
message or the task), so that a replayed conversation shows both sides.

`ready` is emitted as soon as the settings are valid and input is accepted: stdin is read
and queued while the SDK is imported and the Claude CLI connects, and a failure there is an
`error` event and a non-zero exit like any other. `ready` therefore names no session; the
session id comes with `result` (and result.json).

Settings come only from the launcher -> agent environment (`protocol.ENV`). Events go to
stdout (nothing else may: the launcher reads stdout as the protocol) and to the transcript in
the run folder; `result.json` is written at the start and rewritten at the end. Depends on
claude-agent-sdk and the standard library only: this file and its sibling protocol.py are
all that is shipped into the sandbox.

Exit codes: 0 succeeded, 1 failed, 2 bad setup (missing env), 143 stopped (SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import IO, Any

import protocol

EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_STOPPED = 0, 1, 2, 143
#: Tool output longer than this is cut in events (the CLI's own session keeps all of it).
MAX_TOOL_RESULT_CHARS = 20_000
#: Assistant-message errors after which no further turn can succeed.
FATAL_API_ERRORS = frozenset({"authentication_failed", "billing_error"})
#: Result subtypes that end the whole run, not just the turn.
FATAL_RESULT_SUBTYPES = frozenset({"error_max_budget_usd"})
STOP_GRACE_S = 5.0


class SetupError(Exception):
    """The environment the launcher gave is unusable; the message says what to set."""


# -- The SDK ------------------------------------------------------------------------------
SDK = "claude_agent_sdk"
#: The SDK names the agent uses, by the module that defines them.
SDK_NAMES = {
    "client": ("ClaudeSDKClient",),
    "types": (
        "ClaudeAgentOptions", "AssistantMessage", "ResultMessage", "SystemMessage", "TextBlock",
        "ToolResultBlock", "ToolUseBlock", "UserMessage",
    ),
}


def load_sdk() -> types.SimpleNamespace:
    """The SDK names the agent uses (SDK_NAMES), as one namespace.

    Imported after `ready` (the import costs ~1.5 s of CPU, mostly `mcp`), so a client sees
    the agent accept input at once while the SDK loads and the CLI connects.
    """
    importlib.import_module(SDK)
    found = {}
    for module, names in SDK_NAMES.items():
        loaded = importlib.import_module(f"{SDK}.{module}")
        found.update({name: getattr(loaded, name) for name in names})
    return types.SimpleNamespace(**found)


# -- Settings (only from the launcher -> agent environment) --------------------------------
@dataclasses.dataclass(frozen=True)
class Settings:
    run_id: str
    run_dir: Path
    model: str | None
    max_turns: int | None
    tools: list[str]
    permission_mode: str
    budget_usd: float | None
    system_prompt: str
    hf_namespace: str
    config_dir: Path
    config_hash: str | None
    resume_session: str | None = None  # a resumed run: the Claude session it continues
    trackio_project: str = ""  # set by the launcher for a sweep's runs; empty = agent's choice
    trackio_run_name: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        def get(name: str) -> str:
            assert name in protocol.ENV, f"{name} is not in protocol.ENV"
            return env.get(name, "").strip()

        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ML_AGENT_RUN_DIR"):
            if not get(name):
                raise SetupError(f"{name} is not set ({protocol.ENV[name]}); the launcher sets it")
        run_dir = Path(get("ML_AGENT_RUN_DIR"))
        if not run_dir.is_absolute():
            raise SetupError(f"ML_AGENT_RUN_DIR must be an absolute path (got {str(run_dir)!r})")
        max_turns = get("ML_AGENT_MAX_TURNS")
        budget = get("ML_AGENT_BUDGET_USD")
        try:
            turns = int(max_turns) if max_turns else None
            budget_usd = float(budget) if budget else None
        except ValueError as exc:
            raise SetupError(f"ML_AGENT_MAX_TURNS / ML_AGENT_BUDGET_USD: {exc}") from None
        resume = get("ML_AGENT_RESUME_SESSION")
        if resume and not set(resume) <= protocol.SESSION_ID_CHARS:
            raise SetupError(f"ML_AGENT_RESUME_SESSION is not a session id (got {resume!r})")
        return cls(
            run_id=get("ML_AGENT_RUN_ID") or run_dir.name,
            run_dir=run_dir,
            model=get("ML_AGENT_MODEL") or None,
            max_turns=turns,
            tools=[t.strip() for t in get("ML_AGENT_ALLOWED_TOOLS").split(",") if t.strip()],
            permission_mode=get("ML_AGENT_PERMISSION_MODE") or "bypassPermissions",
            budget_usd=budget_usd,
            system_prompt=env.get("ML_AGENT_SYSTEM_PROMPT", ""),
            hf_namespace=get("ML_AGENT_HF_NAMESPACE"),
            config_dir=Path(get("CLAUDE_CONFIG_DIR") or run_dir / "claude"),
            config_hash=get("ML_AGENT_CONFIG_HASH") or None,
            resume_session=resume or None,
            trackio_project=get("ML_AGENT_TRACKIO_PROJECT"),
            trackio_run_name=get("ML_AGENT_TRACKIO_RUN_NAME"),
        )


def trackio_names(settings: Settings) -> str:
    """The system prompt's line on the trackio names the launcher chose, if it chose any (a
    sweep's runs share one project, the sweep id, each under its own run name)."""
    names = [f"{what} '{value}' (${var})" for what, value, var in (
        ("project", settings.trackio_project, "ML_AGENT_TRACKIO_PROJECT"),
        ("run name", settings.trackio_run_name, "ML_AGENT_TRACKIO_RUN_NAME"),
    ) if value]
    if not names:
        return ""
    return (f"Log metrics with trackio to {' with '.join(names)}: the launcher chose them, so "
            "that the runs of a sweep compare in one dashboard. setup_trackio.py uses them "
            "without flags; pass the same names to TrainingArguments(project=..., "
            "run_name=...) or trackio.init(project=..., name=...).")


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def cli_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """What the bundled Claude CLI needs inside a sandbox (DESIGN.md, facts learned)."""
    extra = {
        "CLAUDE_CONFIG_DIR": str(settings.config_dir),
        # Talk only to ANTHROPIC_BASE_URL (the proxy): no telemetry, no update checks.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    # The CLI refuses bypassed permissions as root unless it is told it runs in a sandbox.
    if settings.permission_mode == "bypassPermissions" and os.geteuid() == 0:
        extra["IS_SANDBOX"] = "1"
    tmp = Path(env.get("CLAUDE_CODE_TMPDIR") or env.get("TMPDIR") or "/tmp")
    if not _writable_dir(tmp):
        tmp = settings.run_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
    extra["CLAUDE_CODE_TMPDIR"] = extra["TMPDIR"] = str(tmp)
    # Without a writable HOME the CLI's Bash tool loses PATH.
    home = env.get("HOME", "")
    if not home or not _writable_dir(Path(home)):
        extra["HOME"] = str(settings.run_dir / "home")
        Path(extra["HOME"]).mkdir(parents=True, exist_ok=True)
    return extra


# -- Records: events to stdout + transcript, result.json -----------------------------------
class _Tee:
    """The Emitter's stream: every event line goes to the protocol stream and the transcript.

    A client that went away (broken pipe) must not stop the run: the transcript still
    records everything, and a re-attaching client reads it back.
    """

    def __init__(self, out: IO[str], transcript: IO[str]) -> None:
        self._out: IO[str] | None = out
        self._transcript = transcript

    def write(self, line: str) -> int:
        self._transcript.write(line)
        if self._out is not None:
            try:
                self._out.write(line)
            except (BrokenPipeError, ValueError, OSError):
                self._out = None
        return len(line)

    def flush(self) -> None:
        self._transcript.flush()
        if self._out is not None:
            try:
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._out = None


def _last_seq(path: Path) -> int:
    """The highest seq already in a transcript, so a restarted agent keeps seq monotonic."""
    last = 0
    with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            event = protocol.decode_event(line)
            if event is not None:
                last = max(last, event["seq"])
    return last


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _PipFreeze(threading.Thread):
    """`pip freeze` in the background, so the end of the run never waits long.

    Started once the Claude CLI is connected, and niced: it must not compete with the
    agent's start for CPU (a sandbox may have a fraction of a core).
    """

    def __init__(self) -> None:
        super().__init__(daemon=True, name="pip-freeze")
        self.lines: list[str] | None = None
        self.start()

    def run(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            with subprocess.Popen(
                [sys.executable, "-m", "pip", "freeze", "--disable-pip-version-check"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True,
            ) as proc:
                with contextlib.suppress(OSError):  # lower priority (no preexec_fn: threads)
                    os.setpriority(os.PRIO_PROCESS, proc.pid, 10)
                try:
                    out, _ = proc.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
            if proc.returncode == 0:
                self.lines = out.splitlines()
                return
        # No pip in this environment (e.g. a bare virtualenv): the installed distributions.
        self.lines = _distributions()

    def result(self, timeout: float) -> list[str] | None:
        self.join(timeout)
        return self.lines


def _distributions() -> list[str] | None:
    """`name==version` of every installed distribution, in-process (fast, no pip needed)."""
    with contextlib.suppress(Exception):
        from importlib import metadata

        names = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()}
        return sorted(names, key=str.lower)
    return None


@dataclasses.dataclass
class Totals:
    """The agent's view of the run, summed over turns."""

    status: str = "running"
    cost_usd: float | None = None
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)
    turns: int = 0
    session_id: str | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    fatal: bool = False

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        for key, value in (usage or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.usage[key] = self.usage.get(key, 0) + value


class Records:
    """Owns the run folder's records: the transcript (every event and input) and result.json."""

    def __init__(self, settings: Settings, out: IO[str]) -> None:
        self.settings = settings
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        path = settings.run_dir / protocol.TRANSCRIPT_FILE
        start = _last_seq(path)
        self._transcript = path.open("a", encoding="utf-8")
        self._emitter = protocol.Emitter(_Tee(out, self._transcript), start=start)
        self._lock = threading.Lock()
        self.started_at = _now_iso()
        self._pip: _PipFreeze | None = None

    def start_pip_freeze(self) -> None:
        """Start collecting `pip freeze` for result.json (once; the agent's start comes first)."""
        if self._pip is None:
            self._pip = _PipFreeze()

    def emit(self, type_: str, **payload: Any) -> dict[str, Any]:
        with self._lock:
            return self._emitter.emit(type_, **payload)

    def record_input(self, message: dict[str, Any]) -> None:
        """Inputs go to the transcript only, as `input` records (not events: no seq)."""
        with self._lock:
            line = {"type": "input", "ts": round(time.time(), 3), "input": message}
            self._transcript.write(json.dumps(line) + "\n")
            self._transcript.flush()

    def write_result(self, totals: Totals, *, final: bool) -> None:
        result = {
            "run_id": self.settings.run_id,
            "status": totals.status,
            "started_at": self.started_at,
            "ended_at": _now_iso() if final else None,
            "cost_usd": None,  # the launcher fills it in from the proxy's metering
            "agent_cost_usd": totals.cost_usd,
            "usage": totals.usage,
            "proxy_usage": None,  # the launcher fills it in from the proxy's metering
            "turns": totals.turns,
            "session_id": totals.session_id,
            "config_hash": self.settings.config_hash,
            "image_id": os.environ.get("MODAL_IMAGE_ID") or None,
            "pip_freeze": self._pip_freeze(totals.status) if final else None,
        }
        assert tuple(result) == protocol.RESULT_KEYS
        path = self.settings.run_dir / protocol.RESULT_FILE
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(result, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # the rename below must not outlive the bytes in a crash
        os.replace(tmp, path)  # a reader never sees half a file

    def _pip_freeze(self, status: str) -> list[str] | None:
        """At the end: pip's list; the quick in-process one when pip never started (the CLI
        never connected) or would keep a stopping run past its grace period."""
        lines = None
        if self._pip is not None:
            lines = self._pip.result(timeout=2 if status == "stopped" else 30)
        return lines if lines is not None else _distributions()

    def close(self) -> None:
        with self._lock:
            self._transcript.close()


# -- The conversation ----------------------------------------------------------------------
def _text_of(content: Any) -> str:
    """A tool result's content (string or content blocks) as text, cut to a sane size."""
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                parts.append(json.dumps(block, default=str)[:200])
        text = "\n".join(parts)
    if len(text) > MAX_TOOL_RESULT_CHARS:
        cut = len(text) - MAX_TOOL_RESULT_CHARS
        text = text[:MAX_TOOL_RESULT_CHARS] + f"\n[... {cut} chars cut]"
    return text


class Agent:
    """One Claude session: runs turns and turns SDK messages into protocol events."""

    def __init__(self, settings: Settings, records: Records, *, one_shot: bool) -> None:
        self.settings = settings
        self.records = records
        self.one_shot = one_shot
        # A resumed run's result.json names its session from the start (a crash keeps it).
        self.totals = Totals(session_id=settings.resume_session)
        self.client: Any = None
        self.sdk: types.SimpleNamespace | None = None
        self.in_turn = False

    @contextlib.asynccontextmanager
    async def connected(self, env: dict[str, str]) -> Any:
        """Import the SDK and connect one ClaudeSDKClient (its Claude CLI) for the session.

        Runs after `ready`: stdin is queued meanwhile, and an error here propagates like
        any other SDK error (an `error` event, a non-zero exit).
        """
        self.sdk = load_sdk()
        async with self.sdk.ClaudeSDKClient(self.options(env, self.sdk)) as client:
            self.client = client
            self.records.start_pip_freeze()
            yield client

    def options(self, env: dict[str, str], sdk: types.SimpleNamespace) -> Any:
        s = self.settings
        mode = (
            "You run in one-shot mode: nobody will answer questions. Choose sensible "
            "defaults, say which ones you chose, and finish the task."
            if self.one_shot
            else "You run in interactive mode: ask the user for what is missing "
            "(model, dataset, goal) before spending GPU time."
        )
        append = "\n\n".join(
            p
            for p in (
                f"ml-agent run {s.run_id}; the run folder is {s.run_dir} "
                "($ML_AGENT_RUN_DIR): write every output there.",
                mode,
                trackio_names(s),
                s.system_prompt.strip(),
            )
            if p
        )
        # A restricted tool list keeps the Skill tool: skills are instructions, not powers.
        tools = [*s.tools, "Skill"] if s.tools and "Skill" not in s.tools else s.tools
        return sdk.ClaudeAgentOptions(
            # The preset keeps Claude Code's own system prompt (None would blank it).
            system_prompt={"type": "preset", "preset": "claude_code", "append": append},
            tools=tools or None,
            allowed_tools=list(s.tools),
            permission_mode=s.permission_mode,
            model=s.model,
            max_turns=s.max_turns,
            max_budget_usd=s.budget_usd,  # graceful stop; the proxy enforces the hard one
            cwd=os.getcwd(),
            env=env,
            setting_sources=["project"],  # .claude/CLAUDE.md and settings of the workdir
            skills="all",
            max_buffer_size=32 * 1024 * 1024,  # big tool outputs come as one JSON line
            resume=s.resume_session,  # `up --resume`: the same session, its history included
        )

    async def turn(self, text: str) -> str:
        """Send one user message and relay events until its result; returns the turn status."""
        started = time.monotonic()
        self._turn_errors: set[str] = set()
        self.in_turn = True
        try:
            return await self._relay(started, text)
        finally:
            self.in_turn = False

    async def _relay(self, started: float, text: str) -> str:
        sdk = self.sdk
        assert sdk is not None, "turn() before connected()"

        await self.client.query(text)
        status = "failed"
        async for msg in self.client.receive_response():
            if isinstance(msg, sdk.AssistantMessage):
                if msg.error is not None:
                    texts = [b.text for b in msg.content if isinstance(b, sdk.TextBlock)]
                    fatal = msg.error in FATAL_API_ERRORS
                    self.totals.fatal |= fatal
                    self._error(" ".join(texts) or msg.error, msg.error, fatal)
                    continue
                for block in msg.content:
                    if isinstance(block, sdk.TextBlock) and block.text:
                        self.records.emit(protocol.ASSISTANT_TEXT, text=block.text)
                    elif isinstance(block, sdk.ToolUseBlock):
                        self.records.emit(
                            protocol.TOOL_USE, id=block.id, name=block.name, input=block.input
                        )
            elif isinstance(msg, sdk.UserMessage) and isinstance(msg.content, list):
                for block in msg.content:
                    if isinstance(block, sdk.ToolResultBlock):
                        self.records.emit(
                            protocol.TOOL_RESULT,
                            tool_use_id=block.tool_use_id,
                            content=_text_of(block.content),
                            is_error=bool(block.is_error),
                        )
            elif isinstance(msg, sdk.SystemMessage) and msg.subtype == "init":
                self.totals.session_id = msg.data.get("session_id") or self.totals.session_id
            elif isinstance(msg, sdk.ResultMessage):
                status = self._on_result(msg, started)
        return status

    def _error(self, message: str, kind: str, fatal: bool) -> None:
        """An error event, once per turn: the CLI repeats an API error in the turn's result."""
        if message in self._turn_errors and not fatal:
            return
        self._turn_errors.add(message)
        self.records.emit(protocol.ERROR, message=message, kind=kind, fatal=fatal)

    def _on_result(self, msg: Any, started: float) -> str:
        t = self.totals
        t.session_id = msg.session_id or t.session_id
        t.turns += msg.num_turns or 0
        t.add_usage(msg.usage)
        if msg.total_cost_usd is not None:
            # The CLI reports the session's running total, not the turn's share.
            t.cost_usd = max(t.cost_usd or 0.0, msg.total_cost_usd)
        if msg.terminal_reason in ("aborted_streaming", "aborted_tools"):
            status = "stopped"
        else:
            status = "failed" if msg.is_error else "succeeded"
        if msg.is_error and status == "failed":
            fatal = msg.subtype in FATAL_RESULT_SUBTYPES
            t.fatal |= fatal
            detail = "; ".join(msg.errors or []) or msg.result or msg.subtype
            self._error(detail, msg.subtype, fatal)
        self.records.emit(
            protocol.TURN_END,
            status=status,
            cost_usd=msg.total_cost_usd,
            turns=msg.num_turns,
            duration_s=round(time.monotonic() - started, 3),
        )
        return status


# -- Modes ---------------------------------------------------------------------------------
def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """A thread: stdin lines into the loop's queue; None on EOF (a closed stdin ends cleanly).

    It reads the file descriptor itself: a daemon thread blocked inside `sys.stdin` holds
    the buffer's lock, and the interpreter aborts at exit when the run ends first.
    """

    def put(item: str | None) -> None:
        # RuntimeError: the loop closed (the run ended) while this thread still read.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    pending = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(0, 1 << 16):  # fd 0 even when sys.stdin is None
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:  # bytes: a bad encoding is a bad line, not a dead reader
                put(line.decode("utf-8", "replace") + "\n")
    if pending:
        put(pending.decode("utf-8", "replace"))
    put(None)


async def _run_turn(agent: Agent, text: str, next_input: Any) -> tuple[str, list[dict], bool]:
    """Run a turn while still reading stdin: `interrupt` interrupts it, `user` lines queue up.

    Returns (status, queued user messages, stdin closed).
    """
    task = asyncio.ensure_future(agent.turn(text))
    queued: list[dict] = []
    closed = False
    while not task.done():
        if closed:
            await asyncio.wait({task})
            break
        getter = asyncio.ensure_future(next_input())
        await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter
            continue
        msg = getter.result()
        if msg is None:
            closed = True
        elif msg["type"] == protocol.IN_INTERRUPT:
            try:
                await agent.client.interrupt()
            except Exception as exc:  # the turn goes on; say so rather than die
                agent.records.emit(protocol.ERROR, message=f"interrupt failed: {exc}", fatal=False)
        else:
            queued.append(msg)
    return task.result(), queued, closed


async def interactive(agent: Agent, env: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_stdin_reader, args=(loop, lines), daemon=True).start()

    async def next_input() -> dict[str, Any] | None:
        """The next valid input message, or None once stdin is closed."""
        while True:
            line = await lines.get()
            if line is None:
                return None
            if not line.strip():
                continue
            try:
                msg = protocol.decode_input(line)
            except protocol.ProtocolError as exc:
                agent.records.emit(protocol.ERROR, message=f"bad input line: {exc}", fatal=False)
                continue
            agent.records.record_input(msg)
            return None if msg["type"] == protocol.IN_END else msg

    _ready(agent, "interactive")  # lines sent from now on queue up while the CLI connects
    async with agent.connected(env):
        pending: list[dict] = []
        closed = False
        statuses: list[str] = []
        while not agent.totals.fatal:
            msg = pending.pop(0) if pending else (None if closed else await next_input())
            if msg is None:
                break
            if msg["type"] == protocol.IN_INTERRUPT:
                continue  # nothing to interrupt between turns
            agent.records.emit(protocol.USER_TEXT, text=msg["text"])  # a replay shows it
            status, queued, now_closed = await _run_turn(agent, msg["text"], next_input)
            statuses.append(status)
            pending += queued
            closed |= now_closed
        last = statuses[-1] if statuses else "succeeded"
        agent.totals.status = "failed" if agent.totals.fatal else last
        if agent.totals.status == "stopped":  # an interrupted last turn is a normal end
            agent.totals.status = "succeeded"


def _ready(agent: Agent, mode: str) -> None:
    """`ready`: input is accepted. No session exists yet (its id comes with `result`)."""
    agent.records.emit(
        protocol.READY, run_id=agent.settings.run_id, model=agent.settings.model, mode=mode
    )


async def one_shot(agent: Agent, env: dict[str, str]) -> None:
    """The task is the first `user` line on stdin (`protocol.task_input`); later lines wait."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_stdin_reader, args=(loop, lines), daemon=True).start()
    _ready(agent, "one-shot")
    line = await lines.get()
    try:
        msg = protocol.decode_input(line or "")
    except protocol.ProtocolError as exc:
        raise SetupError(f"one-shot: the first stdin line must be the task ({exc})") from None
    if msg["type"] != protocol.IN_USER:
        raise SetupError("one-shot: the first stdin line must be the task, a 'user' message")
    agent.records.record_input(msg)
    async with agent.connected(env):
        agent.records.emit(protocol.USER_TEXT, text=msg["text"])
        status = await agent.turn(msg["text"])
        agent.totals.status = "failed" if agent.totals.fatal else status


async def _main_async(agent: Agent, env: dict[str, str]) -> None:
    """Runs a mode; SIGTERM/SIGINT end the current turn gracefully, then the run."""
    loop = asyncio.get_running_loop()
    mode = one_shot if agent.one_shot else interactive
    main = asyncio.ensure_future(mode(agent, env))
    stopping = asyncio.Event()

    def on_signal() -> None:
        if not stopping.is_set():
            stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    stopper = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopping.is_set() and not main.done():
        agent.totals.status = "stopped"
        if agent.client is not None and agent.in_turn:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent.client.interrupt(), STOP_GRACE_S)
        deadline = time.monotonic() + STOP_GRACE_S
        while agent.in_turn and not main.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        main.cancel()  # between turns there is nothing left to wait for
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await main
        agent.totals.status = "stopped"
        return
    stopper.cancel()
    main.result()  # re-raises SDK errors to main()


def _protocol_stdout() -> IO[str]:
    """Keep fd 1 for events only: anything else that writes to stdout lands on stderr."""
    fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        protocol.ONE_SHOT_FLAG, action="store_true",
        help="run one task (the first `user` line on stdin) to completion, then exit",
    )
    args = parser.parse_args(argv)
    out = _protocol_stdout()
    env = dict(os.environ)
    try:
        settings = Settings.from_env(env)
        records = Records(settings, out)
    except (SetupError, OSError) as exc:  # nowhere to record: stdout only
        protocol.Emitter(out).emit(protocol.ERROR, message=str(exc), fatal=True)
        return EXIT_SETUP
    agent = Agent(settings, records, one_shot=args.one_shot)
    records.write_result(agent.totals, final=False)
    try:
        extra = cli_env(settings, env)
        os.environ.update(extra)  # the agent's own tools (Bash) inherit them through the CLI
        asyncio.run(_main_async(agent, extra))
    except Exception as exc:  # the SDK's errors, incl. the one raised after an error result
        message = str(exc).strip() or type(exc).__name__
        records.emit(protocol.ERROR, message=message, kind=type(exc).__name__, fatal=True)
        agent.totals.status = "failed"
    t = agent.totals
    if t.status == "running":
        t.status = "failed"
    records.emit(
        protocol.RESULT,
        status=t.status,
        cost_usd=t.cost_usd,
        usage=t.usage,
        turns=t.turns,
        duration_s=round(time.monotonic() - t.started, 3),
        session_id=t.session_id,
    )
    records.write_result(t, final=True)
    records.close()
    return {"succeeded": EXIT_OK, "stopped": EXIT_STOPPED}.get(t.status, EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
