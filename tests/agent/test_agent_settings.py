"""agent/agent.py in-process: its settings, the environment it prepares for the CLI, records."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ml_agent.contracts import protocol
from tests.agent.harness import AGENT


@pytest.fixture(scope="module")
def agent_module() -> ModuleType:
    # agent.py imports its sibling as `protocol`; give it the very module the launcher uses.
    saved = sys.modules.get("protocol")
    sys.modules["protocol"] = protocol
    try:
        spec = importlib.util.spec_from_file_location("ml_agent_sandbox_entrypoint", AGENT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        if saved is None:
            sys.modules.pop("protocol", None)
        else:
            sys.modules["protocol"] = saved


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
        "ANTHROPIC_API_KEY": "mla-run-x",
        "ML_AGENT_RUN_DIR": str(tmp_path / "runs" / "r1"),
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    env.update(extra)
    return env


def test_defaults(agent_module, tmp_path):
    s = agent_module.Settings.from_env(base_env(tmp_path))
    assert s.run_id == "r1"  # the run folder's name when ML_AGENT_RUN_ID is empty
    assert s.config_dir == tmp_path / "runs" / "r1" / "claude"
    assert s.permission_mode == "bypassPermissions"
    assert (s.model, s.max_turns, s.budget_usd, s.tools) == (None, None, None, [])


def test_values_are_parsed(agent_module, tmp_path):
    s = agent_module.Settings.from_env(base_env(
        tmp_path, ML_AGENT_MAX_TURNS="7", ML_AGENT_BUDGET_USD="2.5",
        ML_AGENT_ALLOWED_TOOLS="Bash, Read,,Write", ML_AGENT_MODEL="claude-sonnet-4-5",
    ))
    assert (s.max_turns, s.budget_usd, s.tools) == (7, 2.5, ["Bash", "Read", "Write"])
    sdk = agent_module.load_sdk()
    options = agent_module.Agent(s, None, one_shot=True).options({}, sdk)
    assert options.max_budget_usd == 2.5 and options.max_turns == 7
    assert options.tools == ["Bash", "Read", "Write", "Skill"]  # skills stay usable
    assert options.model == "claude-sonnet-4-5"
    assert options.system_prompt["preset"] == "claude_code"  # Claude Code's prompt is kept
    assert "one-shot" in options.system_prompt["append"]


def test_the_system_prompt_names_the_launchers_trackio_names(agent_module, tmp_path):
    """A sweep's run: the launcher chose its trackio project and run name; a lone run (the
    variables empty) leaves them to the agent, and its prompt says nothing of them."""
    sdk = agent_module.load_sdk()
    s = agent_module.Settings.from_env(base_env(
        tmp_path, ML_AGENT_TRACKIO_PROJECT="sw-20261204-1612-5d1e7b",
        ML_AGENT_TRACKIO_RUN_NAME="r01-claude-haiku-4-5"))
    append = agent_module.Agent(s, None, one_shot=True).options({}, sdk).system_prompt["append"]
    assert "Log metrics with trackio to project 'sw-20261204-1612-5d1e7b' " \
        "($ML_AGENT_TRACKIO_PROJECT) with run name 'r01-claude-haiku-4-5' " \
        "($ML_AGENT_TRACKIO_RUN_NAME)" in append
    lone = agent_module.Settings.from_env(base_env(
        tmp_path, ML_AGENT_TRACKIO_PROJECT="", ML_AGENT_TRACKIO_RUN_NAME=""))
    append = agent_module.Agent(lone, None, one_shot=True).options({}, sdk).system_prompt[
        "append"]
    assert "trackio" not in append


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY is not set"),
        ({"ML_AGENT_RUN_DIR": "runs/r1"}, "must be an absolute path"),
        ({"ML_AGENT_MAX_TURNS": "many"}, "ML_AGENT_MAX_TURNS"),
    ],
)
def test_bad_settings(agent_module, tmp_path, extra, message):
    with pytest.raises(agent_module.SetupError, match=message):
        agent_module.Settings.from_env(base_env(tmp_path, **extra))


def test_cli_env_for_a_sandbox(agent_module, tmp_path):
    env = base_env(tmp_path)
    s = agent_module.Settings.from_env(env)
    extra = agent_module.cli_env(s, env)
    assert extra["CLAUDE_CONFIG_DIR"] == str(s.config_dir) and s.config_dir.is_dir()
    assert extra["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert extra["TMPDIR"] == extra["CLAUDE_CODE_TMPDIR"] == env["TMPDIR"]
    assert "HOME" not in extra  # a writable HOME is kept
    assert ("IS_SANDBOX" in extra) == (os.geteuid() == 0)


def test_cli_env_falls_back_to_the_run_folder(agent_module, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = base_env(tmp_path, TMPDIR=str(blocker / "tmp"), HOME=str(blocker / "home"),
                   ML_AGENT_PERMISSION_MODE="acceptEdits")
    s = agent_module.Settings.from_env(env)
    extra = agent_module.cli_env(s, env)
    assert extra["TMPDIR"] == str(s.run_dir / "tmp") and (s.run_dir / "tmp").is_dir()
    assert extra["HOME"] == str(s.run_dir / "home")
    assert "IS_SANDBOX" not in extra  # only needed for bypassed permissions as root


def test_records_keep_seq_monotonic_across_restarts(agent_module, tmp_path):
    settings = agent_module.Settings.from_env(base_env(tmp_path))
    first_out = io.StringIO()
    records = agent_module.Records(settings, first_out)
    records.emit(protocol.READY, run_id="r1")
    records.record_input({"type": "user", "text": "hi"})
    records.emit(protocol.ASSISTANT_TEXT, text="hello")
    records.close()
    again = agent_module.Records(settings, io.StringIO())  # e.g. the sandbox restarted
    assert again.emit(protocol.READY, run_id="r1")["seq"] == 3
    totals = agent_module.Totals(status="succeeded", turns=1)
    again.write_result(totals, final=True)
    again.close()
    lines = (settings.run_dir / protocol.TRANSCRIPT_FILE).read_text().splitlines()
    assert [json.loads(line).get("seq") for line in lines] == [1, None, 2, 3]
    assert [protocol.decode_event(line) for line in first_out.getvalue().splitlines()] == [
        json.loads(lines[0]), json.loads(lines[2])
    ]
    result = json.loads((settings.run_dir / protocol.RESULT_FILE).read_text())
    assert result["status"] == "succeeded" and result["ended_at"] and result["turns"] == 1


def test_a_client_that_goes_away_does_not_stop_the_records(agent_module, tmp_path):
    settings = agent_module.Settings.from_env(base_env(tmp_path))
    out = io.StringIO()
    records = agent_module.Records(settings, out)
    out.close()  # the attached client is gone
    records.emit(protocol.ASSISTANT_TEXT, text="still recorded")
    records.close()
    transcript = (settings.run_dir / protocol.TRANSCRIPT_FILE).read_text()
    assert "still recorded" in transcript
