"""The whole system on one machine, as a user runs it: `ml-agent up configs/local.yaml`.

The real CLI (a subprocess with an explicit env) starts the local backend: the supervisor,
the project's proxy on 127.0.0.1 holding the key, and the bubblewrap sandbox running the
real agent and the real bundled Claude CLI. The only scripted thing is the model: a fake
Anthropic API that accepts only the real key and asks for one Bash tool call, which writes
into /data, dumps the sandbox's env and logs a trackio metric.

The cached image (`$ML_AGENT_HOME/envs`) is shared across test runs through pytest's cache
folder, so only the first run on a machine builds it (minutes: claude-agent-sdk, trackio).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.anthropic import FakeAnthropic, main_loop, text, tool_use

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REAL_KEY = "sk-ant-e2e-the-real-key-0123456789"
SECRET = "fake-upstream"
CLI = str(Path(sys.executable).with_name("ml-agent"))
ROOT = Path(__file__).resolve().parent.parent
TOOL_COMMAND = (
    "echo trained > /data/e2e.txt && env > /data/env.txt && "
    "python -c \"import trackio; trackio.init(project='e2e'); trackio.log({'loss': 1.0}); "
    "trackio.finish()\""
)


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
        fake.script(
            tool_use("Bash", {"command": TOOL_COMMAND}, match=main_loop),
            text("Trained; the metric is logged.", match=main_loop),
        )
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


def _up_args(fake: FakeAnthropic, *extra: str) -> list[str]:
    return [
        "up", "configs/local.yaml", *extra,
        "--set", f"proxy.upstream={fake.url}",
        "--set", f"proxy.upstream_secret={SECRET}",
        "--set", 'sandbox.env.CLAUDE_CODE_MAX_RETRIES="1"',
    ]


def _check_run(home: Path, env: dict[str, str], fake: FakeAnthropic, output: str) -> str:
    """The assertions shared by the attached and the detached path; returns the run id."""
    runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["status"] == "succeeded" and run["backend"] == "local"
    run_id = run["run_id"]

    data = home / "volumes" / "sandbox-data"
    assert (data / "e2e.txt").read_text() == "trained\n"
    assert list((home / "volumes" / "sandbox-trackio").glob("e2e.db"))
    result = json.loads((data / "runs" / run_id / "result.json").read_text())
    assert result["status"] == "succeeded" and result["run_id"] == run_id
    assert result["proxy_usage"]["requests"] >= 2
    # The run's cost is the proxy's metering, in result.json and in `ps`; the agent's beside.
    assert result["cost_usd"] == result["proxy_usage"]["cost_usd"] == run["cost_usd"]
    assert result["agent_cost_usd"] == run["agent_cost_usd"] is not None

    inside = (data / "env.txt").read_text()
    token = json.loads((home / "runs" / run_id / "launch.json").read_text())["token"]
    assert f"ANTHROPIC_API_KEY={token}\n" in inside  # the run token, not the key
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:" in inside
    for secret in (REAL_KEY, token):
        assert secret not in output
    assert REAL_KEY not in inside
    # Every model call reached the fake through the proxy, with the real key injected.
    assert fake.message_calls() and {c.api_key for c in fake.message_calls()} == {REAL_KEY}
    return run_id


def test_up_task_runs_the_whole_chain(home, fake, tmp_path):
    env = _env(home, tmp_path)
    proc = _cli([*_up_args(fake, "--task", "train it and log the loss")], env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Trained; the metric is logged." in proc.stdout
    assert "▸ Bash" in proc.stdout
    run_id = _check_run(home, env, fake, output)
    assert f"run {run_id} succeeded · $" in proc.stdout  # one summary line, then where it is
    assert f"results: {home}/volumes/sandbox-data/runs/{run_id}/result.json" in proc.stderr


def test_up_detach_then_attach(home, fake, tmp_path):
    env = _env(home, tmp_path)
    proc = _cli([*_up_args(fake, "--task", "train it and log the loss", "--detach")], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = proc.stdout.strip()
    assert f"ml-agent attach {run_id}" in proc.stderr

    attached = _cli(["attach", run_id], env)
    output = proc.stdout + proc.stderr + attached.stdout + attached.stderr
    assert attached.returncode == 0, output
    assert attached.stdout.count("Trained; the metric is logged.") == 1  # de-duplicated
    assert _check_run(home, env, fake, output) == run_id
    logs = _cli(["logs", run_id], env)
    assert logs.returncode == 0 and '"type": "result"' in logs.stdout


def test_a_key_the_upstream_rejects_ends_the_run_naming_its_file(home, fake, tmp_path):
    # The Claude CLI would retry the 401 for minutes (CLAUDE_CODE_MAX_RETRIES=10 here); the
    # proxy sees it first and the supervisor ends the run, naming where the key came from.
    secret_file = home / "secrets" / f"{SECRET}.env"
    secret_file.write_text("ANTHROPIC_API_KEY=sk-ant-a-revoked-key-000000\n")
    env = _env(home, tmp_path)
    args = [*_up_args(fake, "--task", "train it"), "--set",
            'sandbox.env.CLAUDE_CODE_MAX_RETRIES="10"']
    proc = _cli(args, env)
    output = proc.stdout + proc.stderr
    assert "refused the key from" in output and str(secret_file) in output, output
    runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
    assert runs[0]["status"] == "failed"
    run_id = runs[0]["run_id"]
    log = (home / "runs" / run_id / "supervisor.log").read_text()
    assert f"refused the key from {secret_file}" in log
    result = json.loads((home / "volumes" / "sandbox-data" / "runs" / run_id
                         / "result.json").read_text())
    assert result["status"] == "failed" and str(secret_file) in result["error"]
    assert "sk-ant-a-revoked-key" not in output + log + json.dumps(result)
