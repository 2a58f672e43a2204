"""The functions the app deploys, run here: proxy and final sync against the fake Modal.

`app.proxy()` is what Modal calls in the container; here it runs in-process with the SDK
pointed at the fake control plane and the upstream at the fake Anthropic API.
"""

from __future__ import annotations

import time

import httpx
import modal

from ml_agent.backends.modal import app as modal_app
from ml_agent.backends.modal.stores import ModalTokenStore, ModalUsageSink
from ml_agent.contracts import TokenRecord, hash_token, mint_token
from ml_agent.proxy.serving import ServerThread
from tests.fakes.anthropic import FakeAnthropic
from tests.modal.plans import config_plan

REAL_KEY = "sk-ant-real"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}]}


def test_deployed_proxy_checks_tokens_and_meters_usage_in_modal_dicts(fake_modal, monkeypatch):
    with FakeAnthropic(keys={REAL_KEY}) as upstream:
        env = modal_app.settings_env(config_plan("a10.yaml"))
        env.update(ML_AGENT_PROXY_UPSTREAM=upstream.url, ANTHROPIC_API_KEY=REAL_KEY)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        token = mint_token()
        record = TokenRecord(run_id="r1", expires_at=time.time() + 600, budget_usd=5.0)
        ModalTokenStore.for_app("ml-agent").put(hash_token(token), record)

        with ServerThread(modal_app.proxy()) as server:
            headers = {"anthropic-version": "2023-06-01"}
            ok = httpx.post(f"{server.url}/v1/messages", json=BODY,
                            headers={**headers, "x-api-key": token}, timeout=30)
            bad = httpx.post(f"{server.url}/v1/messages", json=BODY,
                             headers={**headers, "x-api-key": mint_token()}, timeout=30)
            usage: dict[str, float] = {}
            deadline = time.monotonic() + 10
            while not usage.get("input_tokens") and time.monotonic() < deadline:
                usage = ModalUsageSink.for_app("ml-agent").get("r1")
                time.sleep(0.1)

    assert ok.status_code == 200, ok.text
    assert bad.status_code == 401
    assert [call.api_key for call in upstream.calls] == [REAL_KEY]  # a bad token costs nothing
    assert usage["input_tokens"] == 100 and usage["output_tokens"] == 20


def test_final_sync_function_reloads_the_trackio_volume(fake_modal, monkeypatch, tmp_path):
    env = modal_app.settings_env(config_plan("a10.yaml", "syncer.enabled=true"))
    env["ML_AGENT_SYNCER_TRACKIO_DIR"] = str(tmp_path)  # where the container mounts it
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    modal.Volume.from_name("sandbox-trackio", create_if_missing=True).hydrate()  # as deployed
    modal_app.sync_now()  # nothing to publish yet: a reload, then an empty final sync
    (reload,) = fake_modal.requests("VolumeReload")
    assert reload.volume_id == fake_modal.servicer.volumes["sandbox-trackio"]
