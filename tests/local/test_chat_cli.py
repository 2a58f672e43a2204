"""`ml-agent up` on a terminal: the chat loop, /detach, attach, and Ctrl-C stopping the run.

A stand-in agent (echo, no model) keeps this fast; the real agent runs in tests/test_e2e.py.
"""

from __future__ import annotations

import os
import re
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


def _plain(seen: str) -> str:
    """What the terminal showed, without colours and cursor moves."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen)


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
    assert _plain(again.seen).count("you> first") == 1  # the replay shows the user's side
    assert _plain(again.seen).count("you> second") == 1  # echoed once, not again
    again.send("\x04")  # Ctrl-D: the conversation is over
    again.expect(f"run {run_id} finished by the user")
    assert "stopped" not in again.seen[again.pos:]
    assert again.close() == 0
    deadline = time.monotonic() + 10
    while processes_of(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(run_id) == []


def test_detach_during_a_long_tool_call_with_a_spinner_meanwhile(env, terminal):
    home = Path(env["ML_AGENT_HOME"])
    term = terminal(_up_args(home), env, ROOT)
    term.expect("you>")
    term.send("slow\r")  # the stand-in's tool call lasts a minute
    term.expect("Bash")
    term.expect("Bash running… 1 s")  # the spinner counts the seconds
    term.send("/detach\r")
    term.expect("detached; `ml-agent attach", timeout=10)  # not after the tool call
    assert term.close(timeout=10) == 0
    run_id = next(p.name for p in (home / "runs").iterdir())
    assert processes_of(run_id)  # still running


def test_attach_to_a_task_run_detaches_and_ctrl_c_stops_it(env, terminal):
    home = Path(env["ML_AGENT_HOME"])
    term = terminal([*_up_args(home), "--task", "slow", "--detach"], env, ROOT)
    assert term.close() == 0
    run_id = next(p.name for p in (home / "runs").iterdir())

    again = terminal([CLI, "attach", run_id], env, ROOT)
    again.expect("Bash")
    again.send("/detach\r")
    again.expect("detached", timeout=10)
    assert again.close(timeout=10) == 0
    assert processes_of(run_id)

    third = terminal([CLI, "attach", run_id], env, ROOT)
    third.expect("Bash")
    third.send("\x04")  # Ctrl-D on a --task run leaves it going too
    third.expect("detached", timeout=10)
    assert third.close(timeout=10) == 0

    last = terminal([CLI, "attach", run_id], env, ROOT)
    last.expect("Bash")
    last.send("\x03")  # Ctrl-C stops it, mid tool call
    last.expect(f"run {run_id} stopped", timeout=30)
    assert last.close() == 130


def test_a_task_run_ends_with_one_summary_line_and_where_its_results_are(env, terminal):
    home = Path(env["ML_AGENT_HOME"])
    term = terminal([*_up_args(home), "--task", "hello"], env, ROOT)
    term.expect("did: hello")
    term.expect("outputs:")  # the last line: everything before it is on the screen
    assert term.close() == 0
    run_id = next(p.name for p in (home / "runs").iterdir())
    folder = home / "volumes" / "sandbox-data" / "runs" / run_id
    out = " ".join(_plain(term.seen).split())  # the terminal may wrap long lines
    # The stand-in agent calls no model: the proxy metered $0 (or nothing yet), and the
    # agent's own figure is labelled.
    said = (rf"run {run_id} succeeded · (\$0\.0000 \()?agent says \$0\.25\)? · 1 turns · "
            r"0\.2 s")
    assert len(re.findall(said, out)) == 1, out
    assert out.count("succeeded") == 1  # one summary line: no second one, for the turn or run
    assert "──" not in out  # the turn's end is not a second summary
    assert f"results: {folder}/result.json" in out.replace(" ", "").replace("results:", "results: ")
