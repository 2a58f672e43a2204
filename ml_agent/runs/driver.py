"""The detached sweep driver: a process of its own that launches a sweep's runs.

`ml-agent sweep FILE` (and `--resume ID`) start it in a new session and return, so the sweep
goes on when the launcher's terminal closes. One driver per sweep at a time (an flock on
`sweeps/<id>.lock`); it notes its pid in the sweep record, and `ml-agent stop --sweep` ends
it. Its output goes to `sweeps/<id>.log`.

Its environment is explicit and holds no secret (the local supervisor's list, plus Modal's
non-secret settings); the credentials `up` reads from the environment (the host's Anthropic
key, a Modal token) come as one JSON object on its stdin, as the supervisor's key does, and
so do the variables the sweep's configs read (`${env:NAME}`, ML_AGENT_ALLOW_OUTSIDE): the
driver plans each run from the config files, as the launcher did.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ml_agent.errors import MlAgentError
from ml_agent.runs.sweeps import SweepRecord, sweeps_dir

#: Read from the launcher's environment and handed over on stdin, never in env or argv.
CREDENTIALS = ("ANTHROPIC_API_KEY", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET")
#: Modal's non-secret settings (where its config file and server are).
MODAL_ENV = ("MODAL_CONFIG_PATH", "MODAL_SERVER_URL", "MODAL_ENVIRONMENT", "MODAL_PROFILE")
MODULE = "ml_agent.runs.driver"


def lock_path(sweep_id: str, home: Path | None = None) -> Path:
    return sweeps_dir(home) / f"{sweep_id}.lock"


def log_path(sweep_id: str, home: Path | None = None) -> Path:
    return sweeps_dir(home) / f"{sweep_id}.log"


@contextlib.contextmanager
def sweep_lock(sweep_id: str, home: Path | None = None) -> Iterator[bool]:
    """Holds the sweep's driver lock while inside; yields False when another process has it."""
    path = lock_path(sweep_id, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def driver_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's environment: what a run's supervisor keeps, and Modal's settings."""
    from ml_agent.backends.local.backend import supervisor_env

    env = supervisor_env(environ)
    env.update((k, environ[k]) for k in MODAL_ENV if k in environ)
    return env


def credentials(environ: Mapping[str, str], config_env: Mapping[str, str] = {}) -> str:
    """What the driver reads on its stdin: the credentials and the configs' variables."""
    return json.dumps({**config_env, **{k: environ[k] for k in CREDENTIALS if environ.get(k)}})


class _EnvReads(Mapping[str, str]):
    """An environment for the config loader that notes every name a config looks up."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        return self.environ[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


def config_env(record: SweepRecord, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables (with their values in `environ`) that the configs of the sweep's
    pending runs read: each `${env:NAME}` (a default's too: the driver must resolve the same
    value), and ML_AGENT_ALLOW_OUTSIDE. Loading the configs checks them here, so a variable
    this shell lacks is a config error now (file:line), not a failure in the driver's log."""
    from ml_agent.config import load_config
    from ml_agent.config.tree import ENV as ALLOW_OUTSIDE

    reads = _EnvReads(environ)
    for overrides in sorted({tuple(r["overrides"]) for r in record.pending()}):
        load_config(record.base, list(overrides), env=reads, allow=record.allow)
    return {k: environ[k] for k in sorted(reads.names | {ALLOW_OUTSIDE}) if k in environ}


def is_driver(pid: int, sweep_id: str) -> bool:
    """`pid` is a live driver of this sweep (not a pid reused by another program)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in argv and sweep_id.encode() in argv


def spawn(record: SweepRecord, home: Path | None = None, wait_s: float = 30.0) -> int:
    """Start the sweep's driver, detached; returns its pid once it holds the lock."""
    from ml_agent.backends.local.backend import spawn_detached

    with sweep_lock(record.sweep_id, home) as free:
        if not free:
            raise MlAgentError(busy_message(record.sweep_id, home))
    handed = config_env(record, os.environ)
    log = log_path(record.sweep_id, home)
    since = time.time()
    pid = spawn_detached([sys.executable, "-m", MODULE, record.sweep_id], log=log,
                          cwd=log.parent, env=driver_env(os.environ),
                          stdin=credentials(os.environ, handed))
    started = f"driver {pid}:"  # its first line: it holds the lock (it may be done already)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        now = SweepRecord.load(record.sweep_id, home)
        if now.driver_pid == pid:
            return pid
        if (now.driver_error_at or 0) >= since and not is_driver(pid, record.sweep_id):
            # it failed at once: say why here, not only in its log
            from ml_agent.runs.sweepstate import describe

            raise MlAgentError(describe(now, home)[0])
        alive = is_driver(pid, record.sweep_id)
        with contextlib.suppress(OSError):
            if started in log.read_text(errors="replace"):
                return pid
        if not alive:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    raise MlAgentError(f"the sweep driver did not start (its log, {log}):\n  "
                       + "\n  ".join(tail or ["(empty)"]))


def busy_message(sweep_id: str, home: Path | None) -> str:
    pid = SweepRecord.load(sweep_id, home).driver_pid
    return (f"sweep {sweep_id} is already being launched by its driver (pid {pid}); "
            f"follow it with `ml-agent ps --sweep {sweep_id}`, or end it with "
            f"`ml-agent stop --sweep {sweep_id}`")


def end(sweep_id: str, home: Path | None = None, wait_s: float = 10.0) -> bool:
    """End the sweep's driver, if one runs; returns whether one did."""
    pid = SweepRecord.load(sweep_id, home).driver_pid
    if not pid or not is_driver(pid, sweep_id):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while is_driver(pid, sweep_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_driver(pid, sweep_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    from ml_agent.backends import get_backend
    from ml_agent.runs.sweeps import Driver
    from ml_agent.runs.sweepstate import driving

    [sweep_id] = sys.argv[1:] if argv is None else argv
    os.environ.update(json.loads(sys.stdin.readline() or "{}"))
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def say(message: str) -> None:
        print(time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + message, flush=True)

    with sweep_lock(sweep_id) as free:
        if not free:
            say(busy_message(sweep_id, None))
            return 1
        record = SweepRecord.load(sweep_id)
        try:
            with driving(record):  # its pid noted; a failure noted for `ps --sweep`
                say(f"driver {os.getpid()}: {len(record.pending())} of {len(record.runs)} "
                    f"run(s) to launch, at most {record.max_parallel} live at a time")
                launched = Driver(record, get_backend, say=say).run()
        except MlAgentError as exc:
            say(f"error: {exc}\n(`ml-agent sweep --resume {sweep_id}` launches the rest)")
            return 1
        say(f"{len(launched)} run(s) launched; `ml-agent results {sweep_id}` compares them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
