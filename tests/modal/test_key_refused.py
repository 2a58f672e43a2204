"""A key the upstream refuses ends a Modal run within seconds, naming the secret (issue 13.2).

The deployed proxy (`app.proxy()`, in-process against the fake control plane) forwards to
the fake Anthropic API, which refuses the key of the `anthropic-secret` Modal secret; the
proxy notes it in the app's state. The "agent" in the fake sandbox calls the proxy with its
run token and, like the Claude CLI, retries the 401 until its sandbox ends.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ml_agent.backends.modal import ModalBackend
from ml_agent.backends.modal import app as modal_app
from ml_agent.backends.modal.stores import KEY_REFUSED, AppState
from ml_agent.cli.app import build_app
from ml_agent.contracts import ROOT, protocol
from ml_agent.proxy.serving import ServerThread
from tests.fakes.anthropic import FakeAnthropic
from tests.modal.conftest import MODAL_SECRETS
from tests.modal.plans import config_plan

REAL_KEY = MODAL_SECRETS["anthropic-secret"]["ANTHROPIC_API_KEY"]
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}]}
#: Without the fix nothing ends the run: the "agent" gives up after this many tries and
#: exits 0, so the test fails on the status instead of hanging.
TRIES = 30


@pytest.fixture
def proxy(modal_run_end, monkeypatch):
    """The deployed proxy's app, its upstream refusing the secret's key; its URL."""
    modal_run_end.servicer.function_results["sync_now"] = {
        "space_id": None, "projects": 0, "uploaded": [], "failed": []}
    monkeypatch.chdir(ROOT)
    env = modal_app.settings_env(config_plan("a10.yaml"))
    with FakeAnthropic(keys={"sk-ant-another-key"}) as upstream:
        monkeypatch.setenv("ML_AGENT_APP", env["ML_AGENT_APP"])
        monkeypatch.setenv("ML_AGENT_PROXY_ALLOWED_PATHS", env["ML_AGENT_PROXY_ALLOWED_PATHS"])
        monkeypatch.setenv("ML_AGENT_PROXY_UPSTREAM", upstream.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", REAL_KEY)  # as the secret gives it
        with ServerThread(modal_app.proxy()) as server:
            yield server.url


def play_refused_agent(fake, data: Path, proxy_url: str) -> dict[str, str]:
    """Each sandbox that gets its first stdin line plays agent.py whose Claude CLI keeps
    retrying a 401; returns {run id: token} as they start."""
    started: dict[str, str] = {}

    def agent(sandbox, _line) -> None:
        run_id = sandbox.tags["ml-agent-run"]
        if run_id in started:
            return
        token = started[run_id] = sandbox.env["ANTHROPIC_API_KEY"]
        folder = data / "runs" / run_id
        folder.mkdir(parents=True)
        result = {**dict.fromkeys(protocol.RESULT_KEYS), "run_id": run_id, "status": "running"}
        (folder / protocol.RESULT_FILE).write_text(json.dumps(result))

        def work() -> None:  # not on the fake's loop: it calls the proxy
            ready = {"type": "ready", "seq": 1, "ts": 1.0, "model": "m", "run_id": run_id}
            sandbox.write_stdout(json.dumps(ready) + "\n")
            for _ in range(TRIES):
                if sandbox.result is not None:
                    return
                httpx.post(f"{proxy_url}/v1/messages", json=BODY,
                           headers={"x-api-key": token}, timeout=30)
                time.sleep(1)
            sandbox.exit(0)

        threading.Thread(target=work, daemon=True).start()

    fake.on_stdin = agent
    return started


def test_up_ends_a_run_whose_key_the_upstream_refuses_naming_the_secret(
    modal_run_end, proxy, tmp_path
):
    fake = modal_run_end
    started = play_refused_agent(fake, tmp_path / "data", proxy)

    result = CliRunner().invoke(build_app(), ["up", "configs/a10.yaml", "--task", "train",
                                                 "--set", "syncer.enabled=true"])

    (run_id, token), = started.items()
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    said = ("error: the Anthropic API refused the key in the Modal secret 'anthropic-secret' "
            "(401 authentication_error")
    assert text.count(said) == 1, text
    assert f"run {run_id} ended: failed" in text
    assert REAL_KEY not in result.output and token not in result.output
    assert fake.requests("SandboxTerminate")  # ended by us, not by the agent giving up
    # The normal end: final sync, token revoked, registry, result.json.
    assert len(fake.function_calls("sync_now")) == 1
    assert all(r["revoked"] for r in fake.dict_items("ml-agent-tokens").values())
    assert fake.dict_items("ml-agent-runs")[run_id]["status"] == "failed"
    written = json.loads((tmp_path / "data" / "runs" / run_id / "result.json").read_text())
    assert written["status"] == "failed"
    assert "'anthropic-secret'" in written[protocol.RESULT_ERROR_KEY]
    assert REAL_KEY not in json.dumps(written)


def test_finish_notices_a_refused_key_while_it_waits(modal_run_end, proxy, tmp_path):
    fake = modal_run_end
    started = play_refused_agent(fake, tmp_path / "data", proxy)
    messages: list[str] = []
    backend = ModalBackend(progress=messages.append)
    run = backend.up(config_plan("a10.yaml", run_id="20261126-0315-a1b2c3"), task="train",
                     detach=True)

    ended = backend.finish(run.run_id)  # waits for the sandbox: the refusal ends it

    assert started and ended.status == "failed"
    assert any("the proxy's key was refused: stopping sandbox" in m for m in messages)
    written = json.loads((tmp_path / "data" / "runs" / run.run_id / "result.json").read_text())
    assert "'anthropic-secret'" in written[protocol.RESULT_ERROR_KEY]


def test_a_refusal_before_the_run_began_is_another_runs(modal_with_secrets):
    backend = ModalBackend()
    run = backend.up(config_plan("a10.yaml"), task=None, detach=True)
    AppState("ml-agent").put(KEY_REFUSED, {"ts": run.created_at - 60, "status": 401,
                                           "type": "authentication_error", "message": "old"})
    assert backend.stop(run.run_id).status == "stopped"
