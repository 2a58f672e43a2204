"""The functions the app deploys, run here: proxy and syncers against the fake Modal.

`app.proxy()` is what Modal calls in the container; here it runs in-process with the SDK
pointed at the fake control plane and the upstream at the fake Anthropic API.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import modal

from ml_agent.backends.modal import app as modal_app
from ml_agent.backends.modal.stores import ModalTokenStore, ModalUsageSink
from ml_agent.contracts import TokenRecord, hash_token, mint_token
from ml_agent.proxy.serving import ServerThread
from tests.fakes.anthropic import FakeAnthropic
from tests.modal.plans import config_plan
from tests.syncer.helpers import RecordingUploader, rows

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



def test_deployed_proxy_records_a_key_the_upstream_refuses(fake_modal, monkeypatch):
    from ml_agent.backends.modal.stores import AppState

    with FakeAnthropic(keys={"sk-ant-another"}) as upstream:
        env = modal_app.settings_env(config_plan("a10.yaml"))
        env.update(ML_AGENT_PROXY_UPSTREAM=upstream.url, ANTHROPIC_API_KEY=REAL_KEY)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        token = mint_token()
        record = TokenRecord(run_id="r1", expires_at=time.time() + 600, budget_usd=5.0)
        ModalTokenStore.for_app("ml-agent").put(hash_token(token), record)
        with ServerThread(modal_app.proxy()) as server:
            refused = httpx.post(f"{server.url}/v1/messages", json=BODY,
                                 headers={"x-api-key": token}, timeout=30)
            fact = None
            deadline = time.monotonic() + 10
            while fact is None and time.monotonic() < deadline:
                fact = AppState("ml-agent").get("proxy_key_refused")
                time.sleep(0.05)
    assert refused.status_code == 401
    assert fact is not None and fact["status"] == 401
    assert fact["type"] == "authentication_error" and REAL_KEY not in str(fact)

def test_final_sync_function_reloads_the_trackio_volume(fake_modal, monkeypatch, tmp_path):
    env = modal_app.settings_env(config_plan("a10.yaml", "syncer.enabled=true"))
    env["ML_AGENT_SYNCER_TRACKIO_DIR"] = str(tmp_path)  # where the container mounts it
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    modal.Volume.from_name("sandbox-trackio", create_if_missing=True).hydrate()  # as deployed
    modal_app.sync_now()  # nothing to publish yet: a reload, then an empty final sync
    (reload,) = fake_modal.requests("VolumeReload")
    assert reload.volume_id == fake_modal.servicer.volumes["sandbox-trackio"]


def _project(trackio: Path, name: str, rows: int) -> Path:
    """A trackio-shaped project database (WAL mode, a metrics table) with `rows` more rows."""
    trackio.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(trackio / f"{name}.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS metrics (id INTEGER PRIMARY KEY, run_id TEXT, "
                     "timestamp TEXT, run_name TEXT, step INTEGER, metrics TEXT)")
        for step in range(rows):
            conn.execute("INSERT INTO metrics (run_id, timestamp, run_name, step, metrics) "
                         "VALUES ('r', '2026-11-26T00:00:00', 'run', ?, '{}')", (step,))
    finally:
        conn.close()
    return trackio / f"{name}.db"


def test_syncer_and_final_syncs_share_what_was_uploaded(fake_modal, monkeypatch, tmp_path):
    """A final sync (a fresh container each `stop`) uploads only what changed since the
    last upload by any syncer: their records live in the app's `-sync` modal.Dict."""
    for name in ("anthropic-secret", "hf-write"):
        fake_modal.add_secret(name, {})
    plan = config_plan("a10.yaml", "syncer.enabled=true", "syncer.space_id=my-org/metrics")
    modal_app.build_app(plan).deploy(name=plan.app)  # no sandbox: the syncer stops at once
    trackio = tmp_path / "trackio"  # where the containers mount the trackio volume
    env = {**modal_app.settings_env(plan), "ML_AGENT_SYNCER_TRACKIO_DIR": str(trackio)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _project(trackio, "alpha", 3)
    beta = _project(trackio, "beta", 3)

    first = RecordingUploader(tmp_path / "up1")
    assert modal_app.run_syncer(uploader=first, min_uptime_s=0) == "asked to stop"
    assert sorted(u.project for u in first.uploads) == ["alpha", "beta"]  # once each
    assert set(fake_modal.dict_items("ml-agent-sync")) == {
        "sandbox-trackio/alpha", "sandbox-trackio/beta"
    }
    assert fake_modal.dict_items("ml-agent-state")["syncer_heartbeat"] == 0.0  # it stopped

    _project(trackio, "alpha", 2)  # new rows in one project
    # Another container's mount may renumber files: same content, new inode, no upload.
    copy = beta.with_name("beta.copy")
    shutil.copyfile(beta, copy)
    os.replace(copy, beta)
    second = RecordingUploader(tmp_path / "up2")
    report = modal_app.final_sync(uploader=second)
    assert [u.project for u in second.uploads] == ["alpha"]
    assert report == {"space_id": "my-org/metrics", "projects": 2, "uploaded": ["alpha"],
                      "failed": []}
    assert rows(second.uploads[0].db) == 5

    third = RecordingUploader(tmp_path / "up3")
    assert modal_app.final_sync(uploader=third)["uploaded"] == []
    assert not third.uploads
