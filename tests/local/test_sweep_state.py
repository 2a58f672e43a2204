"""A sweep's driver failing or vanishing is seen where the user looks (`ps --sweep`, `results`,
`sweep --resume`), not only in its log: real drivers, supervisors and sandboxes, a stand-in
agent (tests/local/test_sweep_runs.py's), no model."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from ml_agent.backends.local import LocalBackend
from ml_agent.cli import main
from ml_agent.runs import driver, sweepstate
from ml_agent.runs.sweepfile import load_sweep
from ml_agent.runs.sweeps import SweepRecord, sweeps_dir
from tests.local import test_sweep_runs
from tests.local.test_sweep_runs import seeded_sweep, wait_for_runs

pytestmark = pytest.mark.slow

home = test_sweep_runs.home  # the same fixture: a fresh ML_AGENT_HOME, cleaned up after
HOST = f"{sys.version_info[0]}.{sys.version_info[1]}"
OTHER = "3.10" if HOST != "3.10" else "3.12"  # a Python this machine does not have


def wait_done(sweep_id: str) -> SweepRecord:
    """The sweep's record once no process is launching it."""
    deadline = time.monotonic() + 90
    while sweepstate.running(record := SweepRecord.load(sweep_id)):
        assert time.monotonic() < deadline, driver.log_path(sweep_id).read_text()
        time.sleep(0.1)
    return record


def recorded_sweep(path) -> SweepRecord:
    """A sweep recorded as `ml-agent sweep FILE` records it, before any run is launched."""
    record = SweepRecord.new(load_sweep(path))
    record.save()
    return record


def test_a_sweep_that_cannot_start_fails_at_the_terminal_and_records_nothing(home, tmp_path,
                                                                             capsys, monkeypatch):
    sweep = seeded_sweep(home, tmp_path, ["m-a", "m-bb"], max_parallel=1)
    config = tmp_path / "base.yaml"
    config.write_text(config.read_text().replace(f'python: "{HOST}"', f'python: "{OTHER}"'))
    assert main(["sweep", str(sweep)]) == 1
    assert f"image.python is '{OTHER}' but this machine's Python is" in capsys.readouterr().err
    config.write_text(config.read_text().replace(f'python: "{OTHER}"', f'python: "{HOST}"'))
    monkeypatch.delenv("ANTHROPIC_API_KEY")  # `up`'s checks: here, the proxy's key
    assert main(["sweep", str(sweep)]) == 1
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err
    assert list(sweeps_dir().glob("sw-*")) == []  # no sweep, no driver, nothing to clean


def test_a_failed_driver_is_seen_by_ps_results_and_resume(home, tmp_path, capsys):
    sweep = seeded_sweep(home, tmp_path, ["m-a", "m-bb"], max_parallel=1)
    recorded = recorded_sweep(sweep)  # `ml-agent sweep` checked it, recorded it... and then
    config = tmp_path / "base.yaml"
    good = config.read_text()
    config.write_text(good.replace(f'python: "{HOST}"', f'python: "{OTHER}"'))  # valid YAML,
    started = time.time()  # refused by the local backend only when the driver launches

    code = main(["sweep", "--resume", recorded.sweep_id])
    out, err = capsys.readouterr()
    [path] = sweeps_dir().glob("sw-*.json")
    sweep_id = path.stem
    record = wait_done(sweep_id)
    reason = f"image.python is '{OTHER}' but this machine's Python is"
    assert record.driver_error and record.driver_error.startswith(reason), record
    assert started <= (record.driver_error_at or 0) <= time.time()
    if code:  # the driver failed before `sweep` returned (else it printed the sweep id)
        assert f"sweep {sweep_id}: driver failed: {reason}" in err, err
    else:
        assert out.strip() == sweep_id

    log = driver.log_path(sweep_id)
    assert main(["ps", "--sweep", sweep_id]) == 0
    err = capsys.readouterr().err
    assert f"warning: sweep {sweep_id}: driver failed: {reason}" in err, err
    assert (f" — log: {log}; fix it, then `ml-agent sweep --resume {sweep_id}` (failed at "
            in err)
    assert "2 of 2 run(s) not launched" in err and f"no runs of sweep {sweep_id} yet" in err
    assert main(["results", sweep_id]) == 1
    err = capsys.readouterr().err
    assert f"driver failed: {reason}" in err and f"no runs of sweep '{sweep_id}' yet" in err

    config.write_text(good)  # fixed: the resume says what happened before, then launches
    assert main(["sweep", "--resume", sweep_id]) == 0
    err = capsys.readouterr().err
    assert f"note: sweep {sweep_id}: driver failed: {reason}" in err
    record = wait_done(sweep_id)
    assert record.driver_error is None and record.pending() == []
    wait_for_runs(LocalBackend(home), sweep_id, 2)
    assert main(["ps", "--sweep", sweep_id]) == 0
    assert f"sweep {sweep_id}: all 2 run(s) launched" in capsys.readouterr().err
    assert main(["results", sweep_id]) == 0
    out, err = capsys.readouterr()
    assert f"sweep {sweep_id} (2 runs)" in out and "warning" not in err


def test_a_foreground_sweeps_failure_is_recorded_too(home, tmp_path, capsys):
    sweep = seeded_sweep(home, tmp_path, ["m-a"], max_parallel=1)
    sweep_id = recorded_sweep(sweep).sweep_id
    config = tmp_path / "base.yaml"
    config.write_text(config.read_text().replace(f'python: "{HOST}"', f'python: "{OTHER}"'))
    assert main(["sweep", "--resume", sweep_id, "--foreground"]) == 1
    record = SweepRecord.load(sweep_id)
    assert record.driver_pid is None and record.driver_error.startswith("image.python is")
    assert main(["ps", "--sweep", sweep_id]) == 0
    err = capsys.readouterr().err
    # no log: a foreground sweep writes to its terminal
    assert f"driver failed: image.python is '{OTHER}'" in err and " — log: " not in err
    assert f"; fix it, then `ml-agent sweep --resume {sweep_id}`" in err


def test_a_driver_that_vanished_is_said_not_running(home, tmp_path, capsys):
    sweep = seeded_sweep(home, tmp_path, ["m-a", "m-bb", "m-ccc"], max_parallel=1)
    assert main(["sweep", str(sweep)]) == 0
    sweep_id = capsys.readouterr().out.strip()
    pid = SweepRecord.load(sweep_id).driver_pid
    assert pid and sweepstate.running(SweepRecord.load(sweep_id))
    assert main(["ps", "--sweep", sweep_id]) == 0
    assert f"its driver (pid {pid}) is launching the rest" in capsys.readouterr().err
    deadline = time.monotonic() + 60
    while not SweepRecord.load(sweep_id).runs[0]["launched_at"]:  # one launched, then
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # the machine rebooted, the OOM killer struck...
    deadline = time.monotonic() + 30
    while sweepstate.running(SweepRecord.load(sweep_id)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    record = SweepRecord.load(sweep_id)
    assert record.driver_pid == pid and record.driver_error is None  # nothing was noted
    pending = len(record.pending())
    assert pending >= 1

    assert main(["ps", "--sweep", sweep_id]) == 0
    err = capsys.readouterr().err
    assert (f"warning: sweep {sweep_id}: driver not running, {pending} of 3 run(s) not "
            f"launched — log: {driver.log_path(sweep_id)}; `ml-agent sweep --resume "
            f"{sweep_id}` launches them") in err, err
    wait_for_runs(LocalBackend(home), sweep_id, 3 - pending)
    assert main(["results", sweep_id]) == 0
    assert f"driver not running, {pending} of 3" in capsys.readouterr().err

    assert main(["stop", "--sweep", sweep_id]) == 0  # a stopped sweep needs nothing more
    capsys.readouterr()
    assert main(["ps", "--sweep", sweep_id]) == 0
    err = capsys.readouterr().err
    assert f"sweep {sweep_id}: stopped; {pending} run(s) not launched" in err
    assert "warning" not in err
