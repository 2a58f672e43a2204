"""One small detached process per local run: owns the sandbox, the proxy and the syncer.

    python -m ml_agent.backends.local.supervisor <run folder>

Started by `LocalBackend.up` in a new session (so `--detach` runs outlive the CLI). It reads
`launch.json`, starts the proxy on 127.0.0.1 (the key stays in this process), the syncer
(when enabled and its HF token exists), then the sandbox with the agent as its command:
stdin from the run's FIFO, stdout split into `events.jsonl` and `output.log`. It enforces
the timeout, and on SIGTERM (`ml-agent stop`) or the timeout asks the agent to stop, kills
the sandbox after a grace period, runs the final metric sync and records the outcome in
`run.json`. The sandbox is bwrap `--die-with-parent`, so it never outlives this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ml_agent.backends.local import envfiles
from ml_agent.backends.local.registry import (
    RunPaths,
    read_record,
    write_json,
    write_pid,
    write_record,
)
from ml_agent.backends.local.sandbox import HostLayout, agent_command, build_argv, sandbox_env
from ml_agent.contracts import TokenRecord, hash_token, protocol
from ml_agent.plan import Plan, launch_env

#: After asking the agent to stop: its own grace (agent.py STOP_GRACE_S) plus a margin.
STOP_GRACE_S = 8.0
#: The final metric sync may upload; it is bounded so a stop always ends.
FINAL_SYNC_TIMEOUT_S = 300.0


class Supervisor:
    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        launch = json.loads(paths.launch.read_text())
        self.plan = Plan.model_validate(launch["plan"])
        self.task: str | None = launch.get("task")
        self.token: str = launch["token"]
        self.host = HostLayout(**launch["host"])
        self.home = Path(launch["ml_agent_home"])
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._log = open(paths.log, "a", buffering=1)  # noqa: SIM115 - lives as long as we do
        self.result_event: dict[str, Any] | None = None
        self.cost_usd: float | None = None
        self.timings: dict[str, float] = {"supervisor": time.time()}  # timing.json (bench)
        self.record = read_record(paths)
        self._record_lock = threading.Lock()

    def log(self, message: str) -> None:
        self._log.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    # -- lifecycle ---------------------------------------------------------------------
    def save(self, **changes: Any) -> None:
        """Update run.json (the main thread and the stdout reader both do)."""
        with self._record_lock:
            for key, value in changes.items():
                setattr(self.record, key, value)
            write_record(self.paths, self.record)

    def run(self) -> int:
        proxy = syncer = proc = fifo = status_r = None
        exit_code: int | None = None
        status = "failed"
        try:
            key = envfiles.proxy_key(
                self.home, self.plan.proxy.secret, self.plan.proxy.upstream, os.environ
            )
            proxy = self._start_proxy(key)
            self.timings["proxy"] = time.time()
            syncer = self._start_syncer()
            secrets: dict[str, str] = {}
            for name in self.plan.sandbox.secrets:
                secrets.update(envfiles.read_secret(self.home, name))
            env = sandbox_env(
                self.plan, launch_env(self.plan, base_url=proxy.url, token=self.token), secrets
            )
            argv = build_argv(self.plan, self.host, env, agent_command(self.plan, self.task))
            with contextlib.suppress(FileNotFoundError):
                self.paths.stdin.unlink()
            os.mkfifo(self.paths.stdin, 0o600)
            # Read-write: the agent never sees EOF when a client that wrote a line goes away.
            fifo = os.open(self.paths.stdin, os.O_RDWR)
            if self._stop.is_set():  # `stop` came during start-up: no sandbox to start
                self.log(f"{self.stop_reason} before the sandbox started")
                status = self._status(None)
                return 0
            # bwrap reports on this pipe once the sandbox is set up, --die-with-parent
            # included: only then is the run "running" (no window for an orphan).
            status_r, status_w = os.pipe()
            argv[1:1] = ["--json-status-fd", str(status_w)]
            with open(self.paths.output, "ab") as err:
                proc = subprocess.Popen(argv, stdin=fifo, stdout=subprocess.PIPE, stderr=err,
                                        pass_fds=(status_w,))
            os.close(status_w)
            if self.task is not None:  # one-shot: the task is the first line on stdin
                data = protocol.task_input(self.task).encode()
                feed = os.dup(fifo)  # its own fd: `fifo` is closed at the end of the run
                threading.Thread(target=_feed, args=(feed, data), daemon=True).start()
            reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
            reader.start()
            child = _sandbox_child(status_r)
            # The sandbox's init arms --die-with-parent before it starts the command: once
            # the command exists, killing this process can no longer orphan the sandbox.
            while child is not None and not _children(child) and proc.poll() is None:
                time.sleep(0.01)
            if child is None:
                raise RuntimeError(f"the sandbox did not start: {_last_line(self.paths.output)}")
            self.save(status="running", sandbox_id=f"bwrap:{proc.pid}")
            self.timings["sandbox"] = time.time()
            write_json(self.paths.folder / "timing.json", self.timings)
            self.log(f"sandbox started (pid {proc.pid}); proxy on {proxy.url}")
            exit_code = self._wait(proc, child)
            reader.join(10)
            status = self._status(exit_code)
        except Exception as exc:  # recorded for `ps`/`logs`; the CLI shows supervisor.log
            self.log(f"error: {exc}")
            with open(self.paths.output, "a") as out:
                out.write(f"ml-agent: {exc}\n")
        finally:
            if proc is not None and proc.poll() is None:
                _kill_tree(proc.pid, signal.SIGKILL)
                proc.wait()
            if syncer is not None:
                self.log("final metric sync")
                if not syncer.stop(FINAL_SYNC_TIMEOUT_S):
                    self.log("warning: the final metric sync did not finish in time")
            usage = self._usage()
            if proxy is not None:
                proxy.stop()
            if fifo is not None:
                os.close(fifo)
            if status_r is not None:
                os.close(status_r)
            with contextlib.suppress(FileNotFoundError):
                self.paths.stdin.unlink()
            self.save(
                status=status,
                exit_code=exit_code,
                ended_at=time.time(),
                cost_usd=self.cost_usd if self.cost_usd is not None else usage.get("cost_usd"),
            )
            if usage:
                write_json(self.paths.folder / "usage.json", usage)
                self._add_proxy_usage(usage)
            self.log(f"run ended: {status} (exit code {exit_code})")
            self.close()
        return 0

    def close(self) -> None:
        """Close the log (run() does, at its end)."""
        self._log.close()

    def _wait(self, proc: subprocess.Popen[bytes], child: int) -> int:
        """Until the sandbox exits, the timeout, or a stop; `child` is bwrap's first pid in
        the sandbox (its init), whose children are the sandbox's command."""
        deadline = time.monotonic() + self.plan.sandbox.timeout_s
        while proc.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.request_stop("timeout")
            if self._stop.wait(min(0.5, max(remaining, 0.01))):
                self.log(f"stopping the sandbox ({self.stop_reason})")
                # Ask the agent (the sandbox's command) to stop, so it writes result.json.
                for pid in _children(child):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    _kill_tree(proc.pid, signal.SIGKILL)
                break
        return proc.wait()

    def _status(self, exit_code: int | None) -> str:
        if self.stop_reason == "timeout":
            return "timeout"
        if self.stop_reason:
            return "stopped"
        if self.result_event and self.result_event.get("status") in protocol.STATUSES:
            return str(self.result_event["status"])
        return "succeeded" if exit_code == 0 else "failed"

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """Sandbox stdout -> output.log (all of it) and events.jsonl (protocol events)."""
        assert proc.stdout is not None
        with open(self.paths.output, "ab") as out, open(self.paths.events, "ab") as events:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                event = protocol.decode_event(raw.decode("utf-8", "replace"))
                if event is None:
                    continue
                events.write(raw if raw.endswith(b"\n") else raw + b"\n")
                events.flush()
                if isinstance(event.get("cost_usd"), int | float):
                    self.cost_usd = float(event["cost_usd"])
                    self.save(cost_usd=self.cost_usd)  # `ps` shows the cost so far
                if event["type"] == protocol.RESULT:
                    self.result_event = event

    # -- proxy and syncer --------------------------------------------------------------
    def _start_proxy(self, key: str) -> Any:
        from ml_agent.backends.local import proxying

        proxy = proxying.LocalProxy(self.plan, key).start()
        proxy.tokens.put(
            hash_token(self.token),
            TokenRecord(
                run_id=self.paths.run_id,
                expires_at=time.time() + self.plan.sandbox.timeout_s + 300,
                budget_usd=self.plan.proxy.budget_usd,
            ),
        )
        self.proxy = proxy
        return proxy

    def _usage(self) -> dict[str, float]:
        proxy = getattr(self, "proxy", None)
        return dict(proxy.usage.get(self.paths.run_id)) if proxy is not None else {}

    def _start_syncer(self) -> Any:
        plan = self.plan.syncer
        if not plan.enabled:
            return None
        if not plan.secret or not envfiles.has_secret(self.home, plan.secret):
            where = envfiles.secret_path(self.home, plan.secret) if plan.secret else "a secret"
            self.log(f"syncer skipped: no HF token ({where} with HF_TOKEN=...)")
            return None
        token = envfiles.read_secret(self.home, plan.secret).get("HF_TOKEN")
        if not token:
            where = envfiles.secret_path(self.home, plan.secret)
            self.log(f"syncer skipped: {where} has no HF_TOKEN")
            return None
        from ml_agent.syncer import SyncerSettings, SyncerThread, TrackioUploader, build_syncer

        vol = next(v for v in self.plan.volumes if v.key == plan.volume)
        settings = SyncerSettings.from_plan(
            plan,
            trackio_dir=self.host.volumes[vol.key],
            state_path=str(self.home / "syncer" / f"{vol.name}.json"),
        )
        Path(settings.state_path or "").parent.mkdir(parents=True, exist_ok=True)
        uploader = TrackioUploader(env={**os.environ, "HF_TOKEN": token})
        syncer = build_syncer(settings, uploader=uploader, log=self.log)
        self.log(f"syncer started (every {settings.interval_s:g} s)")
        return SyncerThread(syncer, settings.interval_s, log=self.log).start()

    def _add_proxy_usage(self, usage: dict[str, float]) -> None:
        """Add the proxy's metered usage to result.json on the data volume, if it is there.

        The folder is the agent's to write: open every component without following links
        and replace the file through its folder's descriptor, so a planted symlink cannot
        make this process write anywhere else.
        """
        data = self.plan.data_volume
        parts = ["runs", self.paths.run_id]
        try:
            fd = os.open(self.host.volumes[data.key], os.O_RDONLY | os.O_DIRECTORY)
            try:
                for part in parts:
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
                src = os.open(protocol.RESULT_FILE, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
                with os.fdopen(src) as fh:
                    result = json.load(fh)
                if not isinstance(result, dict):
                    return
                result["proxy_usage"] = usage
                tmp = f".{protocol.RESULT_FILE}.{os.getpid()}.tmp"
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                              dir_fd=fd)
                with os.fdopen(out, "w") as fh:
                    json.dump(result, fh, indent=2)
                os.replace(tmp, protocol.RESULT_FILE, src_dir_fd=fd, dst_dir_fd=fd)
            finally:
                os.close(fd)
        except FileNotFoundError:  # the agent ended (or was stopped) before writing one
            self.log(
                f"no {'/'.join([*parts, protocol.RESULT_FILE])} on the data volume; "
                "the proxy's usage is in usage.json"
            )
        except (OSError, ValueError) as exc:
            self.log(f"result.json not updated with the proxy's usage: {exc}")


def _sandbox_child(status_fd: int, timeout: float = 60.0) -> int | None:
    """The sandbox's first pid from bwrap's `--json-status-fd` (None: bwrap failed)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([status_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(status_fd, 4096)
        if not chunk:
            return None
        buf += chunk
        for line in buf.split(b"\n"):
            with contextlib.suppress(ValueError, AttributeError):
                pid = json.loads(line).get("child-pid")
                if isinstance(pid, int):
                    return pid
    return None


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


def _feed(fd: int, data: bytes) -> None:
    """Write all of `data` to the agent's stdin, then close `fd` (a thread: a task longer
    than the pipe's buffer waits for the agent to read it)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass  # the sandbox ended first
    finally:
        os.close(fd)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan every process's parent
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if entry.name.isdigit() and int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                ) == pid:
                    found.append(int(entry.name))
        return found


def _kill_tree(pid: int, sig: int) -> None:
    """Signal a process and its descendants, deepest first (the sandbox's pid namespace
    dies with bwrap anyway; this also covers a bwrap that has not set it up yet)."""
    for child in _children(pid):
        _kill_tree(child, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = RunPaths(Path(args[0]))
    supervisor = Supervisor(paths)
    write_pid(paths, os.getpid())  # `up` wrote it already; this covers a manual start
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: supervisor.request_stop("stopped"))
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
