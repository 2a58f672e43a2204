"""`up --resume` on Modal, through the real CLI and SDK against the fake control plane.

A new sandbox continues an ended run: the same run id and run folder on the data volume,
the Claude session named in the new sandbox's env, a new run token in the token Dict (the
old one revoked), the budget left for the agent, one registry entry with two legs. The
app's real `resume_info`, `finalize_run` and `run_events` run on a temp data folder.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml_agent.backends.modal.stores import ModalUsageSink
from ml_agent.cli.app import build_app
from ml_agent.contracts import ROOT, hash_token, protocol
from ml_agent.errors import BackendError
from tests.modal.cli import ml_agent

A10 = "configs/a10.yaml"
BUDGET = ("--set", "proxy.budget_usd=1")
SESSION = "0f1e2d3c-4b5a-4697-8877-665544332211"


@pytest.fixture
def fake(modal_run_end, monkeypatch):
    monkeypatch.chdir(ROOT)
    return modal_run_end


def play_agent(data: Path, cost: float, *, session: str | None, first_seq: int):
    """`fake.on_stdin`: plays agent.py --one-shot for one leg; the proxy meters `cost`."""

    def agent(sandbox, line):
        task = json.loads(line)["text"]  # the agent's first stdin line
        run_id = sandbox.tags["ml-agent-run"]
        folder = data / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        result = dict.fromkeys(protocol.RESULT_KEYS)
        result.update(run_id=run_id, status="succeeded", session_id=session, turns=1)
        (folder / protocol.RESULT_FILE).write_text(json.dumps(result))
        events = [
            {"type": "ready", "seq": first_seq, "ts": 1.0, "model": "m", "run_id": run_id,
             "mode": "one-shot"},
            {"type": "assistant_text", "seq": first_seq + 1, "ts": 2.0, "text": f"did {task}"},
            {"type": "result", "seq": first_seq + 2, "ts": 3.0, "status": "succeeded",
             "cost_usd": cost, "usage": {}, "turns": 1, "duration_s": 1.0,
             "session_id": session},
        ]
        text = "".join(json.dumps(e) + "\n" for e in events)
        with (folder / protocol.TRANSCRIPT_FILE).open("a") as transcript:
            transcript.write(text)

        def work() -> None:
            ModalUsageSink.for_app("ml-agent").add(run_id, {"requests": 1, "cost_usd": cost})
            sandbox.write_stdout(text)
            sandbox.exit(0)

        threading.Thread(target=work).start()  # not on the fake's loop: it calls the SDK

    return agent


def _env_of(fake, create) -> dict[str, str]:
    return fake.secret_env(create.definition.secret_ids[-1])


def test_resume_starts_a_new_sandbox_on_the_same_run_with_the_budget_left(fake, tmp_path):
    data = tmp_path / "data"
    fake.on_stdin = play_agent(data, 0.25, session=SESSION, first_seq=1)
    first = ml_agent("up", A10, "--task", "train", *BUDGET)
    assert first.exit_code == 0, first.output
    (create1,) = fake.requests("SandboxCreate")
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    run_id = record["run_id"]
    token1 = _env_of(fake, create1)["ANTHROPIC_API_KEY"]

    fake.on_stdin = play_agent(data, 0.1, session=SESSION, first_seq=4)
    second = ml_agent("up", "--resume", run_id, "--task", "evaluate")
    assert second.exit_code == 0, second.output
    text = " ".join(second.output.split())
    assert f"run {run_id} resumed (leg 2)" in text and "did evaluate" in text
    assert "did train" not in text  # the first leg is not shown again

    create1, create2 = fake.requests("SandboxCreate")
    env = _env_of(fake, create2)
    token2 = env["ANTHROPIC_API_KEY"]
    assert token2 != token1
    assert env["ML_AGENT_RUN_ID"] == run_id
    assert env["ML_AGENT_RUN_DIR"] == f"/data/runs/{run_id}"
    assert env["CLAUDE_CONFIG_DIR"] == f"/data/runs/{run_id}/claude"
    assert env["ML_AGENT_RESUME_SESSION"] == SESSION
    assert float(env["ML_AGENT_BUDGET_USD"]) == pytest.approx(0.75)
    tokens = fake.dict_items("ml-agent-tokens")
    old, new = tokens[hash_token(token1)], tokens[hash_token(token2)]
    assert old["revoked"] and old["run_id"] == new["run_id"] == run_id
    # The proxy meters the run across its legs: the token carries the run's whole budget.
    assert new["budget_usd"] == 1.0

    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    assert record["run_id"] == run_id and record["status"] == "succeeded"
    assert record["cost_usd"] == pytest.approx(0.35)
    assert [leg["status"] for leg in record["legs"]] == ["succeeded", "succeeded"]
    assert len({leg["sandbox_id"] for leg in record["legs"]}) == 2
    result = json.loads((data / "runs" / run_id / protocol.RESULT_FILE).read_text())
    assert result["cost_usd"] == pytest.approx(0.35)


def test_resume_refuses_a_spent_budget_and_a_live_run(fake, tmp_path):
    data = tmp_path / "data"
    fake.on_stdin = play_agent(data, 1.5, session=SESSION, first_seq=1)
    assert ml_agent("up", A10, "--task", "train", *BUDGET).exit_code == 0
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    spent = CliRunner().invoke(build_app(), ["up", "--resume", record["run_id"], "-t", "x"])
    assert isinstance(spent.exception, BackendError)
    assert "has spent its budget (proxy.budget_usd $1; cost so far $1.5000)" in str(
        spent.exception)
    assert len(fake.requests("SandboxCreate")) == 1

    live = ml_agent("up", A10, "--detach")
    run_id = live.stdout.strip().splitlines()[0]
    refused = CliRunner().invoke(build_app(), ["up", "--resume", run_id, "--task", "more"])
    assert isinstance(refused.exception, BackendError)
    assert f"run {run_id} is still running: `ml-agent attach {run_id}`" in str(
        refused.exception)
    assert len(fake.requests("SandboxCreate")) == 2


@pytest.mark.parametrize("config", [A10, "configs/cpu.yaml"])  # stdin V1 (index), V2 (offset)
def test_a_resumed_sandbox_numbers_its_stdin_from_the_start(fake, tmp_path, config):
    # Leg 1 took its task on stdin; leg 2 is a new sandbox: a later process (attach) that
    # writes to it must not continue leg 1's numbering (Modal would refuse or drop it).
    from ml_agent.backends.modal import ModalBackend

    fake.on_stdin = play_agent(tmp_path / "data", 0.1, session=SESSION, first_seq=1)
    assert ml_agent("up", config, "--task", "train").exit_code == 0
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    fake.on_stdin = lambda sandbox, data: None
    resumed = ml_agent("up", "--resume", record["run_id"], "--detach")
    assert resumed.exit_code == 0, resumed.output
    line = protocol.encode_input(protocol.IN_USER, text="hello again")
    ModalBackend().send(record["run_id"], line)  # another process: a fresh handle
    first, second = fake.sandboxes.values()
    assert second.stdin_text == line and not second.stdin_dropped


def test_a_run_whose_sandbox_timed_out_is_resumed(fake, tmp_path):
    # Modal caps a sandbox at 24 h: the run's sandbox reached its timeout (exit code 124)
    # while nobody followed it; resume notices, records the leg as timed out, and goes on.
    data = tmp_path / "data"
    up = ml_agent("up", A10, "--detach")
    run_id = up.stdout.strip().splitlines()[0]
    folder = data / "runs" / run_id
    folder.mkdir(parents=True)
    result = dict.fromkeys(protocol.RESULT_KEYS)
    result.update(run_id=run_id, status="running", session_id=SESSION)
    (folder / protocol.RESULT_FILE).write_text(json.dumps(result))
    (first,) = fake.sandboxes.values()
    first.exit(124)

    fake.on_stdin = play_agent(data, 0.1, session=SESSION, first_seq=1)
    resumed = ml_agent("up", "--resume", run_id, "--task", "carry on")
    assert resumed.exit_code == 0, resumed.output
    assert "did carry on" in resumed.output
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    assert [leg["status"] for leg in record["legs"]] == ["timeout", "succeeded"]
    _, create2 = fake.requests("SandboxCreate")
    assert _env_of(fake, create2)["ML_AGENT_RESUME_SESSION"] == SESSION
    # Nobody ended leg 1: resume revoked its token before minting leg 2's (ended since).
    assert all(t["revoked"] for t in fake.dict_items("ml-agent-tokens").values())
    assert len(fake.dict_items("ml-agent-tokens")) == 2


def test_an_app_deployed_before_resume_info_gives_the_session_from_the_run_events(fake,
                                                                                  tmp_path):
    # An app deployed by an older ml-agent has no `resume_info`: the session comes from the
    # run's events (its transcript, through `run_events`), the cost from the registry.
    data = tmp_path / "data"
    fake.on_stdin = play_agent(data, 0.25, session=SESSION, first_seq=1)
    assert ml_agent("up", A10, "--task", "train", *BUDGET).exit_code == 0
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    servicer = fake.servicer
    app_id = servicer.deployed_apps["ml-agent"]
    del servicer.app_objects[app_id]["resume_info"]  # as the older deployment was
    (data / "runs" / record["run_id"] / protocol.RESULT_FILE).unlink()  # and no result.json

    fake.on_stdin = play_agent(data, 0.1, session=SESSION, first_seq=4)
    resumed = ml_agent("up", "--resume", record["run_id"], "--task", "evaluate")
    assert resumed.exit_code == 0, resumed.output
    _, create2 = fake.requests("SandboxCreate")
    env = _env_of(fake, create2)
    assert env["ML_AGENT_RESUME_SESSION"] == SESSION
    assert float(env["ML_AGENT_BUDGET_USD"]) == pytest.approx(0.75)
    assert fake.function_calls("run_events")


def test_a_spent_budget_is_raised_with_budget_on_modal(fake, tmp_path):
    data = tmp_path / "data"
    fake.on_stdin = play_agent(data, 1.5, session=SESSION, first_seq=1)
    assert ml_agent("up", A10, "--task", "train", *BUDGET).exit_code == 0  # $1.5 of $1
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    run_id = record["run_id"]

    low = CliRunner().invoke(build_app(), ["up", "--resume", run_id, "-t", "x",
                                           "--budget", "1.5"])
    assert isinstance(low.exception, BackendError)
    assert (f"run {run_id} has already cost $1.5000: --budget is the run's new total budget "
            "and must be more than that (got $1.5)") in str(low.exception)
    assert len(fake.requests("SandboxCreate")) == 1

    fake.on_stdin = play_agent(data, 0.5, session=SESSION, first_seq=4)
    raised = ml_agent("up", "--resume", run_id, "--task", "evaluate", "--budget", "3")
    assert raised.exit_code == 0, raised.output
    _, create2 = fake.requests("SandboxCreate")
    env = _env_of(fake, create2)
    assert float(env["ML_AGENT_BUDGET_USD"]) == pytest.approx(1.5)  # $3 less the $1.5 spent
    # The proxy meters the run across legs: the new token carries the new whole budget.
    assert fake.dict_items("ml-agent-tokens")[hash_token(env["ANTHROPIC_API_KEY"])][
        "budget_usd"] == 3.0

    # The next leg, without --budget, keeps the raised budget ($2 spent of $3).
    fake.on_stdin = play_agent(data, 0.1, session=SESSION, first_seq=7)
    again = ml_agent("up", "--resume", run_id, "--task", "more")
    assert again.exit_code == 0, again.output
    env = _env_of(fake, fake.requests("SandboxCreate")[2])
    assert float(env["ML_AGENT_BUDGET_USD"]) == pytest.approx(1.0)
    assert fake.dict_items("ml-agent-tokens")[hash_token(env["ANTHROPIC_API_KEY"])][
        "budget_usd"] == 3.0
