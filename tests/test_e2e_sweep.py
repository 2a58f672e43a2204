"""A sweep end to end on the local backend, as a user runs it: `ml-agent sweep FILE
--foreground` launches two runs (two tasks), each the real agent and the real bundled
Claude CLI in its sandbox behind the project's proxy; the only scripted thing is the model
(one text answer per run). `ml-agent results SWEEP --json` then shows both runs succeeded
with the proxy's metered cost, and each run's first model request carried its own task.

Fixtures and helpers follow tests/test_e2e.py (the cached image is shared the same way).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_agent.contracts import CONFIGS_DIR
from tests.fakes.anthropic import FakeAnthropic, main_loop, text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REAL_KEY = "sk-ant-e2e-sweep-real-key-0123456789"
SECRET = "fake-upstream"
CLI = str(Path(sys.executable).with_name("ml-agent"))
ROOT = Path(__file__).resolve().parent.parent
TASKS = ("write the marker alpha-7f3e", "write the marker beta-91c2")


@pytest.fixture
def home(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh ML_AGENT_HOME with the proxy's upstream key, sharing the cached images."""
    home = tmp_path / "ml-agent-home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / f"{SECRET}.env").write_text(f"ANTHROPIC_API_KEY={REAL_KEY}\n")
    (home / "envs").symlink_to(request.config.cache.mkdir("ml-agent-envs"))
    return home


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(*(text(f"Done with run {i}.", match=main_loop) for i in range(2)))
        yield fake


def _env(home: Path, tmp_path: Path) -> dict[str, str]:
    """What a user's shell would have, minus anything Anthropic/Claude/Modal."""
    keep = ("PATH", "LANG", "LC_ALL", "PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT",
            "PIP_DEFAULT_TIMEOUT", "PYENV_ROOT", "PYENV_VERSION")
    env = {k: v for k, v in os.environ.items() if k in keep}
    user_home = tmp_path / "user"
    user_home.mkdir(exist_ok=True)
    return {**env, "HOME": str(user_home), "ML_AGENT_HOME": str(home), "COLUMNS": "120"}


def _cli(args: list[str], env: dict[str, str], timeout: float = 600, **kwargs):
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def _first_user_text(call) -> str:
    """The first message of the conversation (the task the agent was given)."""
    return json.dumps(call.json.get("messages", [])[:1])


def test_a_sweep_of_two_runs_with_the_real_cli(home, fake, tmp_path):
    env = _env(home, tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""\
base: {CONFIGS_DIR / "local.yaml"}
tasks: {json.dumps(list(TASKS))}
axes:
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

    # Each run's first model request carried its own task: two agent conversations, each
    # opening with one of the two tasks, and no task given twice.
    firsts = [c for c in fake.message_calls()
              if main_loop(c) and len(c.json.get("messages", [])) == 1]
    assert len(firsts) == 2, [_first_user_text(c) for c in firsts]
    opened = sorted(next(t for t in TASKS if t in _first_user_text(c)) for c in firsts)
    assert opened == sorted(TASKS)
    assert {c.api_key for c in fake.message_calls()} == {REAL_KEY}  # through the proxy
    for run in runs:
        token = json.loads((home / "runs" / run["run_id"] / "launch.json").read_text())[
            "token"]
        assert token not in output and token not in shown.stdout
    assert REAL_KEY not in output + shown.stdout
