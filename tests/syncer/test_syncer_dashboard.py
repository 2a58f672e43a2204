"""`ml-agent dashboard`: trackio's real dashboard on a live mirror of the local trackio volume."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ml_agent.cli.dashboard import DEFAULT_VOLUME, trackio_volume_name
from ml_agent.contracts import CONFIGS_DIR
from ml_agent.errors import MlAgentError
from tests.syncer.helpers import WalWriter, add_project, tree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_file(tmp_path: Path, text: str) -> str:
    """A config beside links to the repo's agent/ and .claude/ (base.yaml ships them)."""
    for name in ("agent", ".claude"):
        if not (tmp_path / name).exists():
            os.symlink(CONFIGS_DIR.parent / name, tmp_path / name)
    path = tmp_path / "configs" / "c.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


def test_the_volume_name_comes_from_the_config(tmp_path: Path) -> None:
    assert trackio_volume_name(None) == DEFAULT_VOLUME
    assert trackio_volume_name(str(CONFIGS_DIR / "local.yaml")) == "sandbox-trackio"
    custom = config_file(tmp_path, (
        f"extends: {CONFIGS_DIR / 'local.yaml'}\n"
        "volumes:\n  metrics: {name: my-metrics, mount: /metrics}\n"
        "syncer: {volume: metrics}\n"
    ))
    assert trackio_volume_name(custom) == "my-metrics"


def test_a_config_without_a_trackio_volume_says_what_to_set(tmp_path: Path) -> None:
    bare = config_file(tmp_path, (
        "app: bare\nbackend: local\nimage: {python: '3.11', layers: []}\n"
        "volumes:\n  data: {name: bare-data, mount: /data}\n"
    ))
    with pytest.raises(MlAgentError, match="set syncer.volume"):
        trackio_volume_name(bare)


def test_dashboard_serves_the_volume_live_without_touching_it(
    tmp_path: Path, template: Path
) -> None:
    home = tmp_path / "home"
    vol = home / "volumes" / DEFAULT_VOLUME
    writer = WalWriter(add_project(vol, template, "mnist"))
    writer.log(0)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKIO_", "ML_AGENT_"))}
    env.update(ML_AGENT_HOME=str(home), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ml_agent.cli import main; sys.exit(main())",
         "dashboard", "--no-browser", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"

    def logs() -> int:
        reply = httpx.post(f"{url}/get_logs", json={"project": "mnist", "run": "writer"})
        return len(reply.json()["data"])

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                projects = httpx.post(f"{url}/get_all_projects", json={}).json()["data"]
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.3)
        assert projects == ["mnist"] and logs() == 1
        for step in range(1, 6):
            writer.log(step)
        before = tree(vol)
        deadline = time.monotonic() + 30
        while logs() != 6:  # the mirror refreshes every few seconds
            assert time.monotonic() < deadline, "new rows never reached the dashboard"
            time.sleep(0.5)
        assert tree(vol) == before  # read only: the dashboard works on its own copy
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
        writer.close()


def test_dashboard_without_a_local_volume_says_how_to_get_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_AGENT_")}
    env["ML_AGENT_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from ml_agent.cli import main; sys.exit(main())",
         "dashboard", "--no-browser"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "no local trackio volume" in proc.stderr and "ml-agent up" in proc.stderr
