"""Rendering the agent's protocol events with Rich, and the attached conversation loop.

Sandbox output is untrusted text: every string is markup-escaped and the run token is
redacted before it reaches the terminal.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from ml_agent.contracts import protocol

if TYPE_CHECKING:
    from rich.console import Console

MAX_RESULT_LINES = 8
MAX_RESULT_CHARS = 800
MAX_INPUT_CHARS = 120
REDACTED = "<run token>"
#: Typed at any moment: leave the run going and return.
DETACH_COMMAND = "/detach"
#: What the keys do, as `up` and `attach` print it when a conversation starts.
KEYS_HELP = "Ctrl-D ends the conversation · /detach leaves the run going · Ctrl-C stops it"
KEYS_HELP_TASK = "/detach (or Ctrl-D) leaves the run going · Ctrl-C stops it"


class Renderer:
    """Prints events; `secrets` are replaced by `<run token>` wherever they appear."""

    def __init__(self, console: Console, secrets: list[str] | tuple[str, ...] = ()) -> None:
        self.console = console
        self.secrets = [s for s in secrets if s]
        #: texts this client sent and has echoed already: their `user_text` is not repeated
        self.sent: list[str] = []
        #: a one-shot run: its turn's end is the run's end, said once by the summary line
        self.one_shot = False

    def clean(self, value: object) -> str:
        from rich.markup import escape

        text = value if isinstance(value, str) else json.dumps(value, default=str)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        # Escape markup, and drop terminal control sequences an agent could print.
        text = "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())
        return escape(text)

    def print(self, markup: str) -> None:
        self.console.print(markup, highlight=False, soft_wrap=True)

    def render(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == protocol.READY:
            model = self.clean(event.get("model") or "")
            self.print(f"[dim]agent ready · {model} · run {self.clean(event.get('run_id', ''))}[/]")
        elif kind == protocol.USER_TEXT:
            text = str(event.get("text", ""))
            if self.sent and self.sent[0] == text:
                self.sent.pop(0)
            else:
                self.print(f"[bold]you>[/] {self.clean(text)}")
        elif kind == protocol.ASSISTANT_TEXT:
            self.print(self.clean(event.get("text", "")))
        elif kind == protocol.TOOL_USE:
            self.print(f"[cyan]▸ {self.clean(event.get('name', '?'))}[/] "
                       f"[dim]{self.clean(_summary(event.get('input')))}[/]")
        elif kind == protocol.TOOL_RESULT:
            style = "red" if event.get("is_error") else "dim"
            self.print(f"[{style}]{self.clean(_truncate(_content_text(event.get('content'))))}[/]")
        elif kind == protocol.TURN_END:
            if self.one_shot:
                return
            self.print(f"[dim]── {self.clean(event.get('status', 'done'))}{_cost(event)}[/]")
        # RESULT: nothing here; the caller prints `summary` once the run's end is done
        elif kind == protocol.ERROR:
            self.print(f"[bold red]error:[/] {self.clean(event.get('message', ''))}")

    def summary(self, event: dict[str, Any], run_id: str = "", by_user: bool = False,
                metered: float | None = None) -> None:
        """The one line that ends a run: status, cost (`metered`: the proxy's, as `ps` shows
        it; the agent's figure labelled), turns, the run's duration."""
        status = str(event.get("status", ""))
        color = "green" if status == "succeeded" else "red"
        said = "finished by the user" if by_user and status == "succeeded" else status
        run = f"run {self.clean(run_id)} " if run_id else "run "
        self.print(f"[bold {color}]{run}{self.clean(said)}[/][dim]{_cost(event, metered)}[/]")


def _summary(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
            if isinstance(value.get(key), str):
                text = value[key]
                break
        else:
            text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_INPUT_CHARS else text[: MAX_INPUT_CHARS - 1] + "…"


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        parts = [c.get("text", "") if isinstance(c, dict) else str(c) for c in content]
        return "\n".join(p for p in parts if p)
    return "" if content is None else str(content)


def _truncate(text: str) -> str:
    lines = text.splitlines()
    out = "\n".join(lines[:MAX_RESULT_LINES])
    if len(out) > MAX_RESULT_CHARS:
        out = out[:MAX_RESULT_CHARS]
    hidden = len(text) - len(out)
    return out + (f"\n… ({hidden} more characters)" if hidden > 0 else "")


def usd(amount: float) -> str:
    return f"${amount:.{2 if amount >= 0.01 else 4}f}"


def cost_text(metered: float | None, agent: float | None, *, unmetered: str = "-") -> str:
    """A run's cost as `ps` and the CLI show it: the proxy's metering (DESIGN.md "Cost of a
    run"); the agent's own figure beside it, labelled, when it says something else (an agent
    can print any number)."""
    shown = unmetered if metered is None else usd(metered)
    if agent is not None and (metered is None or usd(agent) != shown):
        said = f"agent says {usd(agent)}"
        shown = f"{shown} ({said})" if shown else said
    return shown


def _cost(event: dict[str, Any], metered: float | None = None) -> str:
    """Cost, turns, duration of a turn or run; a turn's cost is only the agent's figure."""
    parts = []
    agent = event.get("cost_usd")
    cost = cost_text(metered, agent if isinstance(agent, int | float) else None, unmetered="")
    if cost:
        parts.append(cost)
    if isinstance(event.get("turns"), int):
        parts.append(f"{event['turns']} turns")
    if isinstance(event.get("duration_s"), int | float):
        parts.append(f"{event['duration_s']:.1f} s")
    return (" · " + " · ".join(parts)) if parts else ""


def turn_over(event: dict[str, Any]) -> bool:
    """The agent is waiting for the user again (or will never answer)."""
    kind = event["type"]
    return (
        kind in (protocol.TURN_END, protocol.RESULT)
        or (kind == protocol.ERROR and bool(event.get("fatal")))
    )


class Keyboard:
    """Lines typed on the terminal, read without blocking (select on fd 0), so that the event
    stream keeps flowing while nothing is typed and a command is seen at any moment.

    The terminal stays in its cooked mode: it echoes and edits the line; Ctrl-D on an empty
    line is the end of input, Ctrl-C a SIGINT (KeyboardInterrupt in the main thread).
    """

    EOF = None

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._buffer = b""

    def lines(self, timeout: float) -> list[str | None]:
        """The lines typed within `timeout` seconds; `None` stands for Ctrl-D (end of input)."""
        import os
        import select

        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.fd, 4096)
        if not chunk:
            return [self.EOF]
        *done, self._buffer = (self._buffer + chunk).split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in done]


def is_interactive() -> bool:
    return sys.stdin.isatty()
