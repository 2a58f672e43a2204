"""The run registry's pid file under concurrent readers, and the supervisor's start-up edge:
a stop that arrives before the sandbox started, and a run that ends without result.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from ml_agent.backends.local import LocalBackend, registry
from ml_agent.backends.local.supervisor import Supervisor, _last_seq
from ml_agent.lines import MAX_LINE_BYTES
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


def _result_json(supervisor: Supervisor) -> Path:
    data = supervisor.host.volumes[supervisor.plan.data_volume.key]
    folder = Path(data) / "runs" / supervisor.paths.run_id
    folder.mkdir(parents=True)
    return folder / "result.json"


def _merge_bounded(supervisor: Supervisor, unblock: Path) -> None:
    worker = threading.Thread(target=supervisor._add_proxy_usage, args=({"cost_usd": 0.5},),
                              daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # a writer opens the FIFO, so that the thread ends; then fail
        os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the supervisor blocked on a planted FIFO")
    supervisor.close()


def test_a_fifo_planted_as_result_json_does_not_block_the_supervisor(home):
    supervisor = Supervisor(LocalBackend(home).prepare(seeded_plan(home, AGENT), None))
    result = _result_json(supervisor)
    os.mkfifo(result)
    _merge_bounded(supervisor, result)
    assert "result.json not updated with the proxy's usage: result.json is not a regular " \
        "file" in supervisor.paths.log.read_text()


def test_a_symlink_planted_as_result_json_is_not_followed(home, tmp_path):
    supervisor = Supervisor(LocalBackend(home).prepare(seeded_plan(home, AGENT), None))
    victim = tmp_path / "victim.json"
    victim.write_text('{"status": "running"}')
    _result_json(supervisor).symlink_to(victim)
    _merge_bounded(supervisor, victim)
    assert victim.read_text() == '{"status": "running"}'
    assert "result.json is a symbolic link; not followed" in supervisor.paths.log.read_text()


#: The supervisor meets a 2 GiB sparse result.json; prints how much its peak memory grew (KiB).
SPARSE = """
import resource, sys
from pathlib import Path
from ml_agent.backends.local import registry
from ml_agent.backends.local.supervisor import Supervisor, _last_seq
supervisor = Supervisor(registry.RunPaths(Path(sys.argv[1])))
with open(sys.argv[2], "wb") as fh:
    fh.truncate(2 << 30)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
supervisor._add_proxy_usage({"cost_usd": 0.5})
supervisor.close()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_sparse_2_gib_result_json_is_refused_unread(home):
    # It used to be json.load-ed whole: 4 GiB of the supervisor's memory.
    supervisor = Supervisor(LocalBackend(home).prepare(seeded_plan(home, AGENT), None))
    result = _result_json(supervisor)
    supervisor.close()
    out = subprocess.run([sys.executable, "-c", SPARSE, str(supervisor.paths.folder),
                          str(result)], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 8 * 1024  # KiB
    assert "result.json is 2147483648 bytes, over the 4194304 byte limit" \
        in supervisor.paths.log.read_text()


def test_a_resumed_runs_own_events_are_numbered_after_its_earlier_legs(tmp_path):
    # The supervisor's own event (a key the upstream refused) must not reuse a seq of an
    # earlier leg: a client de-duplicating by seq would drop it.
    events = tmp_path / "events.jsonl"
    assert _last_seq(events) == 0
    events.write_text("".join(
        json.dumps({"type": "assistant_text", "seq": seq, "ts": 1.0, "text": "x"}) + "\n"
        for seq in (1, 2, 7)) + "not an event\n")
    assert _last_seq(events) == 7


def test_a_sandbox_line_that_never_ends_does_not_grow_the_supervisor(home):
    # The supervisor reads the agent's stdout (untrusted) for the whole run: 40 MB with no
    # newline, then an event. Before, it held the whole line (readline has no cap).
    from tests.local.test_tail import HUGE_LINE

    supervisor = Supervisor(LocalBackend(home).prepare(seeded_plan(home, AGENT), None))
    tracemalloc.start()
    try:
        with subprocess.Popen([sys.executable, "-c", HUGE_LINE],
                              stdout=subprocess.PIPE) as agent:
            supervisor._read(agent)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        supervisor.close()
    assert peak < 3 * MAX_LINE_BYTES, peak
    paths = supervisor.paths
    assert paths.output.stat().st_size > 40 << 20  # output.log keeps all of it
    assert [json.loads(line)["type"] for line in paths.events.read_text().splitlines()] == [
        "turn_end"]
    assert supervisor._last_seq == 1
    assert f"longer than {MAX_LINE_BYTES} bytes" in paths.log.read_text()
