"""`up --resume`: which runs can be resumed, the budget left, the session a run continues.

The end-to-end resume (a real Claude CLI continuing its session in a new sandbox) is in
tests/test_e2e.py; here the registry and the run folder are written as `up` and the agent
write them, and nothing runs but the CLI (and a stand-in for a live supervisor).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_agent import resume
from ml_agent.backends.local import registry
from ml_agent.contracts import RunRecord
from ml_agent.errors import BackendError
from tests.local.helpers import local_plan

RUN = "20261126-0315-a1b2c3"
S1, S2, S3 = ("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
              "33333333-3333-4333-8333-333333333333")


def _record(**changes: object) -> RunRecord:
    base = RunRecord(run_id=RUN, backend="local", app="ml-agent", config="configs/local.yaml",
                     config_hash="c", gpu=None, status="succeeded", created_at=time.time(),
                     ended_at=time.time(), run_dir=f"/data/runs/{RUN}", cost_usd=0.25)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def _sessions(data: Path, *names: str) -> Path:
    folder = data / "runs" / RUN / "claude" / "projects" / "-app"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_text("{}\n")
        os.utime(folder / name, (1_000_000 + i, 1_000_000 + i))  # later names are newer
    return folder


def test_the_session_comes_from_result_json_first(tmp_path: Path) -> None:
    _sessions(tmp_path, f"{S2}.jsonl")
    assert resume.find_session(tmp_path, RUN, {"session_id": S1}) == S1


def test_after_a_crash_the_newest_session_file_is_continued(tmp_path: Path) -> None:
    folder = _sessions(tmp_path, f"{S1}.jsonl", f"{S2}.jsonl", "not-a-session.jsonl",
                       "notes.txt")
    (folder / f"{S3}.jsonl").symlink_to("/etc/passwd")  # planted by the agent: not a session
    assert resume.find_session(tmp_path, RUN, {"session_id": None}) == S2


def test_a_linked_projects_folder_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _sessions(elsewhere, f"{S1}.jsonl")
    (tmp_path / "runs" / RUN / "claude").mkdir(parents=True)
    (tmp_path / "runs" / RUN / "claude" / "projects").symlink_to(
        elsewhere / "runs" / RUN / "claude" / "projects")
    assert resume.newest_session(tmp_path, RUN) is None


def test_without_files_the_last_result_event_names_the_session(tmp_path: Path) -> None:
    events = [{"type": "ready", "seq": 1}, {"type": "result", "seq": 5, "session_id": S1},
              {"type": "result", "seq": 9, "session_id": "$(reboot)"}]
    assert resume.find_session(tmp_path, RUN, None, events) == S1
    with pytest.raises(BackendError, match="no conversation to continue"):
        resume.find_session(tmp_path, RUN, None, [])


def test_the_budget_left_is_the_budget_minus_the_proxys_metering() -> None:
    assert resume.remaining_budget(_record(cost_usd=0.25), 1.0, None) == 0.75
    # A crash can leave either figure behind: the higher one counts.
    assert resume.remaining_budget(_record(cost_usd=0.25), 1.0, {"cost_usd": 0.5}) == 0.5
    assert resume.remaining_budget(_record(), None, None) is None
    with pytest.raises(BackendError, match=r"spent its budget \(proxy.budget_usd \$1;"):
        resume.remaining_budget(_record(cost_usd=1.0), 1.0, None)


def test_a_new_budget_replaces_the_runs_and_must_exceed_what_it_cost() -> None:
    assert resume.remaining_budget(_record(cost_usd=1.0), 1.0, None, raised_to=3.0) == 2.0
    # A run started without a budget gets one.
    assert resume.remaining_budget(_record(cost_usd=0.5), None, None, raised_to=2.0) == 1.5
    for raised_to in (1.0, 0.5):
        with pytest.raises(BackendError, match=r"has already cost \$1.0000: --budget is the "
                           r"run's new total budget and must be more than that"):
            resume.remaining_budget(_record(cost_usd=1.0), 5.0, None, raised_to=raised_to)


# -- the CLI ---------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A local run that ended, as `up` and the supervisor leave it (budget $1)."""
    home = tmp_path / "home"
    paths = registry.RunPaths.of(RUN, home)
    paths.folder.mkdir(parents=True)
    data = home / "volumes" / "sandbox-data"
    (data / "runs" / RUN).mkdir(parents=True)
    plan = local_plan("proxy.budget_usd=1", run_id=RUN)
    registry.write_json(paths.launch, {"plan": plan.model_dump(mode="json"), "task": "t",
                                       "token": "mla-run-x", "host": {"volumes": {
                                           "data": str(data)}}}, mode=0o600)
    record = _record(status="starting")  # as `up` writes it, then the supervisor
    record.new_leg(record.created_at)
    record.status, record.sandbox_id, record.ended_at = "succeeded", "bwrap:1", time.time()
    registry.write_record(paths, record)
    return home


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "ANTHROPIC_"))}
    env.update(ML_AGENT_HOME=str(home), COLUMNS="100",
               MODAL_CONFIG_PATH=str(home / "no-modal.toml"))
    return subprocess.run([sys.executable, "-m", "ml_agent", *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def live(home: Path) -> Iterator[None]:
    """The run is live: its supervisor (a stand-in with the supervisor's command line)."""
    paths = registry.RunPaths.of(RUN, home)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "ml_agent.backends.local.supervisor", str(paths.folder)])
    registry.write_pid(paths, proc.pid)
    record = registry.read_record(paths)
    record.status = "running"
    registry.write_record(paths, record)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def test_resuming_a_running_run_says_to_attach(home: Path, live: None) -> None:
    out = cli(home, "up", "--resume", RUN[:13], "--task", "more")
    assert out.returncode == 1, out.stderr
    assert out.stderr == (f"error: run {RUN} is still running: `ml-agent attach {RUN}` joins "
                          f"it (`ml-agent stop {RUN}` ends it, then it can be resumed)\n")


def test_resuming_a_run_whose_budget_is_spent_names_the_budget(home: Path) -> None:
    paths = registry.RunPaths.of(RUN, home)
    record = registry.read_record(paths)
    record.cost_usd = 1.0004
    registry.write_record(paths, record)
    out = cli(home, "up", "--resume", RUN, "--task", "more")
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: run {RUN} has spent its budget (proxy.budget_usd $1; "
                                 "cost so far $1.0004)"), out.stderr
    assert len(registry.read_record(paths).legs) == 1  # nothing was started


def test_a_spent_budget_is_raised_with_budget_for_this_leg_and_the_next(home: Path,
                                                                        monkeypatch) -> None:
    from ml_agent.backends.local import LocalBackend

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-key")  # the local proxy's (check)
    paths = registry.RunPaths.of(RUN, home)
    record = registry.read_record(paths)
    record.cost_usd = 1.0004
    registry.write_record(paths, record)
    data = home / "volumes" / "sandbox-data"
    (data / "runs" / RUN / "result.json").write_text(json.dumps({"session_id": S1}))

    out = cli(home, "up", "--resume", RUN, "--budget", "1", "--task", "more")
    assert out.returncode == 1
    assert out.stderr == (f"error: run {RUN} has already cost $1.0004: --budget is the run's "
                          "new total budget and must be more than that (got $1)\n")
    assert "--budget USD" in cli(home, "up", "--resume", RUN, "--task", "more").stderr
    assert len(registry.read_record(paths).legs) == 1  # nothing was started

    # What the new leg is launched with (the supervisor puts the plan's budget in the run
    # token's record and the agent's ML_AGENT_BUDGET_USD): what is left of the new budget.
    backend = LocalBackend(home)
    backend.prepare_resume(RUN, "more", budget_usd=3.0)
    launch = json.loads(paths.launch.read_text())
    assert launch["plan"]["proxy"]["budget_usd"] == pytest.approx(3.0 - 1.0004)
    assert launch["run_budget_usd"] == 3.0
    # The next leg, without --budget, keeps the raised budget.
    record = registry.read_record(paths)
    record.cost_usd, record.status = 2.5, "succeeded"
    registry.write_record(paths, record)
    backend.prepare_resume(RUN, "again")
    launch = json.loads(paths.launch.read_text())
    assert launch["plan"]["proxy"]["budget_usd"] == pytest.approx(0.5)


@pytest.mark.parametrize(("args", "says"), [
    (("--task", "x", "--budget", "5"), "goes with --resume RUN"),
    (("--resume", RUN, "--task", "x", "--budget", "-1"), "must be a positive amount in USD"),
    (("--resume", RUN, "--task", "x", "--budget", "nan"), "must be a positive amount in USD"),
])
def test_budget_is_a_positive_amount_for_a_resumed_run(home: Path, args, says) -> None:
    out = cli(home, "up", *args)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert "--budget" in " ".join(cli(home, "up", "--help").stdout.split())


def test_resume_takes_no_config_of_its_own(home: Path) -> None:
    out = cli(home, "up", "configs/local.yaml", "--resume", RUN, "--task", "more")
    assert out.returncode == 2 and "--resume continues a run with its own config" in out.stderr


def test_ps_counts_the_legs_of_a_resumed_run(home: Path) -> None:
    paths = registry.RunPaths.of(RUN, home)
    record = registry.read_record(paths)
    assert "LEGS" not in cli(home, "ps").stdout  # one leg each: no column
    record.new_leg(time.time())
    record.status, record.sandbox_id = "timeout", "bwrap:2"
    registry.write_record(paths, record)
    table = cli(home, "ps").stdout
    assert "LEGS" in table.splitlines()[0] and table.split()[-1] == "2"
    rows = json.loads(cli(home, "ps", "--json").stdout)
    assert [leg["status"] for leg in rows[0]["legs"]] == ["succeeded", "timeout"]


def test_a_record_from_before_legs_keeps_its_first_leg() -> None:
    record = _record(sandbox_id="bwrap:7", status="timeout")
    record.new_leg(time.time())
    record.sandbox_id = "bwrap:8"
    assert [(leg["sandbox_id"], leg["status"]) for leg in record.to_dict()["legs"]] == [
        ("bwrap:7", "timeout"), ("bwrap:8", "starting")]
    assert record.status == "starting"


def test_attach_to_a_resumed_run_follows_the_new_leg_past_the_old_result(home: Path,
                                                                         live: None) -> None:
    # The events of a resumed run hold the first leg's `result`; the new leg's `ready`
    # says the run goes on, so attach follows it to its own end.
    paths = registry.RunPaths.of(RUN, home)

    def line(seq: int, type_: str, **payload: object) -> str:
        return json.dumps({"type": type_, "seq": seq, "ts": 1.0, **payload}) + "\n"

    result = {"status": "succeeded", "cost_usd": 0.1, "usage": {}, "turns": 1,
              "duration_s": 1.0, "session_id": S1}
    paths.events.write_text(
        line(1, "ready", run_id=RUN, model="m", mode="one-shot")
        + line(2, "assistant_text", text="first leg answer")
        + line(3, "result", **result)
        + line(4, "ready", run_id=RUN, model="m", mode="one-shot")
        + line(5, "assistant_text", text="second leg answer")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "ANTHROPIC_"))}
    env.update(ML_AGENT_HOME=str(home), COLUMNS="100",
               MODAL_CONFIG_PATH=str(home / "no-modal.toml"))
    with subprocess.Popen([sys.executable, "-m", "ml_agent", "attach", RUN], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as attach:
        time.sleep(1.5)  # the replay is done: attach now follows the live leg
        assert attach.poll() is None, attach.communicate()
        with paths.events.open("a") as events:
            events.write(line(6, "assistant_text", text="second leg done")
                         + line(7, "result", **{**result, "status": "failed"}))
        record = registry.read_record(paths)
        record.status = "failed"  # as the supervisor records the end of the leg
        registry.write_record(paths, record)
        out, err = attach.communicate(timeout=30)
    assert "first leg answer" in out and "second leg done" in out
    assert f"run {RUN} failed" in out + err  # the new leg's result, not the first one's
