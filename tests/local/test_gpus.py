"""The GPU inventory read from the driver's files (a fake root in the real format), and the
leases: real flock, held by a real process, freed when it dies."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from ml_agent.backends.local import gpus
from ml_agent.backends.local.backend import spawn_detached
from ml_agent.errors import GpusBusy
from ml_agent.runs.sweeps import machine_parallel
from tests.local.helpers import GPUS, fake_gpu_root, gpu_information


@pytest.fixture
def root(tmp_path, monkeypatch):
    root = fake_gpu_root(tmp_path / "gpu-root")
    monkeypatch.setenv(gpus.ROOT_ENV, str(root))
    return root


def test_the_inventory_is_in_bus_order_with_uuid_model_and_minor(root):
    found = gpus.inventory()
    assert [(g.index, g.bus, g.model, g.minor) for g in found] == [
        (0, "0000:17:00.0", "NVIDIA A10", 1), (1, "0000:65:00.0", "NVIDIA A10", 0)]
    assert [g.uuid for g in found] == [GPUS[0][2], GPUS[1][2]]
    assert found[0].describe() == "GPU 0 (NVIDIA A10)"
    assert gpus.device_files() == (
        "/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0",
        "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-caps/nvidia-cap1")


def test_an_excluded_gpu_is_left_out_and_one_without_uuid_is_named_by_index(root):
    base = root / gpus.GPUS_DIR
    (base / "0000:b3:00.0").mkdir()
    (base / "0000:b3:00.0" / "information").write_text(
        gpu_information("NVIDIA L4", "GPU-0000", "0000:b3:00.0", 2, excluded="Yes"))
    (base / "0000:03:00.0").mkdir()  # an old driver: no UUID yet
    (base / "0000:03:00.0" / "information").write_text(
        gpu_information("Tesla T4", "??", "0000:03:00.0", 3))
    found = gpus.inventory()
    assert [(g.index, g.model, g.uuid) for g in found] == [
        (0, "Tesla T4", None), (1, "NVIDIA A10", GPUS[0][2]), (2, "NVIDIA A10", GPUS[1][2])]
    assert found[0].cuda_id == "0" and found[0].key == "bus-0000:03:00.0"


def test_no_driver_no_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv(gpus.ROOT_ENV, str(tmp_path))
    assert gpus.inventory() == [] and gpus.device_files() == ()


def test_the_sandbox_names_its_gpus_by_uuid_in_pci_order():
    leased = [{"index": 1, "uuid": "GPU-b"}, {"index": 0, "uuid": "GPU-a"}]
    assert gpus.cuda_env(leased) == {"CUDA_VISIBLE_DEVICES": "GPU-b,GPU-a",
                                     "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert gpus.cuda_env([]) == {}


def test_a_lease_is_held_by_the_process_it_is_handed_to_until_that_dies(root, tmp_path):
    home = tmp_path / "home"
    lease = gpus.take(2, home=home, run_id="20261204-1800-aaaaaa")
    assert [g.index for g in lease.gpus] == [0, 1]
    pid = spawn_detached(["/bin/sleep", "120"], log=tmp_path / "sleep.log", cwd=tmp_path,
                         env={"PATH": os.environ["PATH"]}, keep_fds=lease.fds)
    lease.release()  # the launcher's copies: the sleeping process holds the locks now
    try:
        with pytest.raises(GpusBusy, match=r"asks for 1 GPU, but only 0 of this machine's 2 "
                           r"GPUs are free: GPU 0 \(NVIDIA A10\) is held by run "
                           r"20261204-1800-aaaaaa; GPU 1 .* stop one \(`ml-agent stop "
                           r"20261204-1800-aaaaaa`\), or let runs share GPUs"):
            gpus.take(1, home=home, run_id="20261204-1801-bbbbbb")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:  # it died: the kernel dropped its locks, nothing to clean up
        try:
            again = gpus.take(2, home=home, run_id="20261204-1802-cccccc")
            break
        except GpusBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    again.release()


def test_sharing_leases_coexist_but_never_with_one_held_alone(root, tmp_path):
    home = tmp_path / "home"
    alone = gpus.take(1, home=home, run_id="r-alone")  # GPU 0
    first = gpus.take(1, home=home, run_id="r-s1", shared=True)
    second = gpus.take(1, home=home, run_id="r-s2", shared=True)
    assert [g.index for g in first.gpus] == [g.index for g in second.gpus] == [1]
    with pytest.raises(GpusBusy, match=r"asks for 2 GPUs shared, but only 1 .* free for "
                       r"sharing: GPU 0 \(NVIDIA A10\) is held by run r-alone; wait") as exc:
        gpus.take(2, home=home, run_id="r-s3", shared=True)
    assert "share" not in str(exc.value).split("; wait")[1]  # sharing would not help
    with pytest.raises(GpusBusy, match=r"GPU 1 \(NVIDIA A10\) is held by another process"):
        gpus.take(1, home=home, run_id="r-x")  # sharers write no owner; no registry here
    alone.release()
    first.release()
    second.release()
    both = gpus.take(2, home=home, run_id="r-both")
    both.release()


def test_a_failed_take_keeps_nothing(root, tmp_path):
    home = tmp_path / "home"
    held = gpus.take(1, home=home, run_id="r-one")
    with pytest.raises(GpusBusy):
        gpus.take(2, home=home, run_id="r-two")  # got GPU 1, then gave it back
    other = gpus.take(1, home=home, run_id="r-three")
    assert [g.index for g in other.gpus] == [1]
    held.release()
    other.release()


def test_local_gpu_runs_are_bounded_by_the_machines_gpus(root, monkeypatch):
    cores = os.cpu_count() or 1
    assert machine_parallel("local", 3, "A10") == min(3, cores, 2)
    assert machine_parallel("local", 3, "A10:2") == 1
    assert machine_parallel("local", 3, "A10", share_gpus=True) == min(3, cores)
    assert machine_parallel("local", 3, None) == min(3, cores)
    assert machine_parallel("modal", 3, "A10") == 3
    monkeypatch.setenv(gpus.ROOT_ENV, str(root / "nothing"))
    assert machine_parallel("local", 3, "A10") == 1  # `up` then says there is no GPU


def test_the_supervisor_keeps_the_gpu_root_setting():
    from ml_agent.backends.local.backend import supervisor_env

    env = supervisor_env({gpus.ROOT_ENV: "/host", "PATH": "/bin", "AWS_SECRET_KEY": "x"})
    assert env == {gpus.ROOT_ENV: "/host", "PATH": "/bin"}  # the sweep driver's too


def test_a_sweep_dry_run_says_the_gpus_cap_it(root, tmp_path, monkeypatch, capsys):
    from ml_agent.cli import main
    from ml_agent.contracts import CONFIGS_DIR

    monkeypatch.setenv("ML_AGENT_HOME", str(tmp_path / "home"))
    sweep = tmp_path / "sweep.yaml"
    body = (f"base: {CONFIGS_DIR / 'local.yaml'}\ntasks: [go]\n"
            "axes:\n  sandbox.gpu: ['A10:2']\n  agent.model: [m-a, m-bb, m-ccc]\n"
            "max_parallel: 3\n")
    sweep.write_text(body)
    assert main(["sweep", str(sweep), "--dry-run"]) == 0
    assert ("at most 1 live at a time (max_parallel 3, capped by this machine's CPU cores "
            "and GPUs)") in capsys.readouterr().out
    sweep.write_text(body + "share_gpus: true\n")
    assert main(["sweep", str(sweep), "--dry-run"]) == 0
    cores = os.cpu_count() or 1
    assert f"at most {min(3, cores)} live at a time" in capsys.readouterr().out


@pytest.mark.parametrize(("model", "modal_type", "match"), [
    ("NVIDIA A10G", "A10", True), ("NVIDIA A10", "A10", True),
    ("NVIDIA A100-SXM4-80GB", "A10", False),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB", True), ("NVIDIA H100 80GB HBM3", "H100!", True),
    ("NVIDIA L40S", "L4", False), ("NVIDIA L4", "L4", True), ("Tesla T4", "T4", True),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000", True),
    ("NVIDIA B200", "B200+", True), ("NVIDIA H200", "H100", False),
])
def test_a_gpu_model_is_matched_to_modal_types_loosely(model, modal_type, match):
    gpu = gpus.Gpu(index=0, bus="0000:01:00.0", model=model, uuid=None, minor=0)
    assert gpus.is_type(gpu, modal_type) is match


def test_a_gpu_of_another_type_than_the_config_names_is_a_warning(root, tmp_path):
    from ml_agent.backends.local import LocalBackend
    from tests.local.helpers import local_plan

    plan = local_plan()
    for gpu, warned in (("A10:2", False), ("H100", True)):
        backend = LocalBackend(tmp_path / "home")
        planned = plan.model_copy(update={"sandbox": plan.sandbox.model_copy(
            update={"gpu": gpu})})
        with contextlib.suppress(Exception):  # no key here: the GPU check comes first
            backend.check(planned)
        said = [w for w in backend.warnings if w.startswith("sandbox.gpu asks for")]
        assert said == (["sandbox.gpu asks for H100 but this machine's GPUs are NVIDIA A10: "
                         "the local backend runs on the GPUs it has"] if warned else [])
