"""`ml-agent up` on a terminal: the chat loop, /detach, attach, and Ctrl-C stopping the run.

A stand-in agent (echo, no model) keeps this fast; the real agent runs in tests/test_e2e.py.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ml_agent.backends.local import LocalBackend, image
from tests.local.helpers import AGENT, processes_of, seeded_plan

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).with_name("ml-agent"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "CLAUDE", "MODAL_"))}
    yield {**base, "ML_AGENT_HOME": str(home), "ANTHROPIC_API_KEY": "sk-ant-host",
           "COLUMNS": "100", "TERM": "xterm"}
    backend = LocalBackend(home)
    for record in backend.ps():  # a failed test leaves nothing running
        backend.stop(record.run_id)


def _up_args(home: Path) -> list[str]:
    plan = seeded_plan(home, AGENT)  # seeds the image cache for a no-pip image
    src = home / "test_agent.py"
    assert image.cached_venv(plan, home)
    return [
        CLI, "up",
        "--set", f"image.layers=[{{file: {{src: {src}, dest: /agent/test_agent.py}}}}]",
        "--set", "agent.entrypoint=/agent/test_agent.py",
    ]


def test_chat_on_a_terminal_then_ctrl_c_stops_the_run(env, terminal):
    home = Path(env["ML_AGENT_HOME"])
    term = terminal(_up_args(home), env, ROOT)
    term.expect("agent ready")
    term.expect("you>")
    term.send("hello there\r")
    term.expect("echo: hello there")
    term.expect("you>")
    run_id = next(p.name for p in (home / "runs").iterdir())
    term.send("\x03")  # Ctrl-C
    term.expect(f"stopping run {run_id}: the sandbox, then a final metric sync")
    term.expect(f"run {run_id} stopped")
    assert term.close() == 130
    assert processes_of(run_id) == []


def test_detach_from_the_prompt_then_attach_replays_once(env, terminal):
    home = Path(env["ML_AGENT_HOME"])
    term = terminal(_up_args(home), env, ROOT)
    term.expect("you>")
    term.send("first\r")
    term.expect("echo: first")
    term.expect("you>")
    term.send("/detach\r")
    term.expect("ml-agent attach")
    assert term.close() == 0
    run_id = next(p.name for p in (home / "runs").iterdir())
    assert processes_of(run_id)  # still running

    again = terminal([CLI, "attach", run_id[:-2]], env, ROOT)  # a unique prefix is enough
    again.expect("echo: first")
    again.expect("you>")
    again.send("second\r")
    again.expect("echo: second")
    again.expect("you>")
    assert again.seen.count("echo: first") == 1
    again.send("\x04")  # Ctrl-D: the conversation is over
    again.expect(f"run {run_id} stopped")
    assert again.close() == 0
    deadline = time.monotonic() + 10
    while processes_of(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(run_id) == []
