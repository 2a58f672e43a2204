"""`ml-agent sweep` on the Modal backend (fake control plane): every run launched, and one
driver builds the sweep's image once, not once per run (issue 15's launch-time goal)."""

from __future__ import annotations

from ml_agent.backends.modal import ModalBackend
from ml_agent.cli import main
from ml_agent.contracts import CONFIGS_DIR
from ml_agent.runs.sweeps import SweepRecord, sweeps_dir
from tests.modal.plans import a10_plan


def test_a_sweep_on_modal_launches_every_run_and_builds_its_image_once(modal_with_secrets,
                                                                       tmp_path, capsys):
    fake = modal_with_secrets
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {CONFIGS_DIR / 'a10.yaml'}\ntasks: [a, b, c]\nmax_parallel: 10\n")
    assert main(["sweep", str(sweep), "--foreground"]) == 0
    assert "3 run(s) launched" in capsys.readouterr().err
    [path] = sweeps_dir().glob("sw-*.json")
    record = SweepRecord.load(path.stem)
    tagged = {s.tags["ml-agent-run"] for s in fake.sandboxes.values()}
    assert tagged == {r["run_id"] for r in record.runs} and len(tagged) == 3
    labels = {r["run_id"]: r["label"] for r in record.runs}
    for sandbox in fake.sandboxes.values():  # one trackio project, one run name each
        assert sandbox.env["ML_AGENT_TRACKIO_PROJECT"] == record.sweep_id
        assert sandbox.env["ML_AGENT_TRACKIO_RUN_NAME"] == labels[sandbox.tags["ml-agent-run"]]
    builds = len(fake.requests("ImageGetOrCreate"))

    assert main(["up", str(CONFIGS_DIR / "a10.yaml"), "--detach"]) == 0  # a process of its own
    one_run = len(fake.requests("ImageGetOrCreate")) - builds
    assert builds < 2 * one_run  # three runs (and the app's deploy) built less than two


def test_an_edited_file_layer_is_built_again_by_the_same_backend(modal_with_secrets, tmp_path):
    fake = modal_with_secrets
    backend = ModalBackend()
    backend.up(a10_plan(tmp_path, "20261126-0315-a1b2c3"), task=None, detach=True)
    mounts = len(fake.requests("MountGetOrCreate"))
    backend.up(a10_plan(tmp_path, "20261126-0316-a1b2c3"), task=None, detach=True)
    assert len(fake.requests("MountGetOrCreate")) == mounts  # unchanged: built once
    plan = a10_plan(tmp_path, "20261126-0317-a1b2c3")  # (writes agent.py afresh)
    (tmp_path / "agent" / "agent.py").write_text("print('edited')\n")
    backend.up(plan, task=None, detach=True)
    assert len(fake.requests("MountGetOrCreate")) > mounts


def test_a_detached_sweep_on_modal_gets_its_credentials_and_launches_every_run(
        modal_with_secrets, tmp_path, capsys):
    """The driver is a process of its own: the Modal token reaches it on stdin, the server's
    address in its environment."""
    import time

    from ml_agent.runs import driver

    fake = modal_with_secrets
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {CONFIGS_DIR / 'a10.yaml'}\ntasks: [a, b, c]\nmax_parallel: 10\n")
    assert main(["sweep", str(sweep)]) == 0
    sweep_id = capsys.readouterr().out.strip()
    deadline = time.monotonic() + 60
    while (pid := SweepRecord.load(sweep_id).driver_pid) and driver.is_driver(pid, sweep_id):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    log = driver.log_path(sweep_id).read_text()
    assert "3 run(s) launched" in log, log
    assert fake.token_secret not in log
    tagged = {s.tags["ml-agent-run"] for s in fake.sandboxes.values()}
    assert tagged == {r["run_id"] for r in SweepRecord.load(sweep_id).runs}


def test_a_resumed_sweep_run_keeps_its_trackio_names(modal_run_end, tmp_path, monkeypatch):
    """`up --resume` of a sweep's run on Modal: the new leg's plan comes back from the app's
    state, and its sandbox logs to the same trackio project and run name."""
    import json

    from ml_agent.contracts import ROOT
    from tests.modal.test_resume_modal import SESSION, _env_of, ml_agent, play_agent

    fake = modal_run_end
    monkeypatch.chdir(ROOT)
    data = tmp_path / "data"
    fake.on_stdin = play_agent(data, 0.1, session=SESSION, first_seq=1)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {CONFIGS_DIR / 'a10.yaml'}\ntasks: [train]\n"
                     "axes: {agent.max_turns: [7]}\n")
    assert main(["sweep", str(sweep), "--foreground"]) == 0
    [path] = sweeps_dir().glob("sw-*.json")
    [entry] = SweepRecord.load(path.stem).runs
    (record,) = json.loads(ml_agent("ps", "--backend", "modal", "--json").stdout)
    assert record["run_id"] == entry["run_id"] and record["status"] == "succeeded"

    fake.on_stdin = play_agent(data, 0.1, session=SESSION, first_seq=4)
    resumed = ml_agent("up", "--resume", entry["run_id"], "--task", "evaluate")
    assert resumed.exit_code == 0, resumed.output
    for create in fake.requests("SandboxCreate"):  # both legs
        env = _env_of(fake, create)
        assert env["ML_AGENT_TRACKIO_PROJECT"] == path.stem
        assert env["ML_AGENT_TRACKIO_RUN_NAME"] == entry["label"] == "r00-7"
    assert len(fake.requests("SandboxCreate")) == 2
