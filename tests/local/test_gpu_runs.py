"""Local runs on a machine with two GPUs (a fake driver root: ML_AGENT_GPU_ROOT) with real
supervisors, flock and bwrap sandboxes (a scripted stand-in agent, no model): each run gets
GPUs of its own, as the sandbox sees them; a run that finds none free is refused with the
runs holding them; sharing runs coexist; a crash frees its GPUs; a resumed run takes GPUs
again; a sweep launches no more at once than the GPUs hold, and waits for GPUs that runs
outside it hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ml_agent.backends.local import LocalBackend, doctor, registry
from ml_agent.config import load_config
from ml_agent.contracts import CONFIGS_DIR
from ml_agent.errors import GpusBusy
from ml_agent.runs import driver
from ml_agent.runs.sweepfile import load_sweep
from ml_agent.runs.sweeps import Driver, SweepRecord
from tests.local.helpers import GPUS, fake_gpu_root, seeded_plan

pytestmark = pytest.mark.slow

UUID0, UUID1 = GPUS[0][2], GPUS[1][2]

#: Writes what the sandbox got (its CUDA variables, its NVIDIA device files), says ready;
#: interactive: lives until stopped; one-shot: works 1.5 s.
AGENT = """
import json, os, sys, time
run_dir = os.environ["ML_AGENT_RUN_DIR"]
os.makedirs(run_dir, exist_ok=True)
seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
seen["dev"] = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
json.dump(seen, open(run_dir + "/gpu.tmp", "w"))
os.replace(run_dir + "/gpu.tmp", run_dir + "/gpu.json")
print(json.dumps({"type": "ready", "seq": 1, "ts": time.time()}), flush=True)
if "--one-shot" in sys.argv:
    sys.stdin.readline()
    time.sleep(1.5)
    sys.exit(0)
for line in sys.stdin:
    pass
"""


@pytest.fixture
def backend(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ML_AGENT_HOME", str(home))
    monkeypatch.setenv("ML_AGENT_GPU_ROOT", str(fake_gpu_root(tmp_path / "gpu-root")))
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-key")
    backend = LocalBackend(home)
    yield backend
    for path in (home / "sweeps").glob("sw-*.json"):
        driver.end(path.stem, home)
    for record in backend.ps():
        backend.stop(record.run_id)


def gpu_plan(home, *, gpu: str = "A10", share: bool = False):
    plan = seeded_plan(home, AGENT)
    launch = plan.launch.model_copy(update={"share_gpus": share})
    return plan.model_copy(update={"sandbox": plan.sandbox.model_copy(update={"gpu": gpu}),
                                   "launch": launch})


def seen(backend, run_id: str) -> dict:
    """What the run's sandbox saw (written by the agent inside)."""
    path = backend.home / "volumes" / "sandbox-data" / "runs" / run_id / "gpu.json"
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            folder = registry.RunPaths.of(run_id, backend.home).folder
            logs = {p.name: p.read_text(errors="replace")[-2000:] for p in folder.glob("*.log")}
            raise AssertionError(f"{run_id} wrote no gpu.json: {backend.record(run_id)}; "
                                 f"{sorted(p.name for p in path.parent.glob('*'))}; {logs}")
        time.sleep(0.05)
    return json.loads(path.read_text())


def up(backend, plan) -> str:
    backend.up(plan, task=None, detach=True)
    return plan.launch.run_id


def test_each_run_gets_its_own_gpu_a_third_is_refused_and_sharers_coexist(backend):
    a = up(backend, gpu_plan(backend.home))
    b = up(backend, gpu_plan(backend.home))
    assert f"run {a} gets GPU 0 (NVIDIA A10)" in backend.notes
    assert f"run {b} gets GPU 1 (NVIDIA A10)" in backend.notes
    seen_a, seen_b = seen(backend, a), seen(backend, b)
    assert seen_a["CUDA_VISIBLE_DEVICES"] == UUID0 and seen_b["CUDA_VISIBLE_DEVICES"] == UUID1
    assert seen_a["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert {"nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"} <= set(seen_a["dev"])
    assert [g["uuid"] for g in backend.record(a).gpus] == [UUID0]  # `ps --json` shows it

    third = gpu_plan(backend.home)
    with pytest.raises(GpusBusy, match=(
            rf"sandbox.gpu asks for 1 GPU, but only 0 of this machine's 2 GPUs are free: "
            rf"GPU 0 \(NVIDIA A10\) is held by run {a}; GPU 1 \(NVIDIA A10\) is held by run "
            rf"{b}; wait for a run to end, or stop one \(`ml-agent stop {a}`\), or let runs "
            rf"share GPUs \(`ml-agent up --share-gpus`")):
        backend.up(third, task=None, detach=True)
    assert not registry.RunPaths.of(third.launch.run_id, backend.home).folder.exists()
    with pytest.raises(GpusBusy, match=rf"held by run {a}; .* stop one"):
        backend.up(gpu_plan(backend.home, share=True), task=None, detach=True)

    backend.stop(a)  # frees GPU 0
    s1 = up(backend, gpu_plan(backend.home, share=True))
    s2 = up(backend, gpu_plan(backend.home, share=True))
    assert seen(backend, s1)["CUDA_VISIBLE_DEVICES"] == UUID0
    assert seen(backend, s2)["CUDA_VISIBLE_DEVICES"] == UUID0
    assert {backend.record(s).status for s in (s1, s2, b)} == {"running"}
    with pytest.raises(GpusBusy, match=rf"GPU 0 \(NVIDIA A10\) is held by run {s1}, {s2}"):
        backend.up(gpu_plan(backend.home), task=None, detach=True)  # not on sharers' GPUs

    pid = registry.supervisor_pid(registry.find(b, backend.home))
    os.kill(pid, signal.SIGKILL)  # a crash
    deadline = time.monotonic() + 30
    while not registry.exited(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c = up(backend, gpu_plan(backend.home))  # it left nothing held
    assert seen(backend, c)["CUDA_VISIBLE_DEVICES"] == UUID1


def test_two_gpus_per_run_and_more_than_the_machine_has(backend):
    run = up(backend, gpu_plan(backend.home, gpu="A10:2"))
    assert seen(backend, run)["CUDA_VISIBLE_DEVICES"] == f"{UUID0},{UUID1}"
    with pytest.raises(Exception, match=r"sandbox.gpu is 'A10:3' but this machine has 2 NVIDIA "
                                        r"GPUs .*ask for at most 2"):
        backend.up(gpu_plan(backend.home, gpu="A10:3"), task=None, detach=True)


def test_a_resumed_gpu_run_takes_gpus_again(backend):
    a = up(backend, gpu_plan(backend.home))
    assert seen(backend, a)["CUDA_VISIBLE_DEVICES"] == UUID0
    backend.stop(a)
    folder = backend.home / "volumes" / "sandbox-data" / "runs" / a
    (folder / "gpu.json").unlink()
    (folder / "result.json").write_text(json.dumps(  # what a real agent leaves to continue
        {"run_id": a, "status": "stopped", "session_id": "5b0f9c1e-2f0a-4c1e-9a33-0a1b2c"}))
    up(backend, gpu_plan(backend.home))  # GPU 0 is taken meanwhile
    backend.resume(a, task=None, detach=True)
    assert seen(backend, a)["CUDA_VISIBLE_DEVICES"] == UUID1  # what the new leg's sandbox got
    assert [g["index"] for g in backend.record(a).gpus] == [1]


def test_a_gpu_sweep_launches_no_more_than_the_gpus_hold_and_waits_for_busy_ones(
        backend, tmp_path):
    """3 runs, max_parallel 3, 2 GPUs, and a run outside the sweep holding GPU 0 at first:
    the driver waits for it (and says so), never has two runs on one GPU, and at most 2 of
    its runs live at once."""
    outside = up(backend, gpu_plan(backend.home))  # GPU 0
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"base: {CONFIGS_DIR / 'local.yaml'}\ntasks: [go]\n"
                          "axes:\n  agent.model: [m-a, m-bb, m-ccc]\nmax_parallel: 3\n")
    record = SweepRecord.new(load_sweep(sweep_file))
    record.save()

    def make_plan(base, overrides, *, sweep_id, allow, label):
        plan = gpu_plan(backend.home)
        model = load_config(base, overrides).agent.model
        plan = plan.model_copy(update={"agent": plan.agent.model_copy(update={"model": model})})
        return plan.for_launch(plan.launch.run_id, sweep=sweep_id, trackio_run_name=label)

    said: list[str] = []

    def sleep(seconds: float) -> None:
        if any(m.startswith("waiting for GPUs") for m in said) and \
                backend.record(outside).status == "running":
            backend.stop(outside)  # the outside run ends: its GPU is free
        time.sleep(seconds)

    samples: list[list] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            live = [r for r in backend.ps() if r.status in ("starting", "running")]
            samples.append([(r.run_id, g["uuid"]) for r in live for g in r.gpus])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        launched = Driver(record, lambda _: backend, say=said.append, poll_s=0.2,
                          sleep=sleep, make_plan=make_plan).run()
        deadline = time.monotonic() + 60
        while any(r.status in ("starting", "running") for r in backend.ps()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        done.set()
        sampler.join()
    assert len(launched) == 3
    assert any(m.startswith("waiting for GPUs") and f"held by run {outside}" in m
               for m in said), said
    for live in samples:  # never two runs on one GPU; at most 2 of the sweep's runs
        uuids = [uuid for _, uuid in live]
        assert len(uuids) == len(set(uuids)), live
        assert len({run for run, _ in live if run in launched}) <= 2, live
    runs = {r.run_id: r for r in backend.ps() if r.sweep == record.sweep_id}
    assert {r.status for r in runs.values()} == {"succeeded"}
    assert {seen(backend, run)["CUDA_VISIBLE_DEVICES"] for run in runs} <= {UUID0, UUID1}


def test_a_sweep_that_shares_gpus_runs_beside_each_other_not_beside_a_run_alone(
        backend, tmp_path):
    outside = up(backend, gpu_plan(backend.home))  # GPU 0, alone
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"base: {CONFIGS_DIR / 'local.yaml'}\ntasks: [go]\n"
                          "axes:\n  agent.model: [m-a, m-bb]\nmax_parallel: 2\n"
                          "share_gpus: true\n")
    record = SweepRecord.new(load_sweep(sweep_file))
    assert record.share_gpus
    record.save()

    def make_plan(base, overrides, *, sweep_id, allow, label):
        plan = gpu_plan(backend.home)
        return plan.for_launch(plan.launch.run_id, sweep=sweep_id, trackio_run_name=label)

    launched = Driver(record, lambda _: backend, poll_s=0.2, make_plan=make_plan).run()
    assert len(launched) == 2
    for run in launched:
        assert [(g["uuid"], g["shared"]) for g in backend.record(run).gpus] == [(UUID1, True)]
        assert seen(backend, run)["CUDA_VISIBLE_DEVICES"] == UUID1
    assert backend.record(outside).status == "running"


def cli(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODAL_", "ANTHROPIC_", "CLAUDE"))}
    env.update(ML_AGENT_HOME=str(home), COLUMNS="400", ANTHROPIC_API_KEY="sk-ant-host-key",
               MODAL_CONFIG_PATH=str(home / "no-modal.toml"))
    return subprocess.run([sys.executable, "-m", "ml_agent", *args], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_up_share_gpus_says_what_the_run_got_and_doctor_who_holds_each(backend):
    seeded_plan(backend.home, AGENT)  # a no-pip image, its venv in the cache: no build
    image = ["--set", f"image.layers=[{{file: {{src: {backend.home / 'test_agent.py'}, "
                      "dest: /agent/test_agent.py}}]",
             "--set", "agent.entrypoint=/agent/test_agent.py", "--set", "sandbox.gpu=A10"]
    out = cli(backend.home, "up", "--detach", "--share-gpus", *image)
    assert out.returncode == 0, out.stderr
    run = out.stdout.strip()
    assert f"run {run} gets GPU 0 (NVIDIA A10), shared with other sharing runs" in out.stderr
    [listed] = json.loads(cli(backend.home, "ps", "--json").stdout)
    assert [(g["index"], g["uuid"], g["shared"]) for g in listed["gpus"]] == [(0, UUID0, True)]
    assert doctor.gpu_check(backend.home).detail == (
        f"2 GPUs: 0 NVIDIA A10 (held by run {run}); 1 NVIDIA A10 (free); 7 device files")

    out = cli(backend.home, "up", "--detach", "--share-gpus")  # the CPU config
    assert out.returncode == 2 and "GPUs are shared on the local backend only" in out.stderr
