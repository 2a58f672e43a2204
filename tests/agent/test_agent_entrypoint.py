"""agent/agent.py end to end: the real bundled Claude CLI against the scripted model."""

from __future__ import annotations

import ast
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from ml_agent.contracts import CLAUDE_DIR, protocol
from tests.agent.harness import AGENT, REAL_KEY, RUN_ID, agent_env, read_records
from tests.fakes.anthropic import error, main_loop, text, tool_use


def assert_well_ordered(events: list[dict], raw_lines: list[str]) -> None:
    """Every stdout line is an event; seq counts up from 1 without gaps."""
    assert len(raw_lines) == len(events), [line for line in raw_lines if line.strip()][:5]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == protocol.READY
    assert events[-1]["type"] == protocol.RESULT


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


@pytest.mark.slow
def test_one_shot_runs_the_tool_and_writes_the_records(tmp_path, gateway, start_agent):
    made = tmp_path / "made.txt"
    gateway.fake.script(
        tool_use("Bash", {"command": f"echo trained > {made}"}, match=main_loop),
        text("The file is written.", match=main_loop),
    )
    env = agent_env(tmp_path, gateway)
    shutil.copytree(CLAUDE_DIR, tmp_path / "app" / ".claude")  # the workdir, as in /app
    agent = start_agent(env, "--one-shot")
    agent.send("user", text="write the file")
    assert agent.wait(90) == 0, agent.stderr

    assert made.read_text() == "trained\n"  # the tool really ran
    events = agent.events
    assert_well_ordered(events, agent.raw_lines)
    assert types(events) == [
        "ready", "user_text", "tool_use", "tool_result", "assistant_text", "turn_end", "result"
    ]
    assert events[1]["text"] == "write the file"  # the task, so that a replay shows it
    tool, result_event = events[2], events[3]
    assert tool["name"] == "Bash" and str(made) in tool["input"]["command"]
    assert result_event["tool_use_id"] == tool["id"] and result_event["is_error"] is False
    assert events[4]["text"] == "The file is written."
    final = events[-1]
    assert final["status"] == "succeeded" and final["turns"] == 2
    assert final["usage"]["input_tokens"] == 200 and final["cost_usd"] > 0

    run_dir = Path(env["ML_AGENT_RUN_DIR"])
    result, transcript = read_records(run_dir)
    assert tuple(result) == protocol.RESULT_KEYS
    assert result["run_id"] == RUN_ID and result["status"] == "succeeded"
    assert result["session_id"] == final["session_id"] and result["turns"] == 2
    assert result["config_hash"] == "cafe0123" and result["proxy_usage"] is None
    # The run's cost is the proxy's, filled in by the launcher; the agent's is labelled.
    assert result["cost_usd"] is None and result["agent_cost_usd"] == final["cost_usd"]
    assert result["started_at"] <= result["ended_at"]
    assert any(line.startswith("claude-agent-sdk==") for line in result["pip_freeze"])
    assert [line for line in transcript if "seq" in line] == events
    inputs = [line["input"] for line in transcript if line["type"] == "input"]
    assert inputs == [{"type": "user", "text": "write the file"}]
    # The run token is written nowhere in the run folder (which outlives the run).
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and gateway.token.encode()
              in p.read_bytes()]
    assert leaked == []
    # The session lives in the run folder (CLAUDE_CONFIG_DIR), so it can be resumed.
    sessions = list((run_dir / "claude" / "projects").glob(f"*/{final['session_id']}.jsonl"))
    assert sessions, list((run_dir / "claude").rglob("*"))[:20]
    # The upstream saw the agent's requests with the gateway's credentials only.
    calls = gateway.fake.message_calls()
    assert len(calls) == 2 and all(c.api_key == REAL_KEY for c in calls)
    assert calls[0].json["model"] == "claude-sonnet-4-5"
    # The workspace reached the model: CLAUDE.md, both skills, the mode and the run folder.
    first = json.dumps(calls[0].json)
    for needle in ("You are an ML engineer", "trackio 0.43", "transformers 5.x", "one-shot mode",
                   env["ML_AGENT_RUN_DIR"]):
        assert needle in first, needle
    assert not any(gateway.token in json.dumps(c.headers) for c in calls)
    if gateway.through_proxy:  # the proxy's metering agrees with the agent's view
        metered = gateway.usage.get(RUN_ID)
        assert metered["requests"] == 2 and metered["input_tokens"] == 200


@pytest.mark.slow
def test_interactive_conversation_keeps_one_session(tmp_path, gateway, start_agent):
    gateway.fake.script(
        tool_use("Bash", {"command": "echo $((6 * 7))"}, match=main_loop),
        text("It is 42.", match=main_loop),
        text("word " * 100, n_text_deltas=100, event_gap=0.1, match=main_loop),  # ~10 s
        text("You asked about 6 times 7.", match=main_loop),
    )
    env = agent_env(tmp_path, gateway)
    agent = start_agent(env)
    ready = agent.wait_for("ready")
    assert ready["run_id"] == RUN_ID
    agent.send("user", text="What is 6 * 7? Use the shell.")
    assert agent.wait_for("turn_end")["status"] == "succeeded"
    agent.send_raw(b"not json \xff\n")  # a bad line is reported, the session goes on
    bad = agent.wait_for("error")
    assert bad["fatal"] is False and "not JSON" in bad["message"]

    agent.send("user", text="Talk slowly.")
    deadline = time.monotonic() + 30
    while len(gateway.fake.message_calls()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    agent.send("interrupt")  # ends the turn, not the session
    assert agent.wait_for("turn_end", timeout=8)["status"] == "stopped"

    agent.send("user", text="What did I ask first?")
    assert agent.wait_for("turn_end")["status"] == "succeeded"
    agent.close_stdin()  # a closed stdin ends the session cleanly
    assert agent.wait(60) == 0, agent.stderr

    events = agent.events
    assert_well_ordered(events, agent.raw_lines)
    tool_result = next(e for e in events if e["type"] == "tool_result")
    assert tool_result["content"].strip() == "42"
    texts = [e["text"] for e in events if e["type"] == "assistant_text"]
    assert texts[0] == "It is 42." and texts[-1] == "You asked about 6 times 7."
    final = events[-1]
    assert final["status"] == "succeeded"
    # One client across turns: the last request carries the whole conversation.
    last = json.dumps(gateway.fake.message_calls()[-1].json["messages"])
    assert "What is 6 * 7?" in last and "What did I ask first?" in last
    result, transcript = read_records(Path(env["ML_AGENT_RUN_DIR"]))
    assert result["status"] == "succeeded" and result["session_id"] == final["session_id"]
    inputs = [line["input"] for line in transcript if line["type"] == "input"]
    assert [i.get("text", i["type"]) for i in inputs] == [
        "What is 6 * 7? Use the shell.", "Talk slowly.", "interrupt", "What did I ask first?"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "reply",
    [
        error(500, "api_error", "upstream exploded"),
        error(400, "invalid_request_error", "request rejected: quota policy xyz"),
    ],
    ids=["500", "400"],
)
def test_upstream_error_is_an_error_event_and_a_failure(tmp_path, gateway, start_agent, reply):
    # Every request fails: on a 400 the CLI retries a few times, dropping beta headers.
    gateway.fake.default = reply
    env = agent_env(tmp_path, gateway)
    started = time.monotonic()
    agent = start_agent(env, "--one-shot")
    agent.send("user", text="do something")
    assert agent.wait(60) == 1, agent.raw_lines
    assert time.monotonic() - started < 30  # no retry loop (CLAUDE_CODE_MAX_RETRIES=0)
    events = agent.events
    assert_well_ordered(events, agent.raw_lines)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and reply.error_body["error"]["message"] in errors[0]["message"]
    assert events[-1]["status"] == "failed"
    result, _ = read_records(Path(env["ML_AGENT_RUN_DIR"]))
    assert result["status"] == "failed" and result["ended_at"]


@pytest.mark.slow
def test_an_sdk_exception_is_an_error_event_and_a_failure(tmp_path, gateway, start_agent):
    # The Bash tool's parent is the Claude CLI: killing it makes the SDK raise.
    gateway.fake.script(tool_use("Bash", {"command": "kill -9 $PPID"}, match=main_loop))
    env = agent_env(tmp_path, gateway)
    agent = start_agent(env, "--one-shot")
    agent.send("user", text="crash")
    assert agent.wait(60) == 1
    assert_well_ordered(agent.events, agent.raw_lines)
    errors = [e for e in agent.events if e["type"] == "error"]
    assert [(e["kind"], e["fatal"]) for e in errors] == [("ProcessError", True)]
    assert agent.events[-1]["status"] == "failed"
    result, _ = read_records(Path(env["ML_AGENT_RUN_DIR"]))
    assert result["status"] == "failed"


@pytest.mark.slow
def test_a_bad_token_fails_fast(tmp_path, gateway, start_agent):
    env = agent_env(tmp_path, gateway, ANTHROPIC_API_KEY="mla-run-not-a-valid-token")
    started = time.monotonic()
    agent = start_agent(env)  # interactive: a fatal error ends the session by itself
    agent.send("user", text="hello")
    assert agent.wait(60) == 1, agent.raw_lines
    assert time.monotonic() - started < 30
    events = agent.events
    assert_well_ordered(events, agent.raw_lines)
    fatal = [e for e in events if e["type"] == "error" and e["fatal"]]
    assert fatal and fatal[0]["kind"] == "authentication_failed"
    assert events[-1]["status"] == "failed"
    assert "mla-run-not-a-valid-token" not in "".join(agent.raw_lines) + agent.stderr
    if gateway.through_proxy:
        assert gateway.fake.message_calls() == []  # a bad token costs no upstream call


@pytest.mark.slow
def test_the_budget_stops_the_agent_gracefully(tmp_path, gateway, start_agent):
    gateway.fake.script(
        tool_use("Bash", {"command": "echo step 1"}, match=main_loop),
        tool_use("Bash", {"command": "echo step 2"}, match=main_loop),
    )
    # One fake answer costs $0.0008 at Sonnet prices: the SDK's own budget trips first.
    agent = start_agent(agent_env(tmp_path, gateway, ML_AGENT_BUDGET_USD="0.0001"))
    agent.send("user", text="work")
    agent.send("user", text="and more work")  # never sent upstream: the run is over
    assert agent.wait(60) == 1
    fatal = [e for e in agent.events if e["type"] == "error" and e["fatal"]]
    assert [e["kind"] for e in fatal] == ["error_max_budget_usd"]
    assert agent.events[-1]["status"] == "failed"
    assert len(gateway.fake.message_calls()) == 1


@pytest.mark.slow
def test_sigterm_ends_the_turn_and_flushes_the_records(tmp_path, gateway, start_agent):
    gateway.fake.script(
        tool_use("Bash", {"command": "python3 -c 'import time; time.sleep(600)'"},
                 match=main_loop),
    )
    env = agent_env(tmp_path, gateway)
    agent = start_agent(env)
    agent.send("user", text="train for a long time")
    agent.wait_for("tool_use")
    time.sleep(0.5)  # the tool is running
    agent.terminate()
    # Ended long before the tool would have (600 s), with room for a loaded machine: the
    # CLI's interrupt and the records' flush took over 30 s once with six suites running.
    assert agent.wait(120) == 143
    assert_well_ordered(agent.events, agent.raw_lines)
    assert agent.events[-1]["status"] == "stopped"
    result, transcript = read_records(Path(env["ML_AGENT_RUN_DIR"]))
    assert result["status"] == "stopped" and result["ended_at"]
    assert transcript[-1]["type"] == "result"


@pytest.mark.slow
def test_ready_comes_before_the_cli_connects_and_a_failed_connect_is_fatal(
    tmp_path, gateway, start_agent
):
    # The Claude CLI refuses this permission mode at start: connecting fails after `ready`.
    env = agent_env(tmp_path, gateway, ML_AGENT_PERMISSION_MODE="no-such-mode")
    agent = start_agent(env)  # interactive, stdin left open: only the failure ends it
    ready = agent.wait_for("ready")
    assert "session_id" not in ready  # no session exists yet
    assert agent.wait(60) == 1, agent.stderr
    assert_well_ordered(agent.events, agent.raw_lines)
    assert types(agent.events) == ["ready", "error", "result"]
    error_event = agent.events[1]
    assert error_event["fatal"] is True and error_event["kind"] == "ProcessError"
    assert agent.events[-1]["status"] == "failed"
    assert "'no-such-mode' is invalid" in agent.stderr  # the CLI's own reason, for `logs`
    result, _ = read_records(Path(env["ML_AGENT_RUN_DIR"]))
    assert result["status"] == "failed" and result["ended_at"]
    assert any(line.startswith("claude-agent-sdk==") for line in result["pip_freeze"])
    assert gateway.fake.message_calls() == []


@pytest.mark.slow
def test_input_sent_right_after_ready_waits_for_the_session(tmp_path, gateway, start_agent):
    gateway.fake.script(text("Hello early bird.", match=main_loop))
    env = agent_env(tmp_path, gateway)
    agent = start_agent(env)
    agent.wait_for("ready")
    agent.send("user", text="hi")  # most likely before the CLI is connected: queued
    agent.close_stdin()  # and the end of input, queued behind it
    assert agent.wait(60) == 0, agent.stderr
    assert_well_ordered(agent.events, agent.raw_lines)
    assert types(agent.events) == ["ready", "user_text", "assistant_text", "turn_end", "result"]
    assert agent.events[1]["text"] == "hi"
    assert agent.events[2]["text"] == "Hello early bird."
    final = agent.events[-1]
    assert final["status"] == "succeeded" and final["session_id"]  # the session, at the end
    result, _ = read_records(Path(env["ML_AGENT_RUN_DIR"]))
    assert result["session_id"] == final["session_id"]


@pytest.mark.slow
def test_end_from_the_user_finishes_the_turn_then_the_run(tmp_path, gateway, start_agent):
    # Ctrl-D in the CLI sends `end`: the run ends as succeeded, not stopped
    gateway.fake.script(text("Done here.", match=main_loop))
    env = agent_env(tmp_path, gateway)
    agent = start_agent(env)
    agent.wait_for("ready")
    agent.send("user", text="one thing")
    agent.send("end")  # stdin stays open: the message alone ends the session
    assert agent.wait(60) == 0, agent.stderr
    assert types(agent.events) == ["ready", "user_text", "assistant_text", "turn_end", "result"]
    assert agent.events[-1]["status"] == "succeeded"


@pytest.mark.slow
def test_sigterm_right_after_ready_stops_cleanly(tmp_path, gateway, start_agent):
    env = agent_env(tmp_path, gateway)
    agent = start_agent(env)
    agent.wait_for("ready")
    agent.terminate()  # most likely while the SDK imports or the CLI connects
    assert agent.wait(30) == 143, agent.stderr
    assert_well_ordered(agent.events, agent.raw_lines)
    assert types(agent.events) == ["ready", "result"]
    assert agent.events[-1]["status"] == "stopped"
    result, _ = read_records(Path(env["ML_AGENT_RUN_DIR"]))
    assert result["status"] == "stopped" and result["ended_at"]


def test_missing_settings_are_a_setup_error(tmp_path, start_agent):
    agent = start_agent({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert agent.wait(30) == 2
    assert types(agent.events) == ["error"]
    assert agent.events[0]["fatal"] is True
    assert "ANTHROPIC_BASE_URL is not set" in agent.events[0]["message"]
    assert len(agent.raw_lines) == 1


def test_the_agent_reads_exactly_the_env_table():
    """Launcher and agent agree: Settings.from_env reads every name of protocol.ENV, no other."""
    tree = ast.parse(AGENT.read_text())
    from_env = next(
        node for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "from_env"
    )
    names = {
        node.value for node in ast.walk(from_env)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value)
    }
    assert names == set(protocol.ENV)


@pytest.mark.slow
def test_one_shot_takes_its_task_from_the_first_stdin_line_only(tmp_path, gateway, start_agent):
    env = agent_env(tmp_path, gateway)
    agent = start_agent(env, protocol.ONE_SHOT_FLAG)
    agent.send("interrupt")  # not a task
    assert agent.wait(60) == 1
    assert_well_ordered(agent.events, agent.raw_lines)
    (error,) = [e for e in agent.events if e["type"] == "error"]
    assert "the first stdin line must be the task" in error["message"]
    assert gateway.fake.message_calls() == []  # no model call without a task
