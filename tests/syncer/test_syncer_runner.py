"""Running the loop: the local thread, the Modal entry's lifetime, settings, the real uploader."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ml_agent.plan import SyncerPlan
from ml_agent.syncer import (
    MemoryState,
    SyncerSettings,
    SyncerThread,
    TrackioUploader,
    UploadError,
    build_syncer,
    run_forever,
)
from ml_agent.syncer.snapshot import snapshot_project
from tests.syncer.helpers import FakeClock, RecordingUploader, WalWriter, add_project, rows, tree


def settings_for(vol: Path, **kw) -> SyncerSettings:
    return SyncerSettings(trackio_dir=str(vol), space_id="my-org/metrics", **kw)


def test_the_local_thread_syncs_and_stop_runs_a_final_sync(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    writer = WalWriter(add_project(vol, template, "p"))
    uploader = RecordingUploader(tmp_path / "store")
    logs: list[str] = []
    syncer = build_syncer(settings_for(vol), uploader=uploader, log=logs.append)
    thread = SyncerThread(syncer, interval_s=0.05).start()
    for step in range(40):
        writer.log(step)
        time.sleep(0.01)
    writer.log(40)  # written last, right before stop: only the final sync can carry it
    assert thread.stop(timeout=30)
    writer.close()
    assert len(uploader.uploads) >= 2
    assert rows(uploader.uploads[-1].db) == 3 + 41
    assert not syncer.work_dir.exists()  # the private copies are cleaned up


def test_run_forever_stops_when_idle_after_a_final_sync(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    writer = WalWriter(add_project(vol, template, "p"))
    clock = FakeClock()
    reloads: list[float] = []
    uploader = RecordingUploader(tmp_path / "store", clock=clock)

    def before_scan() -> None:  # Modal: volume.reload(); here: the agent logs meanwhile
        reloads.append(clock())
        if len(reloads) <= 5:
            writer.log(len(reloads))

    reason = run_forever(
        settings_for(vol, interval_s=10, idle_stop_s=60), before_scan=before_scan,
        uploader=uploader, log=lambda _: None, clock=clock, sleep=clock.sleep,
    )
    writer.close()
    assert reason.startswith("idle for")
    # 5 cycles with changes, then 6 idle ones (60 s at 10 s), then the final scan.
    assert len(reloads) == 5 + 6 + 1
    assert len(uploader.uploads) == 5 and rows(uploader.uploads[-1].db) == 3 + 5
    assert set(clock.sleeps) == {10}


def test_run_forever_stops_when_told(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    clock = FakeClock()
    checks: list[int] = []

    def should_stop() -> bool:  # Modal: "no sandbox of the app is live any more"
        checks.append(1)
        return len(checks) >= 3

    reason = run_forever(settings_for(vol, idle_stop_s=0), should_stop=should_stop,
                         uploader=RecordingUploader(tmp_path / "s"), log=lambda _: None,
                         clock=clock, sleep=clock.sleep)
    assert reason == "asked to stop" and len(checks) == 3


def test_run_forever_has_a_maximum_lifetime(tmp_path: Path) -> None:
    clock = FakeClock()
    reason = run_forever(settings_for(tmp_path, interval_s=30, idle_stop_s=0,
                                      max_runtime_s=300),
                         uploader=RecordingUploader(tmp_path / "s"), log=lambda _: None,
                         clock=clock, sleep=clock.sleep)
    assert reason.startswith("ran 300 s") and sum(clock.sleeps) == 300


def test_settings_travel_through_the_environment() -> None:
    settings = SyncerSettings(trackio_dir="/trackio", namespace="my-org", space_id=None,
                              private=False, interval_s=12.5, state_path="/tmp/s.json")
    env = settings.to_env()
    assert env["ML_AGENT_SYNCER_PRIVATE"] == "0" and "ML_AGENT_SYNCER_SPACE_ID" not in env
    assert SyncerSettings.from_env(env) == settings
    assert SyncerSettings.from_env({"ML_AGENT_SYNCER_TRACKIO_DIR": "/t"}).private is True


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({}, "ML_AGENT_SYNCER_TRACKIO_DIR is not set"),
        ({"ML_AGENT_SYNCER_TRACKIO_DIR": "/t", "ML_AGENT_SYNCER_INTERVAL_S": "30s"},
         "INTERVAL_S must be a number"),
        ({"ML_AGENT_SYNCER_TRACKIO_DIR": "/t", "ML_AGENT_SYNCER_PRIVATE": "maybe"},
         "PRIVATE must be 1 or 0"),
    ],
)
def test_bad_settings_env_is_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyncerSettings.from_env(env)


def test_settings_from_the_plan() -> None:
    plan = SyncerPlan(enabled=True, volume="trackio", volume_name="sandbox-trackio",
                      mount="/root/.cache/huggingface/trackio", namespace="my-org",
                      space_id=None, secret="hf-write", private=True, interval_s=30)
    settings = SyncerSettings.from_plan(plan, idle_stop_s=600)
    assert settings.trackio_dir == "/root/.cache/huggingface/trackio"
    assert (settings.namespace, settings.private, settings.idle_stop_s) == ("my-org", True, 600)
    local = SyncerSettings.from_plan(plan, trackio_dir="/home/u/vols/sandbox-trackio")
    assert local.trackio_dir == "/home/u/vols/sandbox-trackio"


def test_the_real_uploader_runs_trackio_on_the_snapshot_and_reports_failure(
    tmp_path: Path, template: Path
) -> None:
    """trackio.sync against a Hub that refuses connections: an UploadError, the token
    redacted, the volume untouched (trackio wrote only to the snapshot, if anywhere)."""
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    before = tree(vol)
    snap = snapshot_project(vol, "p", tmp_path / "snap")
    token = "hf_" + "x" * 34
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_TOKEN": token, "TRACKIO_DIR": str(vol), "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    uploader = TrackioUploader(timeout_s=120, env=env)
    with pytest.raises(UploadError, match="trackio.sync exited with 1") as info:
        uploader.upload(snap, "my-org/metrics", private=True)
    assert token not in str(info.value)
    assert tree(vol) == before


def test_state_defaults_to_memory_and_a_file_when_asked(tmp_path: Path) -> None:
    assert isinstance(build_syncer(settings_for(tmp_path)).state, MemoryState)
    path = tmp_path / "private" / "state.json"
    syncer = build_syncer(settings_for(tmp_path, state_path=str(path)))
    assert type(syncer.state).__name__ == "JsonFileState"
    syncer.close()
