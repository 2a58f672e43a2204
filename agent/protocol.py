"""The contracts shared by the launcher and the agent: env table, JSON-lines protocol, result.json.

This module runs on both sides of the sandbox wall, so it depends on the standard library
only. The agent imports it as a sibling (`/agent/protocol.py`); the launcher loads the same
file through `ml_agent.contracts`. Change a name here and both sides change with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

# -- Launcher -> agent environment ---------------------------------------------------------
# The only way settings reach agent/agent.py. Name -> what it holds.
ENV: Final[Mapping[str, str]] = {
    "ANTHROPIC_BASE_URL": "the proxy's URL; the agent never talks to Anthropic directly",
    "ANTHROPIC_API_KEY": "the run token (not the Anthropic key); valid for this run only",
    "ML_AGENT_RUN_ID": "the run id, e.g. 20261126-0315-a1b2c3",
    "ML_AGENT_RUN_DIR": "the run folder on the data volume: <data mount>/runs/<run id>",
    "ML_AGENT_MODEL": "the Claude model the agent uses",
    "ML_AGENT_MAX_TURNS": "the most agent turns per task (an integer)",
    "ML_AGENT_ALLOWED_TOOLS": "comma-separated tool names the agent may use; empty = all",
    "ML_AGENT_PERMISSION_MODE": "the Claude CLI permission mode, e.g. bypassPermissions",
    "ML_AGENT_BUDGET_USD": "the run's budget in USD; empty = none (the proxy enforces it)",
    "ML_AGENT_SYSTEM_PROMPT": "text appended to the agent's system prompt; may be empty",
    "ML_AGENT_HF_NAMESPACE": "the HF user or org the syncer publishes to; may be empty",
    "ML_AGENT_CONFIG_HASH": "the Plan's content hash, recorded in result.json; may be empty",
    "CLAUDE_CONFIG_DIR": "inside the run folder, so a conversation can be resumed",
    "ML_AGENT_RESUME_SESSION": "the Claude session id a resumed run continues; empty = a new one",
    "ML_AGENT_TRACKIO_PROJECT": "the trackio project to log to (a sweep's id); empty = the "
    "agent names it",
    "ML_AGENT_TRACKIO_RUN_NAME": "the trackio run name (a sweep run's label); empty = the agent "
    "names it",
}

#: A Claude session id (the CLI's own: a UUID). Both sides check it before it is passed on.
SESSION_ID_CHARS: Final = frozenset("0123456789abcdef-")

# -- The agent's command ------------------------------------------------------------------
# `python <entrypoint>` runs interactively; `python <entrypoint> --one-shot` runs one task to
# completion, the task being the first `user` line on stdin. The task is never an argv word:
# Linux caps one at 128 KiB and modal's Sandbox.create caps all of them at 64 KiB
# (ARG_MAX_BYTES), while stdin takes a task of any length.
ONE_SHOT_FLAG: Final = "--one-shot"


def agent_command(entrypoint: str, *, one_shot: bool) -> list[str]:
    """The sandbox's own command (both backends): `python <entrypoint> [--one-shot]`."""
    return ["python", entrypoint, *([ONE_SHOT_FLAG] if one_shot else [])]


def task_input(task: str) -> str:
    """What a launcher writes to a one-shot agent's stdin: the task as one `user` line."""
    return encode_input(IN_USER, text=task)


# -- Agent protocol (JSON lines on stdin/stdout) -------------------------------------------
# In (client -> agent).
IN_USER: Final = "user"  # {"type": "user", "text": ...}
IN_INTERRUPT: Final = "interrupt"  # {"type": "interrupt"}
# The user ended the conversation (Ctrl-D): like a closed stdin, the agent finishes the
# current turn and the run ends normally.
IN_END: Final = "end"  # {"type": "end"}
IN_TYPES: Final = frozenset({IN_USER, IN_INTERRUPT, IN_END})

# Out (agent -> client): every event has type, seq (monotonic from 1) and ts (unix seconds).
READY: Final = "ready"  # {run_id, model, mode: interactive|one-shot}; sent before connecting
USER_TEXT: Final = "user_text"  # {text}: the user's message (or task) as a turn starts on it
ASSISTANT_TEXT: Final = "assistant_text"  # {text}
TOOL_USE: Final = "tool_use"  # {id, name, input}
TOOL_RESULT: Final = "tool_result"  # {tool_use_id, content, is_error}
TURN_END: Final = "turn_end"  # {status, cost_usd (running total), turns, duration_s}
RESULT: Final = "result"  # {status, cost_usd, usage, turns, duration_s, session_id}
ERROR: Final = "error"  # {message, fatal, kind?}
OUT_TYPES: Final = frozenset(
    {READY, USER_TEXT, ASSISTANT_TEXT, TOOL_USE, TOOL_RESULT, TURN_END, RESULT, ERROR}
)
#: The largest event line a host-side reader keeps (bytes, newline excluded); a longer line
#: is cut (logs) or skipped (events), with a marker, so that an agent printing without end
#: cannot grow the launcher's memory. The largest real events: a tool result is cut at
#: 20,000 characters (agent.py, <= 120 KB as JSON even all \u-escaped); assistant text and
#: tool input are one answer, at most 64k output tokens (< 1 MB as JSON, escaped); a task
#: echoed in user_text is what the user typed.
MAX_EVENT_BYTES: Final = 2 * 1024 * 1024

# Run statuses, shared by result.json, the run registry and `ps`.
STATUSES: Final = ("starting", "running", "succeeded", "failed", "stopped", "timeout")

# -- result.json (in the run folder) -------------------------------------------------------
RESULT_FILE: Final = "result.json"
TRANSCRIPT_FILE: Final = "transcript.jsonl"
RESULT_KEYS: Final = (
    "run_id",
    "status",
    "started_at",
    "ended_at",
    "cost_usd",  # the run's cost: the proxy's metering, filled in by the launcher at the end
    "agent_cost_usd",  # what the agent says it spent (the SDK's total_cost_usd): a 2nd opinion
    "usage",  # the agent's view of token usage
    "proxy_usage",  # the proxy's metered view, filled in by the launcher when it has it
    "turns",
    "session_id",
    "config_hash",
    "image_id",
    "pip_freeze",
)
#: Added by the launcher (not the agent) when it knows why a run failed, e.g. the upstream
#: refused the proxy's key: which secret file or variable holds it (status is "failed").
RESULT_ERROR_KEY: Final = "error"


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


class LineSink(Protocol):
    """Where the Emitter writes: a text stream, or anything with its write and flush."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Emitter:
    """Writes numbered events as JSON lines; one per run so that `seq` never repeats."""

    def __init__(self, stream: LineSink, *, start: int = 0) -> None:
        self._stream = stream
        self.seq = start

    def emit(self, type_: str, **payload: Any) -> dict[str, Any]:
        if type_ not in OUT_TYPES:
            raise ProtocolError(f"unknown event type {type_!r}")
        self.seq += 1
        event = {"type": type_, "seq": self.seq, "ts": round(time.time(), 3), **payload}
        self._stream.write(json.dumps(event, default=str) + "\n")
        self._stream.flush()
        return event


def encode_input(type_: str, **payload: Any) -> str:
    """One input line (with its newline) for the agent's stdin."""
    if type_ not in IN_TYPES:
        raise ProtocolError(f"unknown input type {type_!r}")
    return json.dumps({"type": type_, **payload}) + "\n"


def decode_input(line: str) -> dict[str, Any]:
    """Parse one stdin line; raises ProtocolError on anything but a known message."""
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg}") from None
    if not isinstance(msg, dict) or msg.get("type") not in IN_TYPES:
        raise ProtocolError("expected an object with type 'user', 'interrupt' or 'end'")
    if msg["type"] == IN_USER and not isinstance(msg.get("text"), str):
        raise ProtocolError("a 'user' message needs a string 'text'")
    return msg


def decode_event(line: str) -> dict[str, Any] | None:
    """Parse one stdout line into an event, or None for a line that is not one.

    Sandbox output is untrusted text: anything that is not a well-formed event is skipped
    by the caller (and may be shown as plain log output).
    """
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    if (
        not isinstance(event, dict)
        or event.get("type") not in OUT_TYPES
        or not isinstance(event.get("seq"), int)
    ):
        return None
    return event


def dedupe(events: Iterator[dict[str, Any]], *, after: int = 0) -> Iterator[dict[str, Any]]:
    """Yield events whose seq is above every seq seen so far (re-attach de-duplication)."""
    last = after
    for event in events:
        if event["seq"] > last:
            last = event["seq"]
            yield event
