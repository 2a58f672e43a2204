"""The bubblewrap sandbox: the bwrap argv built from a Plan (pure), and the host facts it needs.

Security model (DESIGN.md): `--clearenv` and the Plan's env only; explicit binds only (never
`/`, `$HOME`, `~/.modal.toml`, `$ML_AGENT_HOME/secrets`); every namespace unshared but the
network, which `sandbox.network: blocked` unshares too (the proxy is then a Unix socket bound
in, bridged to the sandbox's own loopback); `--die-with-parent --new-session`; all
capabilities dropped. bwrap is PID 1 inside, so its own environment and command line are
the agent's to read: `start` runs it with an empty environment and hands it the sandbox's
variables on a private fd, never as argv words. `build_argv` is a pure function of the Plan
and a `HostLayout` (the resolved host paths); `HostLayout.detect`, `start` and
`bwrap.choose` are where the I/O happens.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ml_agent.backends.local import bwrap as bwrap_choice
from ml_agent.backends.local import gpus
from ml_agent.backends.local.bwrap import SYSTEM_DIRS
from ml_agent.contracts import protocol
from ml_agent.plan import DirLayer, EnvLayer, FileLayer, Plan

#: Where the cached virtualenv appears inside the sandbox (image.py rewrites its scripts).
VENV_DEST = "/opt/ml-agent/venv"
#: HOME inside the sandbox, as in Modal's containers (root).
SANDBOX_HOME = "/root"
#: With `sandbox.network: blocked`: the proxy's Unix socket, and the loopback bridge to it.
PROXY_SOCKET_DEST = "/run/ml-agent/proxy.sock"
BRIDGE_DEST = "/opt/ml-agent/bridge.py"
BRIDGE_SRC = str(Path(__file__).with_name("bridge.py"))
#: The /etc entries a Python + git + curl userland needs; nothing else of /etc is visible.
ETC_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",  # Debian's /usr/bin symlinks point here
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/os-release",
    "/etc/mime.types",
    "/etc/gitconfig",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass(frozen=True)
class HostLayout:
    """The host paths a sandbox is assembled from (resolved by `detect`, or given by tests).

    `system` maps each present system path to its symlink target (None = a real folder).
    """

    bwrap: str
    python_prefix: str  # the host Python's install prefix, bound read-only
    python_hidden: tuple[str, ...]  # the host's own site-packages: hidden (empty tmpfs)
    venv: str  # the cached virtualenv on the host
    volumes: Mapping[str, str]  # volume key -> host folder
    home: str  # host folder bound as the writable HOME
    workdir: str | None  # host folder bound at the workdir (None: under a volume, or none)
    system: Mapping[str, str | None]
    etc: tuple[str, ...]  # present entries of ETC_FILES
    gpu_devices: tuple[str, ...] = ()  # NVIDIA device files, as paths inside (/dev/...)
    gpu_root: str = "/"  # where they are found on the host (gpus.root(): ML_AGENT_GPU_ROOT)
    overlay: bool = True  # the venv writable through a tmpfs overlay (probe() says if it works)
    proxy_socket: str | None = None  # the proxy's Unix socket, bound in (network blocked)

    @classmethod
    def detect(
        cls,
        *,
        venv: str,
        volumes: Mapping[str, str],
        home: str,
        workdir: str | None,
        gpu: bool,
        bwrap: bwrap_choice.Choice | None = None,
    ) -> HostLayout:
        """The layout on this machine; `bwrap` as chosen (`bwrap.choose()` when not given)."""
        bwrap = bwrap or bwrap_choice.choose()
        base = sys.base_prefix
        hidden = [
            p
            for p in {sysconfig.get_path("purelib", vars={"base": base, "platbase": base}),
                      sysconfig.get_path("platlib", vars={"base": base, "platbase": base})}
            if p and os.path.isdir(p) and _is_under(p, base)
        ]
        system: dict[str, str | None] = {}
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                system[path] = os.readlink(path)
            elif os.path.isdir(path):
                system[path] = None
        return cls(
            bwrap=bwrap.bwrap.path,
            python_prefix=base,
            python_hidden=tuple(sorted(hidden)),
            venv=venv,
            volumes=dict(volumes),
            home=home,
            workdir=workdir,
            system=system,
            etc=tuple(p for p in ETC_FILES if os.path.lexists(p) and os.path.exists(p)),
            gpu_devices=gpus.device_files() if gpu else (),
            gpu_root=str(gpus.root()),
            overlay=bwrap.overlay,
        )


def _is_under(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(
        root
    )


def _depth(path: str) -> int:
    return len(PurePosixPath(path).parts)


def sandbox_env(
    plan: Plan, launch_env: Mapping[str, str], secrets: Mapping[str, str] = {}
) -> dict[str, str]:
    """The whole environment inside the sandbox (bwrap starts from `--clearenv`).

    Order, later wins: defaults, image env layers, secrets, the launcher env (which holds the
    config's `sandbox.env`). PATH puts the virtualenv's bin first.
    """
    env: dict[str, str] = {
        "PATH": DEFAULT_PATH,
        "HOME": SANDBOX_HOME,
        "USER": "root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONUNBUFFERED": "1",
        # The Claude CLI: root with bypassed permissions needs IS_SANDBOX; talk only to the
        # proxy (DESIGN.md, facts).
        "IS_SANDBOX": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    for layer in plan.image.layers:
        if isinstance(layer, EnvLayer):
            env.update(layer.env)
    env.update(secrets)
    env.update(launch_env)
    env["VIRTUAL_ENV"] = VENV_DEST
    env["PATH"] = f"{VENV_DEST}/bin:{env['PATH']}"
    return env


def build_argv(plan: Plan, host: HostLayout, command: Sequence[str]) -> list[str]:
    """The bwrap command line that runs `command` in the Plan's sandbox. Pure: no I/O.

    It holds no environment value: `start` gives the sandbox's env to bwrap on a private fd.

    Mounts are emitted parents first (by path depth), so `/root` (HOME) comes before the
    trackio volume and the host Python under it, the workdir before `.claude` inside it.
    """
    sb = plan.sandbox
    argv = [host.bwrap, "--unshare-all"]
    if sb.network.mode != "blocked":
        argv.append("--share-net")
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--unshare-user", "--uid", "0", "--gid", "0", "--hostname", "ml-agent"]

    for path, target in host.system.items():
        if target is None:
            argv += ["--ro-bind", path, path]
        else:
            argv += ["--symlink", target, path]
    for path in host.etc:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]

    # Everything else is mounted parents first (the Python prefix may live under /root).
    mounts: list[tuple[str, list[str]]] = [
        ("/tmp", ["--tmpfs", "/tmp"]),
        (SANDBOX_HOME, ["--bind", host.home, SANDBOX_HOME]),
    ]
    if not _is_under(host.python_prefix, "/usr"):
        mounts.append((host.python_prefix, ["--ro-bind", host.python_prefix, host.python_prefix]))
    for hidden in host.python_hidden:
        mounts.append((hidden, ["--tmpfs", hidden]))
    if host.overlay:  # writable like an image (the agent may pip install); changes discarded
        mounts.append((VENV_DEST, ["--overlay-src", host.venv, "--tmp-overlay", VENV_DEST]))
    else:
        mounts.append((VENV_DEST, ["--ro-bind", host.venv, VENV_DEST]))
    for dev in host.gpu_devices:  # every GPU's: CUDA_VISIBLE_DEVICES picks the run's
        src = os.path.join(host.gpu_root, dev.lstrip("/"))
        mounts.append((dev, ["--dev-bind", src, dev]))
    volume_mounts = {v.mount for v in plan.volumes}
    if sb.workdir and host.workdir and sb.workdir not in volume_mounts:
        mounts.append((sb.workdir, ["--bind", host.workdir, sb.workdir]))
    for vol in plan.volumes:
        flag = "--ro-bind" if vol.read_only else "--bind"
        mounts.append((vol.mount, [flag, host.volumes[vol.key], vol.mount]))
    for layer in plan.image.layers:
        if isinstance(layer, FileLayer | DirLayer):
            mounts.append((layer.dest, ["--ro-bind", layer.src, layer.dest]))
    if host.proxy_socket:
        mounts.append((PROXY_SOCKET_DEST, ["--ro-bind", host.proxy_socket, PROXY_SOCKET_DEST]))
        mounts.append((BRIDGE_DEST, ["--ro-bind", BRIDGE_SRC, BRIDGE_DEST]))
    for _, args in sorted(mounts, key=lambda m: _depth(m[0])):  # stable: config order kept
        argv += args

    argv.append("--clearenv")  # start() puts `--args FD` (the env) right after it
    argv += ["--chdir", sb.workdir or SANDBOX_HOME, "--"]
    argv += list(command)
    return argv


def bridged(command: Sequence[str], port: int) -> list[str]:
    """`command` started behind the loopback bridge: 127.0.0.1:`port` inside the sandbox
    relays to the proxy's Unix socket (the Claude CLI reaches its base URL over TCP only)."""
    # -I -S: no site, no user or PYTHON* settings: the bridge needs the standard library
    # only, and starts in a fraction of the time.
    return ["python", "-I", "-S", BRIDGE_DEST, PROXY_SOCKET_DEST, str(port), "--", *command]


def env_args(env: Mapping[str, str]) -> bytes:
    """`--setenv KEY VALUE` for each variable, as bwrap's `--args` reads them (NUL-ended)."""
    words = [w for key, value in env.items() for w in ("--setenv", key, value)]
    return b"".join(w.encode() + b"\0" for w in words)


def start(argv: Sequence[str], env: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start bwrap (`build_argv`'s command line) with `env` as the sandbox's environment.

    bwrap runs with an empty environment of its own (it is PID 1 inside: the agent reads
    /proc/1/environ), and reads the variables, the run token and `sandbox.secrets` among
    them, from a memfd (`--args FD`) that it closes before the sandbox starts: no value is
    an argv word, which any local user could read in /proc/<pid>/cmdline. `popen` goes to
    `subprocess.Popen` (stdin, stdout, stderr, pass_fds).
    """
    fd = os.memfd_create("ml-agent-sandbox-env", os.MFD_CLOEXEC)
    try:
        data = memoryview(env_args(env))
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
        argv = list(argv)
        at = argv.index("--clearenv") + 1
        argv[at:at] = ["--args", str(fd)]
        pass_fds = (*popen.pop("pass_fds", ()), fd)
        return subprocess.Popen(argv, env={}, pass_fds=pass_fds, **popen)
    finally:
        os.close(fd)


def agent_command(plan: Plan, task: str | None) -> list[str]:
    """The sandbox's own command: `python <entrypoint> [--one-shot]` (the task: on stdin)."""
    return protocol.agent_command(plan.agent.entrypoint, one_shot=task is not None)
