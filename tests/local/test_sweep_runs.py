"""Sweeps on the local backend with real supervisors and sandboxes (a scripted stand-in
agent, no model): at most max_parallel live, every run recorded under its sweep, resume
after the launcher stopped mid-sweep, and `results` of the sweep."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_agent.backends.local import LocalBackend
from ml_agent.cli import main
from ml_agent.config import load_config
from ml_agent.contracts import CONFIGS_DIR
from ml_agent.runs import driver
from ml_agent.runs.sweepfile import load_sweep
from ml_agent.runs.sweeps import Driver, SweepRecord
from tests.local.helpers import seeded_plan

pytestmark = pytest.mark.slow

#: Writes its metric (the length of its model's name), its task (the first stdin line) and
#: the trackio names its launcher chose, says ready, works 1.5 s.
AGENT = """
import json, os, sys, time
run_dir = os.environ["ML_AGENT_RUN_DIR"]
os.makedirs(run_dir + "/eval", exist_ok=True)
json.dump({"accuracy": len(os.environ["ML_AGENT_MODEL"])}, open(run_dir + "/eval/m.json", "w"))
task = json.loads(sys.stdin.readline())["text"]  # one-shot: the task is the first line
open(run_dir + "/task.txt", "w").write(task)
json.dump([os.environ["ML_AGENT_TRACKIO_PROJECT"], os.environ["ML_AGENT_TRACKIO_RUN_NAME"]],
          open(run_dir + "/trackio.json", "w"))
open(run_dir + "/dataset.txt", "w").write(os.environ.get("DATASET", ""))
print(json.dumps({"type": "ready", "seq": 1, "ts": time.time()}), flush=True)
time.sleep(1.5)
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ML_AGENT_HOME", str(home))
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-key")
    monkeypatch.setenv("COLUMNS", "200")
    yield home
    for path in (home / "sweeps").glob("sw-*.json"):
        driver.end(path.stem, home)
    backend = LocalBackend(home)
    for record in backend.ps():
        backend.stop(record.run_id)


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""\
base: {CONFIGS_DIR / "local.yaml"}
tasks: ["find the best model"]
axes:
  agent.model: [m-a, m-bb, m-ccc]
max_parallel: 2
""")
    return path


def make_plan(home):
    """The sweep's real Plan of each run, with the stand-in agent and no image build."""

    def make(base, overrides, *, sweep_id, allow, label):
        config = load_config(base, overrides)
        plan = seeded_plan(home, AGENT)
        plan = plan.model_copy(update={"agent": plan.agent.model_copy(
            update={"model": config.agent.model})})
        return plan.for_launch(plan.launch.run_id, sweep=sweep_id, trackio_run_name=label)

    return make


def test_a_sweep_launches_every_run_at_most_max_parallel_live_then_resumes(home, sweep_file):
    backend = LocalBackend(home)
    record = SweepRecord.new(load_sweep(sweep_file))
    record.save()
    said: list[str] = []

    def say(message: str) -> None:
        said.append(message)
        if message.startswith("launching run 3/3"):
            raise KeyboardInterrupt  # the launcher's terminal closes mid-sweep

    live_seen: list[int] = []

    def statuses_then_sleep(seconds: float) -> None:
        live_seen.append(sum(r.status in ("starting", "running") for r in backend.ps()))
        time.sleep(seconds)

    driver = Driver(record, lambda _: backend, say=say, poll_s=0.2, sleep=statuses_then_sleep,
                    make_plan=make_plan(home))
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    assert any(m.startswith("waiting for a free slot (2/2") for m in said)
    assert live_seen and max(live_seen) <= 2
    stored = SweepRecord.load(record.sweep_id[:12])
    [noted] = stored.pending()  # its id was noted, then the launcher died before `up`
    noted_id = noted["run_id"]
    assert noted_id and noted_id not in {r.run_id for r in backend.ps()}

    resumed = Driver(stored, lambda _: backend, poll_s=0.2, make_plan=make_plan(home)).run()
    assert len(resumed) == 1 and resumed[0] != noted_id  # launched anew, once
    assert SweepRecord.load(record.sweep_id).pending() == []
    runs = [r for r in backend.ps() if r.sweep == record.sweep_id]
    assert len(runs) == 3 and {r.data_volume for r in runs} == {"sandbox-data"}
    deadline = time.monotonic() + 60
    while any(r.status in ("starting", "running") for r in backend.ps()):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # The task is the user's, as written; where its metrics go reached the sandbox's env.
    folder = home / "volumes" / "sandbox-data" / "runs" / resumed[0]
    assert (folder / "task.txt").read_text() == "find the best model"
    assert json.loads((folder / "trackio.json").read_text()) == [record.sweep_id, "r02-m-ccc"]


def test_results_of_a_sweep_compare_its_runs(home, sweep_file, capsys):
    backend = LocalBackend(home)
    record = SweepRecord.new(load_sweep(sweep_file))
    record.save()
    Driver(record, lambda _: backend, poll_s=0.2, make_plan=make_plan(home)).run()
    deadline = time.monotonic() + 60
    while any(r.status in ("starting", "running") for r in backend.ps()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert main(["results", record.sweep_id, "--json", "--sort", "-m.accuracy"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["metrics"]["m.accuracy"] for r in rows] == [5, 4, 3]
    assert {r["sweep"] for r in rows} == {record.sweep_id}
    assert {r["status"] for r in rows} == {"succeeded"}


CONFIG = """\
app: ml-agent
backend: local
image:
  python: "{python}"
  layers:
    - file: {{src: agent.py, dest: /agent/test_agent.py}}
volumes:
  data: {{name: sandbox-data, mount: /data}}
  trackio: {{name: sandbox-trackio, mount: /trackio}}
sandbox: {{timeout: 2m, workdir: /app}}
agent: {{entrypoint: /agent/test_agent.py, model: m-a}}
proxy: {{secret: anthropic-secret, budget_usd: 1}}
syncer: {{enabled: false, volume: trackio}}
"""


def seeded_sweep(home, tmp_path, models: list[str], max_parallel: int = 2,
                 tasks: tuple[str, ...] = ("go",)):
    """A sweep file over CONFIG (the stand-in agent in a seeded venv: no image build)."""
    import sys

    from ml_agent.backends.local import image
    from ml_agent.plan import build_plan
    from tests.local.helpers import tiny_venv

    (tmp_path / "agent.py").write_text(AGENT)
    config = tmp_path / "base.yaml"
    config.write_text(CONFIG.format(python=f"{sys.version_info[0]}.{sys.version_info[1]}"))
    venv = home / "envs" / image.env_hash(build_plan(load_config(config), config))
    tiny_venv(venv)
    (venv / image.COMPLETE_FILE).write_text(json.dumps({"pip_freeze": []}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: base.yaml\ntasks: {json.dumps(list(tasks))}\naxes:\n"
                     f"  agent.model: {models}\nmax_parallel: {max_parallel}\n"
                     f"budget_usd: {len(models) * len(tasks)}\n")
    return sweep


def test_the_sweep_command_launches_the_runs_and_results_shows_them(home, tmp_path, capsys):
    """`ml-agent sweep FILE` end to end: the base config's own Plan, its image (a seeded
    venv), the CLI's driver; then `results SWEEP` and `pull` of one of its runs."""
    sweep = seeded_sweep(home, tmp_path, ["m-a", "m-bb"])
    assert main(["sweep", str(sweep), "--foreground"]) == 0
    out, err = capsys.readouterr()
    sweep_id = out.strip()
    assert sweep_id.startswith("sw-") and "2 run(s) launched" in err
    backend = LocalBackend(home)
    deadline = time.monotonic() + 60
    while any(r.status in ("starting", "running") for r in backend.ps()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert main(["results", sweep_id[:10]]) == 0
    table = capsys.readouterr().out
    assert f"sweep {sweep_id} (2 runs)" in table and "m.accuracy" in table
    assert main(["sweep", "--resume", sweep_id]) == 0  # nothing left: no driver needed
    assert "0 of 2 run(s) to launch" in capsys.readouterr().err
    run_id = next(r.run_id for r in backend.ps() if r.sweep == sweep_id)
    assert main(["pull", run_id, str(tmp_path / "pulled")]) == 0
    assert json.loads((tmp_path / "pulled" / "eval" / "m.json").read_text())["accuracy"] in (3, 4)


def test_stop_sweep_stops_its_live_runs_and_its_driver_launches_no_more(home, sweep_file,
                                                                         capsys):
    backend = LocalBackend(home)
    record = SweepRecord.new(load_sweep(sweep_file))
    record.save()
    stopped_once: list[bool] = []

    def say(message: str) -> None:
        if message.startswith("waiting for a free slot") and not stopped_once:
            stopped_once.append(True)  # another terminal: `ml-agent stop --sweep ID`
            assert main(["stop", "--sweep", record.sweep_id[:12]]) == 0

    launched = Driver(record, lambda _: backend, say=say, poll_s=0.2,
                      make_plan=make_plan(home)).run()
    assert len(launched) == 2  # the third waited for a slot, then saw the stop
    assert main(["ps", "--sweep", record.sweep_id, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert sorted(r["run_id"] for r in runs) == sorted(launched)
    assert {r["status"] for r in runs} <= {"stopped", "succeeded"}
    assert SweepRecord.load(record.sweep_id).stopped
    assert main(["sweep", "--resume", record.sweep_id]) == 0  # a stop holds on resume
    assert "was stopped: nothing more is launched" in capsys.readouterr().err
    assert len([r for r in backend.ps() if r.sweep == record.sweep_id]) == 2


def wait_for_runs(backend, sweep_id: str, count: int) -> int:
    """Wait until the sweep has `count` runs and none is live; returns the most seen live."""
    most = 0
    deadline = time.monotonic() + 90
    while True:
        runs = [r for r in backend.ps() if r.sweep == sweep_id]
        live = sum(r.status in ("starting", "running") for r in runs)
        most = max(most, live)
        if len(runs) >= count and not live:
            return most
        assert time.monotonic() < deadline, f"{len(runs)} run(s), {live} live"
        time.sleep(0.1)


def test_a_detached_sweep_launches_every_run_after_its_launcher_is_killed(home, tmp_path,
                                                                           capsys):
    sweep = seeded_sweep(home, tmp_path, ["m-a", "m-bb"], max_parallel=2, tasks=("go", "stop"))
    launcher = subprocess.Popen([sys.executable, "-m", "ml_agent", "sweep", str(sweep)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    sweep_id = launcher.stdout.readline().strip()
    os.killpg(launcher.pid, signal.SIGHUP)  # the launcher's terminal closes
    launcher.wait()
    launcher.stdout.close()
    launcher.stderr.close()
    assert sweep_id.startswith("sw-"), sweep_id
    pid = SweepRecord.load(sweep_id).driver_pid
    assert pid and driver.is_driver(pid, sweep_id)
    for leak in (f"/proc/{pid}/environ", f"/proc/{pid}/cmdline"):  # the key came on stdin
        assert b"sk-ant-host-key" not in Path(leak).read_bytes()

    assert main(["sweep", "--resume", sweep_id]) == 1  # one driver per sweep at a time
    assert f"sweep {sweep_id} is already being launched by its driver (pid {pid})" \
        in capsys.readouterr().err

    backend = LocalBackend(home)
    assert wait_for_runs(backend, sweep_id, 4) <= 2
    runs = [r for r in backend.ps() if r.sweep == sweep_id]
    assert len(runs) == 4 and {r.status for r in runs} == {"succeeded"}
    planned = {r["run_id"]: r for r in SweepRecord.load(sweep_id).runs}
    assert sorted((r["task"], r["label"]) for r in planned.values()) == [
        ("go", "r00-m-a"), ("go", "r01-m-bb"), ("stop", "r02-m-a"), ("stop", "r03-m-bb")]
    for run in runs:  # the sweep's own Plans (run_plan), through the detached driver
        folder = home / "volumes" / "sandbox-data" / "runs" / run.run_id
        entry = planned[run.run_id]
        assert (folder / "task.txt").read_text() == entry["task"]  # its own, as written
        assert json.loads((folder / "trackio.json").read_text()) == [sweep_id, entry["label"]]
    deadline = time.monotonic() + 30
    while driver.is_driver(pid, sweep_id):  # done: the driver exits, and notes it
        assert time.monotonic() < deadline
        time.sleep(0.1)
    record = SweepRecord.load(sweep_id)
    assert record.pending() == [] and record.driver_pid is None
    log = driver.log_path(sweep_id).read_text()
    assert "4 run(s) launched" in log and "sk-ant-host-key" not in log


def test_stop_sweep_ends_its_detached_driver(home, tmp_path, capsys):
    sweep = seeded_sweep(home, tmp_path, ["m-a", "m-bb", "m-ccc", "m-dddd"], max_parallel=1)
    assert main(["sweep", str(sweep)]) == 0
    out, err = capsys.readouterr()
    sweep_id = out.strip()
    assert f"ml-agent ps --sweep {sweep_id}" in err and f"ml-agent results {sweep_id}" in err
    pid = SweepRecord.load(sweep_id).driver_pid
    assert pid and driver.is_driver(pid, sweep_id)

    assert main(["stop", "--sweep", sweep_id]) == 0
    assert not driver.is_driver(pid, sweep_id)
    backend = LocalBackend(home)
    wait_for_runs(backend, sweep_id, 0)
    runs = [r for r in backend.ps() if r.sweep == sweep_id]
    assert len(runs) < 4 and {r.status for r in runs} <= {"stopped", "succeeded"}
    record = SweepRecord.load(sweep_id)
    assert record.stopped and record.driver_pid is None


#: A base config whose value comes from the launcher's environment, through `extends:`.
READS_ENV = """\
extends: base.yaml
sandbox:
  env:
    DATASET: ${env:ML_AGENT_SWEEP_TEST_DATASET}
"""


def test_a_detached_driver_gets_the_variables_its_configs_read(home, tmp_path, capsys,
                                                                monkeypatch):
    """The driver plans each run from the base config, as the launcher did: a `${env:NAME}`
    it reads reaches the driver (on its stdin, like the credentials), so every run gets the
    value; a shell without it is told at `ml-agent sweep` time, not in the driver's log."""
    sweep = seeded_sweep(home, tmp_path, ["m-a", "m-bb"], max_parallel=1)
    (tmp_path / "reads-env.yaml").write_text(READS_ENV)
    sweep.write_text(sweep.read_text().replace("base: base.yaml", "base: reads-env.yaml"))
    value = "imdb-slice-7f3e"
    monkeypatch.setenv("ML_AGENT_SWEEP_TEST_DATASET", value)
    assert main(["sweep", str(sweep)]) == 0
    sweep_id = capsys.readouterr().out.strip()
    pid = SweepRecord.load(sweep_id).driver_pid
    assert pid
    for leak in (f"/proc/{pid}/environ", f"/proc/{pid}/cmdline"):
        with contextlib.suppress(OSError):  # (it may be done already)
            assert value.encode() not in Path(leak).read_bytes()
    deadline = time.monotonic() + 90
    while driver.is_driver(pid, sweep_id):  # (`ps` shows a run failed until its supervisor's
        assert time.monotonic() < deadline  # pid is noted: wait for the launches first)
        time.sleep(0.1)
    backend = LocalBackend(home)
    wait_for_runs(backend, sweep_id, 2)
    runs = [r for r in backend.ps() if r.sweep == sweep_id]
    log = driver.log_path(sweep_id).read_text()
    assert {r.status for r in runs} == {"succeeded"} and len(runs) == 2, log
    for run in runs:
        folder = home / "volumes" / "sandbox-data" / "runs" / run.run_id
        assert (folder / "dataset.txt").read_text() == value
    assert value not in log

    # A sweep not yet launched, resumed from a shell without the variable: refused at once.
    record = SweepRecord.new(load_sweep(sweep))
    record.save()
    monkeypatch.delenv("ML_AGENT_SWEEP_TEST_DATASET")
    assert main(["sweep", "--resume", record.sweep_id]) == 1
    err = capsys.readouterr().err
    assert "reads-env.yaml:4:14: sandbox.env.DATASET: environment variable " \
        "ML_AGENT_SWEEP_TEST_DATASET is not set" in err, err
    assert not driver.log_path(record.sweep_id).exists()
    assert SweepRecord.load(record.sweep_id).driver_pid is None


def test_stop_sweep_of_a_sweep_launched_elsewhere_stops_its_runs_here_and_says_so(home,
                                                                               capsys):
    """This machine has the sweep's runs in its registry but not the sweep's record (its
    driver runs on the machine that launched it)."""
    from tests.local.helpers import AGENT as INTERACTIVE  # lives until it is stopped

    sweep_id = "sw-20261204-1900-abc123"
    plan = seeded_plan(home, INTERACTIVE)
    plan = plan.for_launch(plan.launch.run_id, sweep=sweep_id)
    backend = LocalBackend(home)
    run = backend.up(plan, task=None, detach=True)
    assert main(["stop", "--sweep", "sw-nope"]) == 1  # neither a record nor a run of it
    assert "no sweep 'sw-nope'" in capsys.readouterr().err

    assert main(["stop", "--sweep", sweep_id[:16]]) == 0
    err = capsys.readouterr().err
    assert f"sweep {sweep_id} was launched from another machine" in err
    assert f"run {run.run_id} stopped" in err
    assert [r.status for r in backend.ps()] == ["stopped"]
