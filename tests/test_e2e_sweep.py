"""A sweep end to end on the local backend, as a user runs it: `ml-agent sweep FILE
--foreground` launches two runs (one task, an axis of two models), each the real agent and
the real bundled Claude CLI in its sandbox behind the project's proxy; the only scripted
thing is the model (one text answer per run). `ml-agent results SWEEP --json` then shows
both runs succeeded with the proxy's metered cost, and at the fake Anthropic each run's
requests carried its own axis value (the model), its task as written, and the trackio
project and run name its sandbox was given (named in its system prompt, which the agent
builds from ML_AGENT_TRACKIO_PROJECT/_RUN_NAME).

The `home` fixture and the CLI helpers are tests/test_e2e.py's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from ml_agent.contracts import CONFIGS_DIR
from tests import test_e2e
from tests.fakes.anthropic import FakeAnthropic, main_loop, text
from tests.test_e2e import REAL_KEY, SECRET, _cli, _env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

home = test_e2e.home  # the same fixture: a fresh ML_AGENT_HOME sharing the cached images
TASK = "write the marker alpha-7f3e"
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(*(text(f"Done with run {i}.", match=main_loop) for i in range(2)))
        yield fake


def _first_user_text(call) -> str:
    """The first message of the conversation (the task the agent was given)."""
    return json.dumps(call.json.get("messages", [])[:1])


def _run_of(call, run_ids) -> str:
    """The run whose agent made `call`: its system prompt names the run ("ml-agent run ID")."""
    system = json.dumps(call.json.get("system"))
    [run_id] = [r for r in run_ids if f"ml-agent run {r}" in system]
    return run_id


def test_a_sweep_of_two_models_with_the_real_cli(home, fake, tmp_path):
    env = _env(home, tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""\
base: {CONFIGS_DIR / "local.yaml"}
tasks: [{json.dumps(TASK)}]
axes:
  agent.model: {json.dumps(list(MODELS))}
  agent.max_turns: [3]
  proxy.upstream: ["{fake.url}"]
  proxy.upstream_secret: ["{SECRET}"]
  sandbox.env.CLAUDE_CODE_MAX_RETRIES: ["1"]
max_parallel: 2
""")
    launched = _cli(["sweep", str(sweep), "--foreground"], env)
    output = launched.stdout + launched.stderr
    assert launched.returncode == 0, output
    sweep_id = next(iter((home / "sweeps").glob("sw-*.json"))).stem
    try:
        deadline = time.monotonic() + 600
        while True:
            runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
            if len(runs) == 2 and all(r["status"] not in ("starting", "running")
                                      for r in runs):
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.5)
    finally:
        for run in json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout):
            _cli(["stop", run["run_id"]], env)

    shown = _cli(["results", sweep_id, "--json"], env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = json.loads(shown.stdout)
    assert len(rows) == 2, rows
    assert {r["run"] for r in rows} == {r["run_id"] for r in runs}
    for row in rows:
        assert row["status"] == "succeeded", row
        assert row["cost_usd"] is not None and row["cost_usd"] > 0, row
        data = home / "volumes" / "sandbox-data" / "runs" / row["run"]
        result = json.loads((data / "result.json").read_text())
        assert result["cost_usd"] == result["proxy_usage"]["cost_usd"] == row["cost_usd"]
        assert result["proxy_usage"]["requests"] >= 1

    # Each run's requests carried its own axis value (the model), its task as written (no
    # sentence appended) and the trackio names the launcher gave its sandbox.
    record = json.loads((home / "sweeps" / f"{sweep_id}.json").read_text())
    planned = {r["run_id"]: r for r in record["runs"]}
    assert planned.keys() == {r["run_id"] for r in runs}
    calls = [c for c in fake.message_calls() if main_loop(c)]
    by_run = {run_id: [c for c in calls if _run_of(c, planned) == run_id] for run_id in planned}
    for run_id, entry in planned.items():
        mine = by_run[run_id]
        assert mine, f"no model request from run {run_id}"
        [model] = [m for m in MODELS if f'agent.model="{m}"' in entry["overrides"]]
        assert {c.json["model"] for c in mine} == {model}, (run_id, model)
        assert entry["label"].startswith(f"r{entry['index']:02d}-{model}-")
        [first] = [c for c in mine if len(c.json.get("messages", [])) == 1]
        content = first.json["messages"][0]["content"]  # the CLI's reminders, then the task
        assert [b.get("text") for b in content][-1] == TASK, _first_user_text(first)
        system = json.dumps(first.json.get("system"))
        assert f"project '{sweep_id}' ($ML_AGENT_TRACKIO_PROJECT)" in system
        assert f"run name '{entry['label']}' ($ML_AGENT_TRACKIO_RUN_NAME)" in system
    assert {c.api_key for c in fake.message_calls()} == {REAL_KEY}  # through the proxy
    for run in runs:
        token = json.loads((home / "runs" / run["run_id"] / "launch.json").read_text())[
            "token"]
        assert token not in output and token not in shown.stdout
    assert REAL_KEY not in output + shown.stdout
