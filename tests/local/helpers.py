"""Helpers for the local backend tests: Plans, tiny venvs, a stand-in agent, its processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

from ml_agent.backends.local.sandbox import HostLayout
from ml_agent.config import load_config
from ml_agent.contracts import CONFIGS_DIR
from ml_agent.plan import Plan, build_plan


def local_plan(*overrides: str, run_id: str = "20261126-0315-a1b2c3") -> Plan:
    """The shipped `configs/local.yaml` with `--set` overrides, ready for launch."""
    path = CONFIGS_DIR / "local.yaml"
    return build_plan(load_config(path, list(overrides)), path).for_launch(run_id)


def with_network(plan: Plan, mode: str) -> Plan:
    """The plan with another network mode (`open`, `blocked`, `allowlist`)."""
    network = plan.sandbox.network.model_copy(update={"mode": mode})
    return plan.model_copy(
        update={"sandbox": plan.sandbox.model_copy(update={"network": network})}
    )


def tiny_venv(path: Path) -> Path:
    """A real virtualenv without pip (fast): `python` inside the sandbox, no packages."""
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def layout(plan: Plan, tmp_path: Path, venv: Path, **changes: object) -> HostLayout:
    """The real host layout with every writable path under tmp_path."""
    vols = {}
    for vol in plan.volumes:
        vols[vol.key] = str(tmp_path / "volumes" / vol.name)
        Path(vols[vol.key]).mkdir(parents=True, exist_ok=True)
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "work").mkdir(exist_ok=True)
    host = HostLayout.detect(
        venv=str(venv),
        volumes=vols,
        home=str(tmp_path / "home"),
        workdir=str(tmp_path / "work"),
        gpu=False,
    )
    import dataclasses

    return dataclasses.replace(host, **changes) if changes else host


def seeded_plan(
    home: Path, script: str, *, timeout_s: int = 120, run_id: str | None = None
) -> Plan:
    """A launchable plan whose agent is `script` (a Python file bound at /agent/test_agent.py)
    and whose image has no pip layer, its venv seeded into `home`'s cache (no build)."""
    import json

    from ml_agent.backends.local import image
    from ml_agent.contracts import new_run_id
    from ml_agent.plan import FileLayer

    src = home / "test_agent.py"
    home.mkdir(parents=True, exist_ok=True)
    if not src.is_file() or src.read_text() != script:  # a sandbox may be starting it now:
        src.write_text(script)  # rewriting the same text would show it an empty file
    plan = local_plan(run_id=run_id or new_run_id())
    layers = tuple(
        layer for layer in plan.image.layers if layer.kind not in ("pip", "apt", "file", "dir")
    ) + (FileLayer(src=str(src), dest="/agent/test_agent.py", copy=False),)
    plan = plan.model_copy(
        update={
            "image": plan.image.model_copy(update={"layers": layers}),
            "agent": plan.agent.model_copy(update={"entrypoint": "/agent/test_agent.py"}),
            "sandbox": plan.sandbox.model_copy(update={"timeout_s": timeout_s}),
        }
    )
    venv = home / "envs" / image.env_hash(plan)
    if not (venv / image.COMPLETE_FILE).exists():
        tiny_venv(venv)
        (venv / image.COMPLETE_FILE).write_text(json.dumps({"pip_freeze": []}))
    return plan


#: A stand-in agent (no model): emits `ready` with what it sees, echoes user messages,
#: writes `stopped` on SIGTERM (or ignores it with the one-shot task `stubborn`), keeps a
#: child; the message or task `slow` is a minute-long tool call; the input `end` ends it
#: cleanly; any other one-shot task is done at once.
AGENT = """
import json, os, signal, subprocess, sys, time
seq = 0
def emit(type_, **kw):
    global seq
    seq += 1
    print(json.dumps({"type": type_, "seq": seq, "ts": time.time(), **kw}), flush=True)
run_dir = os.environ["ML_AGENT_RUN_DIR"]
os.makedirs(run_dir, exist_ok=True)
def on_term(*_):
    open(os.path.join(run_dir, "stopped"), "w").write("yes")
    sys.exit(143)
task = json.loads(sys.stdin.readline())["text"] if "--one-shot" in sys.argv else None
if task is not None:
    open(os.path.join(run_dir, "task"), "w").write(task)
stubborn = task == "stubborn"
signal.signal(signal.SIGTERM, signal.SIG_IGN if stubborn else on_term)
child = subprocess.Popen(["sleep", "1000"])  # a grandchild that must not survive
env = os.environ
emit("ready", run_id=env["ML_AGENT_RUN_ID"], model="scripted", key=env["ANTHROPIC_API_KEY"],
     gh=env.get("GITHUB_TOKEN"), mode="one-shot" if task else "interactive")
def slow():  # a long tool call: nothing is printed for a minute
    emit("tool_use", id="t1", name="Bash", input={"command": "sleep 60"})
    time.sleep(60)
if task == "slow":
    slow()
elif task not in (None, "stubborn"):  # one-shot: the task, then the run's result
    emit("user_text", text=task)
    emit("assistant_text", text="did: " + task)
    emit("turn_end", status="succeeded", cost_usd=0.25, turns=1, duration_s=0.1)
    emit("result", status="succeeded", cost_usd=0.25, turns=1, duration_s=0.2)
    sys.exit(0)
for line in sys.stdin:
    msg = json.loads(line)
    if msg["type"] == "end":
        break
    emit("user_text", text=msg["text"])
    if msg["text"] == "slow":
        slow()
    emit("assistant_text", text="echo: " + msg["text"])
    emit("turn_end", status="succeeded", cost_usd=0.25, turns=1, duration_s=0.1)
emit("result", status="succeeded", cost_usd=0.25, turns=1, duration_s=0.2)
"""


def host_cmdlines() -> dict[str, str]:
    """Every process's command line on the host, as any local user can read them."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found[entry.name] = (entry / "cmdline").read_bytes().decode("latin-1")
    return found


def processes_of(run_id: str) -> list[int]:
    """Live processes that belong to the run (its id is in their command line or env)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        blob = b""
        for name in ("cmdline", "environ"):  # environ is unreadable for some processes
            with contextlib.suppress(OSError):
                blob += (entry / name).read_bytes()
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if run_id.encode() in blob and state != "Z":
            found.append(int(entry.name))
    return found


class Terminal:
    """A command on a pseudo-terminal, in a session of its own: `expect` text, `send` keys.

    Start it through the `terminal` fixture (tests/local/conftest.py), which cleans up after
    the test whatever happened: a command still running is killed, and every command is
    waited for and its terminal closed. A Popen never waited for warns when it is collected,
    and under `filterwarnings = error` that fails whichever later test the GC runs in.
    """

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.master, slave = pty.openpty()

        def controlling_tty() -> None:  # so that Ctrl-C on the terminal sends SIGINT
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            # ... and is not ignored: a shell starting pytest in the background (`cmd &`
            # without job control) ignores SIGINT, and an ignored signal stays ignored
            # across exec. A user's interactive shell starts commands with the default.
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        try:
            self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave,
                                         env=env, cwd=cwd, preexec_fn=controlling_tty)
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)
        self.seen = ""
        self.pos = 0
        self._closed = False

    def expect(self, text: str, timeout: float = 60) -> str:
        """Wait for `text` after the previous match."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.pos :]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen in:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the command exited and the terminal is drained
                    break
                self.seen += chunk.decode(errors="replace")
        assert text in self.seen[self.pos :], self.seen
        self.pos = self.seen.index(text, self.pos) + len(text)
        return self.seen

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self, timeout: float = 60) -> int:
        """Wait for the command to exit by itself; its exit code."""
        code = self.proc.wait(timeout)
        self.cleanup()
        return code

    def cleanup(self) -> None:
        """Kill the command's session if it still runs, reap it, close the terminal."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # setsid: its pid is its group's
            self.proc.wait()
        if not self._closed:
            self._closed = True
            os.close(self.master)


#: Two GPUs as /proc/driver/nvidia/gpus/<bus>/information shows them (the driver's
#: nv-procfs.c layout); their minors in the reverse of bus order, so index != minor.
GPUS = (
    ("0000:17:00.0", "NVIDIA A10", "GPU-8c2e5b1a-77d0-4c1e-9a33-0a1b2c3d4e5f", 1),
    ("0000:65:00.0", "NVIDIA A10", "GPU-f00dcafe-1234-4bcd-8ef0-112233445566", 0),
)


def gpu_information(model: str, uuid: str, bus: str, minor: int, excluded: str = "No") -> str:
    return (f"Model: \t\t {model}\nIRQ:   \t\t 150\nGPU UUID: \t {uuid}\n"
            "Video BIOS: \t 94.02.5c.00.02\nBus Type: \t PCIe\nDMA Size: \t 47 bits\n"
            f"DMA Mask: \t 0x7fffffffffff\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n"
            f"GPU Excluded:\t {excluded}\n")


def fake_gpu_root(root: Path, gpus=GPUS) -> Path:
    """A machine's NVIDIA driver files under `root` (ML_AGENT_GPU_ROOT): the information
    files, and regular files standing in for the device nodes (bwrap --dev-bind binds any
    file)."""
    dev = root / "dev"
    (dev / "nvidia-caps").mkdir(parents=True, exist_ok=True)
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset",
                 "nvidia-caps/nvidia-cap1"):
        (dev / name).write_text("")
    for bus, model, uuid, minor in gpus:
        folder = root / "proc" / "driver" / "nvidia" / "gpus" / bus
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "information").write_text(gpu_information(model, uuid, bus, minor))
        (dev / f"nvidia{minor}").write_text("")
    return root
