"""The local "image": host Python check, apt check, and the pip layers' cached virtualenv.

The sandbox runs the host's Python (bound read-only), so `image.python` must match it. The
pip layers become a virtualenv under `$ML_AGENT_HOME/envs/<hash>` (hash of the layers, the
Python and the platform), built once and reused; it is seeded with the distributions this
machine already has installed (seed.py), then pip installs the rest. A build happens in a
temporary folder that is renamed into place only when complete, so a killed build is never
reused; the venv's scripts are rewritten for the path they have inside the sandbox
(`sandbox.VENV_DEST`).

Run layers are refused: locally they would run on the host, outside any sandbox, and they
could change nothing but the virtualenv anyway. Use pip layers, or the Modal backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ml_agent.backends.local.sandbox import VENV_DEST
from ml_agent.errors import SandboxError
from ml_agent.fileio import atomic_write_json
from ml_agent.plan import AptLayer, PipLayer, Plan, RunLayer

#: Bump when the venv layout changes, so old caches are not reused.
BUILD_VERSION = "1"
COMPLETE_FILE = "ml-agent-env.json"

#: Receives one line per step ("pip install ...") and indented detail lines (pip's output).
Progress = Callable[[str], None]


def host_python() -> str:
    return platform.python_version()


def check_python(plan: Plan) -> None:
    """The host Python must be the image's (`"3.11"` matches 3.11.x; `"3.11.7"` exactly)."""
    want = plan.image.python.split(".")
    have = host_python().split(".")
    if have[: len(want)] != want:
        raise SandboxError(
            f"image.python is {plan.image.python!r} but this machine's Python is "
            f"{host_python()} ({sys.executable}); the local backend runs the sandbox with "
            f"the host's Python. Run ml-agent with a Python {plan.image.python} "
            f"(e.g. `pipx install --python python{plan.image.python} ml-agent`), or set "
            f"`--set image.python={'.'.join(have[:2])}`"
        )


def apt_packages(plan: Plan) -> list[str]:
    return [p for layer in plan.image.layers if isinstance(layer, AptLayer) for p in layer.packages]


def check_apt(plan: Plan) -> None:
    """Every apt package must be installed on the host (the sandbox binds the host's /usr)."""
    wanted = apt_packages(plan)
    if not wanted:
        return
    missing = [p for p in wanted if not _installed(p)]
    if missing:
        raise SandboxError(
            f"apt packages missing on this machine: {', '.join(missing)}; the local sandbox "
            f"uses the host's system packages. Install them with: "
            f"sudo apt-get install -y {' '.join(missing)}"
        )


def _installed(package: str) -> bool:
    name = package.split("=")[0]
    if shutil.which("dpkg-query"):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True
        )
        if out.returncode == 0 and "install ok installed" in out.stdout:
            return True
    return shutil.which(name) is not None  # non-Debian hosts: the command is enough


def check_run_layers(plan: Plan) -> None:
    if any(isinstance(layer, RunLayer) for layer in plan.image.layers):
        raise SandboxError(
            "image run layers are not supported by the local backend: they would run on "
            "this machine outside the sandbox. Use pip layers (or apt packages installed on "
            "the host), or run this config with `--backend modal`"
        )


def pip_layers(plan: Plan) -> list[tuple[str, ...]]:
    return [layer.packages for layer in plan.image.layers if isinstance(layer, PipLayer)]


def env_hash(plan: Plan) -> str:
    """The cache key: pip layers, the exact host Python (and where it lives), the platform."""
    data = {
        "v": BUILD_VERSION,
        "pip": [list(p) for p in pip_layers(plan)],
        "python": host_python(),
        "prefix": sys.base_prefix,
        "platform": [sys.platform, platform.machine(), *platform.libc_ver()],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def envs_dir(home: Path) -> Path:
    return home / "envs"


def cached_venv(plan: Plan, home: Path) -> Path | None:
    path = envs_dir(home) / env_hash(plan)
    return path if (path / COMPLETE_FILE).is_file() else None


def ensure_venv(
    plan: Plan, home: Path, progress: Progress = lambda _: None, *, seed_from_host: bool = True
) -> Path:
    """The virtualenv of the Plan's pip layers: cached, or built now (with progress).

    `seed_from_host` first copies the requirements' distributions this machine already has
    installed (seed.py); pip then installs only what is still missing.
    """
    found = cached_venv(plan, home)
    if found:
        return found
    root = envs_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    key = env_hash(plan)
    with _lock(root / f".{key}.lock"):
        found = cached_venv(plan, home)  # another `up` built it while we waited
        if found:
            return found
        for stale in root.glob(f".build-{key}-*"):  # killed builds (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
        try:
            _build(plan, tmp, progress, seed_from_host)
            final = root / key
            if final.exists():  # incomplete leftover without the marker
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(root)  # the rename itself survives a crash
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(plan: Plan, tmp: Path, progress: Progress, seed_from_host: bool) -> None:
    start = time.monotonic()
    progress(f"creating a virtualenv for Python {host_python()}")
    _run([sys.executable, "-m", "venv", "--clear", str(tmp)], progress, "python -m venv")
    python = str(tmp / "bin" / "python")
    wanted = [p for packages in pip_layers(plan) for p in packages]
    if wanted and seed_from_host:
        from ml_agent.backends.local import seed

        dists = seed.closure(wanted, seed.installed())
        if dists:
            progress(f"copying {len(dists)} packages already installed on this machine")
            seed.copy_into(tmp, dists)
    for packages in pip_layers(plan):
        progress(f"pip install {' '.join(packages)}")
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar",
               "off", *packages]
        _run(cmd, progress, f"pip layer {list(packages)}")
    _relocate(tmp, VENV_DEST)
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True
    ).stdout.split()
    info = {
        "hash": tmp.name,
        "python": host_python(),
        "layers": [list(p) for p in pip_layers(plan)],
        "pip_freeze": freeze,
        "build_seconds": round(time.monotonic() - start, 1),
        "built_at": time.time(),
    }
    # Written last: its presence is what makes the folder a complete, reusable env, so the
    # env's files reach the disk first (a crash must not leave a marker over torn files).
    _syncfs(tmp)
    atomic_write_json(tmp / COMPLETE_FILE, info, mode=0o644)


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` (one syncfs(2), not an fsync per file of a venv)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(cmd: list[str], progress: Progress, what: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip()
                if line:
                    tail = (tail + [line])[-20:]
                    progress("  " + line)  # indented: detail, not a step
        except BaseException:
            # Ctrl-C or a failing progress callback: Popen's __exit__ would wait for the
            # rest of the build (or, on Ctrl-C, leave it running unreaped); the half-built
            # env is thrown away, so end the command now.
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise SandboxError(f"building the local image failed at {what}:\n" + "\n".join(tail))


def _relocate(venv: Path, dest: str) -> None:
    """Point the venv's scripts (shebangs, activate) at `dest`, where the sandbox mounts it.

    The interpreter itself finds its venv through pyvenv.cfg next to it, so only text that
    spells the build path needs rewriting.
    """
    old = str(venv).encode()
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data and b"\0" not in data[:1024]:
            path.write_bytes(data.replace(old, dest.encode()))


def venv_info(venv: Path) -> dict:
    try:
        return json.loads((venv / COMPLETE_FILE).read_text())
    except (OSError, ValueError):
        return {}
