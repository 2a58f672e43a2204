"""The run registry's pid file under concurrent readers, and the supervisor's start-up edge:
a stop that arrives before the sandbox started, and a run that ends without result.json."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ml_agent.backends.local import LocalBackend, registry
from ml_agent.backends.local.supervisor import Supervisor
from tests.local.helpers import AGENT, processes_of, seeded_plan

#: Rewrites the pid file until killed, while this test's process reads it; its command line
#: names the supervisor's module and the run folder, as `supervisor_pid` checks.
WRITER = """
import os, sys
from pathlib import Path
from ml_agent.backends.local import registry
paths = registry.RunPaths(Path(sys.argv[2]))
registry.write_pid(paths, os.getpid())
print("go", flush=True)
while True:
    registry.write_pid(paths, os.getpid())
"""


def test_the_pid_file_is_never_seen_empty_while_it_is_rewritten(tmp_path):
    # `up` polls the pid file while the supervisor writes its own pid into it: a reader that
    # caught it truncated took a live supervisor for a dead one ("exited early").
    paths = registry.RunPaths(tmp_path / "20261126-0600-abcdef")
    paths.folder.mkdir()
    argv = [sys.executable, "-c", WRITER, "ml_agent.backends.local.supervisor",
            str(paths.folder)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "go\n"
            seen = [registry.supervisor_pid(paths) for _ in range(20000)]
            assert writer.poll() is None  # it was writing all along
        finally:
            writer.kill()
    assert set(seen) == {writer.pid}


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-key")  # the proxy's, from the host
    return home


def test_a_stop_during_start_up_never_starts_the_sandbox(home):
    plan = seeded_plan(home, AGENT)
    paths = LocalBackend(home).prepare(plan, None)
    supervisor = Supervisor(paths)
    supervisor.request_stop("stopped")  # what SIGTERM does, here before run() got far
    assert supervisor.run() == 0
    record = registry.read_record(paths)
    assert record.status == "stopped" and record.ended_at and record.sandbox_id is None
    log = paths.log.read_text()
    assert "stopped before the sandbox started" in log and "sandbox started (pid" not in log
    assert not paths.events.exists() and not paths.stdin.exists()
    assert processes_of(plan.launch.run_id) == []


def test_a_run_without_result_json_says_so_plainly(home):
    # Stopped before the agent wrote anything: no runs/<id>/ on the data volume yet.
    plan = seeded_plan(home, AGENT)
    paths = LocalBackend(home).prepare(plan, None)
    supervisor = Supervisor(paths)
    supervisor._add_proxy_usage({"input_tokens": 1.0})
    supervisor.close()
    log = paths.log.read_text()
    assert f"no runs/{plan.launch.run_id}/result.json on the data volume" in log
    assert "No such file" not in log and "not updated" not in log
