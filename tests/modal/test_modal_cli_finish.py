"""The end of a Modal run as the CLI shows it: `stop` and a run that ends by itself.

The real CLI and SDK against the fake control plane: `stop` says what it does in the order
it does it and passes the backend's steps through (escaped, the run token redacted); `up
--task` and `attach` end a run that ended by itself at once (final metric sync, token
revoked, usage into result.json), so nothing waits for a later `ps` or `stop`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ml_agent.backends.modal.stores import ModalUsageSink
from ml_agent.contracts import ROOT, protocol
from tests.modal.cli import ml_agent

A10 = "configs/a10.yaml"
SYNCER = ("--set", "syncer.enabled=true")
SYNC_REPORT = {"space_id": "my-org/metrics", "projects": 1, "uploaded": ["p"], "failed": []}


@pytest.fixture
def fake(modal_run_end, monkeypatch):
    modal_run_end.servicer.function_results["sync_now"] = SYNC_REPORT
    monkeypatch.chdir(ROOT)
    return modal_run_end


def said(result) -> str:
    """The CLI's output with whitespace normalised (Rich wraps at the console's width)."""
    return " ".join(result.output.split())


def agent_result(data: Path, run_id: str) -> Path:
    """result.json as agent.py leaves it at its end: proxy_usage null."""
    result = dict.fromkeys(protocol.RESULT_KEYS)
    result.update(run_id=run_id, status="succeeded", started_at="2026-11-26T03:15:00Z",
                  ended_at="2026-11-26T03:16:00Z", agent_cost_usd=0.1, turns=1)
    folder = data / "runs" / run_id
    folder.mkdir(parents=True)
    path = folder / protocol.RESULT_FILE
    path.write_text(json.dumps(result))
    return path


def events(run_id: str, status: str) -> str:
    lines = [
        {"type": "ready", "seq": 1, "ts": 1.0, "model": "m", "run_id": run_id},
        {"type": "assistant_text", "seq": 2, "ts": 2.0, "text": "training done"},
        {"type": "result", "seq": 3, "ts": 3.0, "status": status, "cost_usd": 0.1,
         "usage": {}, "turns": 1, "duration_s": 1.0, "session_id": "s"},
    ]
    return "".join(json.dumps(e) + "\n" for e in lines)


def test_stop_says_the_order_and_shows_each_step_escaped_and_redacted(fake, tmp_path):
    up = ml_agent("up", A10, "--detach", *SYNCER)
    assert up.exit_code == 0, up.output
    run_id = up.stdout.strip().splitlines()[0]
    (create,) = fake.requests("SandboxCreate")
    token = fake.secret_env(create.definition.secret_ids[-1])["ANTHROPIC_API_KEY"]
    agent_result(tmp_path / "data", run_id)
    # Text from the app's functions is untrusted, like the sandbox's: markup and a token.
    fake.servicer.function_results["sync_now"] = {**SYNC_REPORT, "space_id": "my-org/[red]m"}
    fake.function_handlers["finalize_run"] = lambda *args: f"refused [bold]{token}[/bold]"

    stopped = ml_agent("stop", run_id)

    assert stopped.exit_code == 0, stopped.output
    text = said(stopped)
    assert f"stopping run {run_id}: the sandbox, then a final metric sync…" in text
    steps = ["stopping sandbox sb-", "final metric sync (the sandbox has ended)",
             "final metric sync done: 1 changed project(s) uploaded to my-org/[red]m",
             "not updated with the proxy's usage: refused [bold]<run token>[/bold]",
             f"run {run_id} stopped"]
    at = [text.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), (at, text)
    assert token not in stopped.output
    names = fake.method_names  # and that is the order it happened in
    assert names.index("SandboxTerminate") < max(
        i for i, name in enumerate(names) if name == "FunctionMap")


def test_a_one_shot_run_is_ended_as_soon_as_its_result_is_in(fake, tmp_path):
    data = tmp_path / "data"
    paths: dict[str, Path] = {}

    def agent(sandbox, task):  # plays agent.py --one-shot; the proxy meters its one request
        run_id = sandbox.tags["ml-agent-run"]
        paths[run_id] = agent_result(data, run_id)

        def work() -> None:
            ModalUsageSink.for_app("ml-agent").add(run_id, {"requests": 1, "cost_usd": 0.2})
            sandbox.write_stdout(events(run_id, "succeeded"))
            sandbox.exit(0)

        threading.Thread(target=work).start()  # not on the fake's loop: it calls the SDK

    fake.on_stdin = agent
    result = ml_agent("up", A10, "--task", "train a model", *SYNCER)

    assert result.exit_code == 0, result.output
    (run_id,) = paths
    text = said(result)
    assert "training done" in text and f"finishing run {run_id}: a final metric sync" in text
    assert "final metric sync done: 1 changed project(s) uploaded to my-org/metrics" in text
    assert f"proxy usage written to /data/runs/{run_id}/result.json" in text
    assert fake.function_calls("sync_now") == [((), {})]  # the final sync, once
    written = json.loads(paths[run_id].read_text())
    assert written["proxy_usage"] == {"requests": 1, "cost_usd": 0.2}
    assert (written["cost_usd"], written["agent_cost_usd"]) == (0.2, 0.1)
    assert all(r["revoked"] for r in fake.dict_items("ml-agent-tokens").values())
    listed = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    (record,) = listed
    assert (record["status"], record["exit_code"], record["cost_usd"]) == ("succeeded", 0, 0.2)
    # Already ended: a later `stop` (or `ps`) does not sync again.
    assert ml_agent("stop", run_id).exit_code == 0
    assert len(fake.function_calls("sync_now")) == 1


def test_attach_to_a_run_that_ended_finishes_it(fake, tmp_path):
    up = ml_agent("up", A10, "--detach", *SYNCER)
    run_id = up.stdout.strip().splitlines()[0]
    path = agent_result(tmp_path / "data", run_id)
    (sandbox,) = fake.sandboxes.values()
    sandbox.write_stdout(events(run_id, "failed"))
    sandbox.exit(1)

    attached = ml_agent("attach", run_id)

    assert attached.exit_code == 1  # the agent's status
    assert "final metric sync done" in said(attached)
    assert json.loads(path.read_text())["proxy_usage"] is not None
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    assert (record["status"], record["exit_code"]) == ("failed", 1)
    assert len(fake.function_calls("sync_now")) == 1
