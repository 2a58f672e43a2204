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
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_agent import lines
from ml_agent.backends.local import envfiles, gpus
from ml_agent.backends.local.registry import (
    RunPaths,
    read_record,
    write_json,
    write_pid,
    write_record,
)
from ml_agent.backends.local.sandbox import (
    HostLayout,
    agent_command,
    bridged,
    build_argv,
    sandbox_env,
    start,
)
from ml_agent.contracts import TokenRecord, hash_token, protocol
from ml_agent.errors import UnsafeFile
from ml_agent.plan import Plan, launch_env

READ_CHUNK = 1 << 16  # bytes of the sandbox's stdout per read

#: After asking the agent to stop: its own grace (agent.py STOP_GRACE_S) plus a margin.
STOP_GRACE_S = 8.0
#: The final metric sync may upload; it is bounded so a stop always ends.
FINAL_SYNC_TIMEOUT_S = 300.0
#: How often run.json gets the proxy's cost so far (what `ps` shows for a live run).
METER_EVERY_S = 1.0


class Supervisor:
    """`key_env`: where the proxy's key may come from besides the secret file (`up` hands it
    over on stdin; by default this process's environment)."""

    def __init__(self, paths: RunPaths, key_env: Mapping[str, str] | None = None) -> None:
        self.paths = paths
        self.key_env = os.environ if key_env is None else key_env
        launch = json.loads(paths.launch.read_text())
        self.plan = Plan.model_validate(launch["plan"])
        self.task: str | None = launch.get("task")
        self.token: str = launch["token"]
        # A resumed run (`up --resume`): the proxy's usage of its earlier legs. This leg's
        # proxy meters from zero against the budget left; the run's cost is the sum.
        self.prior_usage: dict[str, float] = launch.get("prior_usage") or {}
        self.host = HostLayout(**launch["host"])
        self.gpus: list[dict[str, Any]] = launch.get("gpus") or []  # leased by `up`
        self.home = Path(launch["ml_agent_home"])
        self.stop_reason: str | None = None
        self.failure: str | None = None  # why the run failed, when the supervisor knows
        self.key_source = "the proxy's key"
        self._last_seq = _last_seq(paths.events)  # a resumed run's earlier legs count
        self._stop = threading.Event()
        self._log = open(paths.log, "a", buffering=1)  # noqa: SIM115 - lives as long as we do
        self.result_event: dict[str, Any] | None = None
        self.agent_cost_usd: float | None = None  # what the agent says; `ps` shows it beside
        self.timings: dict[str, float] = {"supervisor": time.time()}  # timing.json (bench)
        self.record = read_record(paths)
        self._record_lock = threading.Lock()
        self._metered = threading.Event()  # set at the end: the meter thread stops

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
                self.home, self.plan.proxy.secret, self.plan.proxy.upstream, self.key_env
            )
            secret = self.plan.proxy.secret
            self.key_source = (str(envfiles.secret_path(self.home, secret))
                               if secret and envfiles.has_secret(self.home, secret)
                               else "the environment variable ANTHROPIC_API_KEY")
            proxy = self._start_proxy(key)
            self.timings["proxy"] = time.time()
            syncer = self._start_syncer()
            secrets: dict[str, str] = {}
            for name in self.plan.sandbox.secrets:
                secrets.update(envfiles.read_secret(self.home, name))
            env = sandbox_env(
                self.plan, launch_env(self.plan, base_url=proxy.url, token=self.token), secrets
            )
            env.update(gpus.cuda_env(self.gpus))  # the run's GPUs, whatever the config says
            host, command = self.host, agent_command(self.plan, self.task)
            if proxy.unix_socket is not None:  # no network: the same URL, bridged inside
                host = dataclasses.replace(host, proxy_socket=str(proxy.unix_socket))
                command = bridged(command, proxy.port)
            argv = build_argv(self.plan, host, command)
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
                proc = start(argv, env, stdin=fifo, stdout=subprocess.PIPE, stderr=err,
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
            self.log(f"sandbox started (pid {proc.pid}); proxy on {proxy.url}" + "".join(
                f"; GPU {g['index']} ({g['model']})" for g in self.gpus))
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
            self._metered.set()
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
                cost_usd=usage.get("cost_usd"),  # the proxy's metering, never the agent's
                agent_cost_usd=self.agent_cost_usd,
            )
            if usage:
                write_json(self.paths.folder / "usage.json", usage)
                self._add_proxy_usage(usage, status, self.record.ended_at)
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
        if self.failure:
            return "failed"
        if self.stop_reason == "timeout":
            return "timeout"
        if self.stop_reason:
            return "stopped"
        if self.result_event and self.result_event.get("status") in protocol.STATUSES:
            return str(self.result_event["status"])
        return "succeeded" if exit_code == 0 else "failed"

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """Sandbox stdout -> output.log (all of it) and events.jsonl (protocol events).

        Read in chunks, split by a LineSplitter: a line that never ends (the agent's output
        is untrusted) is cut at lines.MAX_LINE_BYTES instead of growing this process."""
        assert proc.stdout is not None
        splitter = lines.LineSplitter()
        with open(self.paths.output, "ab") as out, open(self.paths.events, "ab") as events:
            while chunk := os.read(proc.stdout.fileno(), READ_CHUNK):
                out.write(chunk)
                out.flush()
                self._events(splitter.feed(chunk), events)
            self._events(splitter.flush(), events)

    def _events(self, raws: list[bytes], events: Any) -> None:
        for raw in raws:
            event = protocol.decode_event(raw.decode("utf-8", "replace"))
            if event is None:
                if lines.was_cut(raw):
                    self.log(f"warning: the sandbox printed a line longer than "
                             f"{lines.MAX_LINE_BYTES} bytes (an event is never that long); "
                             "not read as an event")
                continue
            events.write(raw + b"\n")
            events.flush()
            self._last_seq = max(self._last_seq, event["seq"])
            if isinstance(event.get("cost_usd"), int | float):
                self.agent_cost_usd = float(event["cost_usd"])
                self.save(agent_cost_usd=self.agent_cost_usd)
            if event["type"] == protocol.RESULT:
                self.result_event = event

    # -- proxy and syncer --------------------------------------------------------------
    def _start_proxy(self, key: str) -> Any:
        from ml_agent.backends.local import proxying

        blocked = self.plan.sandbox.network.mode == "blocked"
        unix_socket = self.paths.folder / "proxy.sock" if blocked else None
        proxy = proxying.LocalProxy(self.plan, key, self._key_refused,
                                    unix_socket=unix_socket).start()
        proxy.tokens.put(
            hash_token(self.token),
            TokenRecord(
                run_id=self.paths.run_id,
                expires_at=time.time() + self.plan.sandbox.timeout_s + 300,
                budget_usd=self.plan.proxy.budget_usd,
            ),
        )
        self.proxy = proxy
        threading.Thread(target=self._meter, daemon=True).start()
        return proxy

    def _key_refused(self, status: int, kind: str, message: str) -> None:
        """The upstream refused the key (the proxy's callback): end the run now, saying
        where the key came from, instead of the Claude CLI retrying it for minutes."""
        if self.failure is not None:
            return
        self.failure = (f"the Anthropic API refused the key from {self.key_source} "
                        f"({status} {kind or 'error'}: {message or 'no message'}); "
                        "put a valid key there and start the run again")
        self.log(f"error: {self.failure}")
        event = {"type": protocol.ERROR, "seq": self._last_seq + 1, "ts": time.time(),
                 "message": self.failure, "fatal": True, "kind": "key_refused"}
        with contextlib.suppress(OSError), open(self.paths.events, "ab") as events:
            events.write(json.dumps(event).encode() + b"\n")
        self.request_stop("key refused")

    def _usage(self) -> dict[str, float]:
        proxy = getattr(self, "proxy", None)
        leg = dict(proxy.usage.get(self.paths.run_id)) if proxy is not None else {}
        if not self.prior_usage or not leg:
            return leg or dict(self.prior_usage)
        keys = {*self.prior_usage, *leg}
        return {k: self.prior_usage.get(k, 0.0) + leg.get(k, 0.0) for k in keys}

    def _meter(self) -> None:
        """`ps` shows the cost so far: the proxy's meter, copied into run.json when it moves
        (a dict read per second; the proxy's own path stays free of file writes)."""
        shown = None
        while not self._metered.wait(METER_EVERY_S):
            cost = self._usage().get("cost_usd")
            if cost is not None and cost != shown:
                self.save(cost_usd=cost)
                shown = cost

    def _start_syncer(self) -> Any:
        plan = self.plan.syncer
        if not plan.enabled:
            return None
        token, why_not = envfiles.syncer_token(self.home, plan.secret)
        if token is None:
            self.log(why_not)
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

    def _add_proxy_usage(self, usage: dict[str, float], status: str | None = None,
                         ended_at: float | None = None) -> None:
        """The proxy's usage and cost into result.json on the data volume (`ml_agent.results`,
        shared with Modal: no link followed, no FIFO waited on, a size cap)."""
        from ml_agent.results import WRITTEN, merge_proxy_usage

        data = self.plan.data_volume
        where = f"runs/{self.paths.run_id}/{protocol.RESULT_FILE}"
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended_at)) if ended_at else None
        try:
            outcome = merge_proxy_usage(Path(self.host.volumes[data.key]), self.paths.run_id,
                                        usage, status=status, ended_at=when,
                                        error=self.failure)
        except (OSError, ValueError, UnsafeFile) as exc:
            self.log(f"result.json not updated with the proxy's usage: {exc}")
            return
        if outcome != WRITTEN:  # the agent ended (or was stopped) before writing one
            self.log(f"no {where} on the data volume; the proxy's usage is in usage.json")


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


def _last_seq(path: Path) -> int:
    """The highest seq in an events file (0 when there is none)."""
    last = 0
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            event = protocol.decode_event(line)
            last = max(last, event["seq"]) if event is not None else last
    return last


def _last_line(path: Path) -> str:
    return (lines.last_lines(path, 1) or ["no output"])[0]


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
    """`<run folder> [--key-on-stdin] [--gpu-fds N,M]`: with the flag, stdin holds the
    host's Anthropic key (maybe empty), read to EOF: it never is in this process's
    environment, so nothing started from here inherits it. `--gpu-fds`: the run's GPU locks
    (`gpus.take`), inherited from `up`: held until this process ends, by no child."""
    args = sys.argv[1:] if argv is None else argv
    paths = RunPaths(Path(args[0]))
    if "--gpu-fds" in args:
        for fd in args[args.index("--gpu-fds") + 1].split(","):
            os.set_inheritable(int(fd), False)
    key_env = None
    if "--key-on-stdin" in args[1:]:
        key = sys.stdin.read().strip()
        key_env = {"ANTHROPIC_API_KEY": key} if key else {}
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    supervisor = Supervisor(paths, key_env)
    write_pid(paths, os.getpid())  # `up` wrote it already; this covers a manual start
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: supervisor.request_stop("stopped"))
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
