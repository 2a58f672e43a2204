"""`ml-agent up/ps/attach/logs/stop` on the Modal backend, through the real CLI and SDK."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ml_agent.backends.modal.stores import ModalUsageSink
from ml_agent.cli.app import build_app
from ml_agent.contracts import ROOT
from tests.modal.cli import ml_agent

A10 = "configs/a10.yaml"


@pytest.fixture
def fake(modal_with_secrets):
    return modal_with_secrets


def test_up_detach_then_manage_the_run(fake, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config path as a user types it
    up = ml_agent("up", A10, "--detach", "--set", "syncer.enabled=true")
    assert up.exit_code == 0, up.output
    run_id = up.stdout.strip().splitlines()[0]
    (create,) = fake.requests("SandboxCreate")
    assert {t.tag_name: t.tag_value for t in create.tags}["ml-agent-run"] == run_id
    assert create.definition.resources.gpu_config.gpu_type == "A10"
    assert fake.function("proxy").webhook_config.type  # the proxy is a web endpoint

    again = ml_agent("up", A10, "--detach", "--set", "syncer.enabled=true")
    assert again.exit_code == 0, again.output
    assert len(fake.requests("AppPublish")) == 1  # unchanged app part: no redeploy

    listed = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    assert {r["run_id"] for r in listed} >= {run_id}
    assert all(r["status"] == "running" and r["gpu"] == "A10" for r in listed)
    # Cost so far: what the proxy metered into the app's usage modal.Dict.
    ModalUsageSink.for_app("ml-agent").add(run_id, {"requests": 1, "cost_usd": 0.25})
    table = ml_agent("ps", "--backend", "modal")
    row = next(line for line in table.stdout.splitlines() if run_id in line)
    assert row.split()[-1] == "$0.25"

    (sandbox,) = [s for s in fake.sandboxes.values() if s.tags["ml-agent-run"] == run_id]
    token = fake.secret_env(create.definition.secret_ids[-1]).get("ANTHROPIC_API_KEY")
    events = [
        {"type": "ready", "seq": 1, "ts": 1.0, "model": "m", "run_id": run_id},
        {"type": "assistant_text", "seq": 2, "ts": 2.0, "text": f"my key is {token}"},
        {"type": "result", "seq": 3, "ts": 3.0, "status": "succeeded", "cost_usd": 0.5,
         "usage": {}, "turns": 1, "duration_s": 2.0, "session_id": "s"},
    ]
    sandbox.write_stdout("".join(json.dumps(e) + "\n" for e in events))
    sandbox.exit(0)

    attached = ml_agent("attach", run_id)
    assert attached.exit_code == 0, attached.output
    assert "my key is" in attached.output and token and token not in attached.output

    logs = ml_agent("logs", run_id)
    assert logs.exit_code == 0 and '"seq": 2' in logs.stdout and token not in logs.stdout

    stopped = ml_agent("stop", run_id)
    assert stopped.exit_code == 0, stopped.output
    listed = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    assert next(r for r in listed if r["run_id"] == run_id)["status"] == "succeeded"


def test_up_task_follows_the_agent_to_its_result(fake, monkeypatch):
    monkeypatch.chdir(ROOT)

    def agent(sandbox, task):  # plays agent.py --one-shot: given its task, a few events, exit
        assert json.loads(task) == {"type": "user", "text": "train a model"}
        run_id = sandbox.tags["ml-agent-run"]
        for event in (
            {"type": "ready", "seq": 1, "ts": 1.0, "model": "m", "run_id": run_id},
            {"type": "assistant_text", "seq": 2, "ts": 2.0, "text": "training done"},
            {"type": "result", "seq": 3, "ts": 3.0, "status": "failed", "cost_usd": 0.1,
             "usage": {}, "turns": 1, "duration_s": 1.0, "session_id": "s"},
        ):
            sandbox.write_stdout(json.dumps(event) + "\n")
        sandbox.exit(1)

    fake.on_stdin = agent
    result = ml_agent("up", A10, "--task", "train a model")
    assert "training done" in result.output
    assert result.exit_code == 1  # the agent's status: failed
    (create,) = fake.requests("SandboxCreate")
    assert list(create.definition.entrypoint_args) == ["python", "/agent/agent.py", "--one-shot"]


def test_up_task_when_the_sandbox_ends_before_it_gets_the_task(fake, monkeypatch):
    monkeypatch.chdir(ROOT)
    fake.on_sandbox_create = lambda sandbox: sandbox.exit(1)  # e.g. the entrypoint is missing
    result = ml_agent("up", A10, "--task", "train a model")
    assert result.exit_code == 1
    assert "the sandbox ended (exit code 1) before it got the task" in " ".join(
        result.output.split()
    )


def test_up_task_that_cannot_be_delivered_stops_the_sandbox(fake, monkeypatch):
    from grpclib import GRPCError, Status

    from ml_agent.errors import BackendError

    monkeypatch.chdir(ROOT)

    def refuse(sandbox, data):  # Modal refuses the write (the fake's hook raises in it)
        raise GRPCError(Status.PERMISSION_DENIED, "no input for you")

    fake.on_stdin = refuse
    result = CliRunner().invoke(build_app(), ["up", A10, "--task", "train a model"])
    assert isinstance(result.exception, BackendError)  # main() prints it, exit 1
    assert "your Modal token may not do this while writing to run" in str(result.exception)
    assert fake.requests("SandboxTerminate")  # not left waiting for its task until timeout
    listed = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    assert [r["status"] for r in listed] == ["stopped"]
