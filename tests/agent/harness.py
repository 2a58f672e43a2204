"""Helpers to run the real agent/agent.py (and the real bundled Claude CLI) as a subprocess."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ml_agent.contracts import AGENT_DIR, protocol
from tests.fakes.anthropic import FakeAnthropic

AGENT = AGENT_DIR / "agent.py"
RUN_ID = "20261126-0315-a1b2c3"
REAL_KEY = "sk-ant-real-key-for-tests"


class AgentProcess:
    """One running agent: protocol events from stdout, inputs to stdin, stderr kept."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw_lines.append(line)
            event = protocol.decode_event(line)
            if event is not None:
                self.events.append(event)
                self._queue.put(event)
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def send(self, type_: str, **payload: Any) -> None:
        self.send_raw(protocol.encode_input(type_, **payload))

    def send_raw(self, line: str | bytes) -> None:
        assert self.proc.stdin is not None
        if isinstance(line, bytes):  # e.g. bytes that are not UTF-8
            self.proc.stdin.buffer.write(line)
        else:
            self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def next_event(self, timeout: float = 60) -> dict[str, Any] | None:
        """The next event, or None once stdout is closed."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event in {timeout}s; {self.stderr[-2000:]}") from None

    def wait_for(self, type_: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            assert event is not None, f"stdout closed before {type_!r}; {self.stderr[-2000:]}"
            if event["type"] == type_:
                return event

    def wait(self, timeout: float = 60) -> int:
        """The exit code, once stdout and stderr are read to the end."""
        rc = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(10)
        return rc

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Teardown: kill if still running, then close every pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for thread in self._threads:
            thread.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@dataclasses.dataclass
class Gateway:
    """What ANTHROPIC_BASE_URL points at, the token the agent holds, and the fake behind."""

    url: str
    token: str
    fake: FakeAnthropic
    through_proxy: bool
    usage: Any = None  # the proxy's usage sink, when there is a proxy


def agent_env(tmp_path: Path, gateway: Gateway, **extra: str) -> dict[str, str]:
    """The launcher -> agent environment, written out by hand, plus a private HOME/TMPDIR."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_API_KEY": gateway.token,
        "ML_AGENT_RUN_ID": RUN_ID,
        "ML_AGENT_RUN_DIR": str(tmp_path / "data" / "runs" / RUN_ID),
        "ML_AGENT_MODEL": "claude-sonnet-4-5",
        "ML_AGENT_MAX_TURNS": "10",
        "ML_AGENT_ALLOWED_TOOLS": "",
        "ML_AGENT_PERMISSION_MODE": "bypassPermissions",
        "ML_AGENT_BUDGET_USD": "5",
        "ML_AGENT_SYSTEM_PROMPT": "",
        "ML_AGENT_HF_NAMESPACE": "my-org",
        "ML_AGENT_CONFIG_HASH": "cafe0123",
        # Errors must surface at once, not after the CLI's ~35 s of retries.
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    env.update(extra)
    return env


def read_records(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """result.json and the transcript's lines (events and input records)."""
    result = json.loads((run_dir / protocol.RESULT_FILE).read_text())
    lines = (run_dir / protocol.TRANSCRIPT_FILE).read_text().splitlines()
    return result, [json.loads(line) for line in lines]
