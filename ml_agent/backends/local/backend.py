"""`LocalBackend`: the Backend protocol on this machine (bubblewrap sandbox + supervisor)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_agent import lines, resume
from ml_agent.backends.local import bwrap, envfiles, gpus, image, registry, sandbox, volumes
from ml_agent.backends.local.registry import FINAL, RunPaths
from ml_agent.config.types import GpuSpec
from ml_agent.contracts import RunRecord, mint_token, new_run_id, protocol
from ml_agent.errors import BackendError, SandboxError
from ml_agent.plan import Plan

#: How long `up` waits for the supervisor to start the sandbox.
START_TIMEOUT_S = 60.0
#: How long `stop` waits for the supervisor (agent grace + final sync) before killing it.
STOP_TIMEOUT_S = 60.0
POLL_S = 0.05
#: The most of a log read at once when following it (memory per followed run).
READ_CHUNK = 1 << 16

Progress = Callable[[str], None]


class LocalBackend:
    """Runs a Plan in a bwrap sandbox on this machine; the registry is `$ML_AGENT_HOME/runs/`.

    `progress` receives one-line status updates while the image builds and the sandbox starts.
    """

    name = "local"

    def __init__(self, home: Path | None = None, progress: Progress | None = None) -> None:
        self.home = home or registry.home()
        self.progress: Progress = progress or (lambda _: None)
        self.warnings: list[str] = []
        self.notes: list[str] = []  # facts `up` states once (which bwrap runs the sandbox)
        self._bwrap: bwrap.Choice | None = None
        self._checked: Plan | None = None  # the plan `check` passed (`up` checks first)
        self._lease: gpus.Lease | None = None  # GPUs locked by `prepare`, for `_start`

    # -- up ------------------------------------------------------------------------------
    def check(self, plan: Plan) -> None:
        """Everything that can be known before starting, each failure a clear error; the
        warnings first, so that a failed check still has them (`up` prints them either way)."""
        self.warnings += envfiles.permission_warnings(self.home)
        if not plan.proxy.enabled:
            raise SandboxError(
                "the local backend needs the proxy (proxy.enabled: true): the sandbox never "
                "holds the Anthropic key"
            )
        image.check_python(plan)
        image.check_run_layers(plan)
        image.check_apt(plan)
        if plan.sandbox.gpu:
            self.warnings += _check_gpus(plan.sandbox.gpu)
        envfiles.proxy_key(self.home, plan.proxy.secret, plan.proxy.upstream, os.environ)
        for name in plan.sandbox.secrets:
            envfiles.read_secret(self.home, name)
        if plan.syncer.enabled:
            token, why_not = envfiles.syncer_token(self.home, plan.syncer.secret)
            if token is None:
                self.warnings.append(f"{why_not}; the metrics stay in the trackio volume")
        if plan.sandbox.network.mode == "allowlist":
            self.warnings.append(
                "sandbox.network allowlist cannot be enforced by the local backend: the "
                "sandbox's network is open, this machine's loopback services included "
                "(use `network: blocked` or the Modal backend)"
            )
        elif plan.sandbox.network.mode == "open":
            self.warnings.append(
                "the sandbox shares this machine's network: it can reach services on "
                "127.0.0.1 and abstract Unix sockets (`sandbox.network: blocked` cuts it off)"
            )
        ignored = [name for name, value in (("cpu", plan.sandbox.cpu),
                                            ("memory", plan.sandbox.memory_mib),
                                            ("idle_timeout", plan.sandbox.idle_timeout_s),
                                            ("region", plan.sandbox.region),
                                            ("cloud", plan.sandbox.cloud))
                   if value is not None]
        if ignored:
            self.warnings.append(
                f"sandbox {', '.join(ignored)} not enforced by the local backend "
                "(the timeout is)"
            )
        self._bwrap = bwrap.choose()
        self.notes.append(self._bwrap.summary())
        if (warning := self._bwrap.warning()) is not None:
            self.warnings.append(warning)
        self._checked = plan

    def up(self, plan: Plan, *, task: str | None, detach: bool) -> RunRecord:
        return self._start(self.prepare(plan, task))

    def resume(self, run_id: str, *, task: str | None, detach: bool,
               budget_usd: float | None = None) -> RunRecord:
        """A new sandbox for an ended run: the same run folder and conversation, a new run
        token, the budget that is left (`ml_agent.resume`); `budget_usd`: the run's new
        total budget (`up --resume RUN --budget USD`)."""
        return self._start(self.prepare_resume(run_id, task, budget_usd))

    def prepare_resume(self, run_id: str, task: str | None,
                       budget_usd: float | None = None) -> RunPaths:
        """Check the run can be resumed, then rewrite its launch.json (a new token, the
        budget left, the session to continue) and start a new leg in run.json."""
        paths = registry.find(run_id, self.home)
        record = registry.read_record(paths)
        resume.check_resumable(record, live=registry.supervisor_pid(paths) is not None)
        if record.status not in FINAL:  # its supervisor died (killed, machine rebooted)
            record.status, record.ended_at = "failed", record.ended_at or time.time()
        try:  # our own file (0600), written by `up`
            launch = json.loads(paths.launch.read_text())
            plan = Plan.model_validate(launch["plan"])
        except (OSError, ValueError, KeyError) as exc:
            raise BackendError(f"run {paths.run_id} cannot be resumed: its launch record "
                               f"{paths.launch} is unreadable ({exc})") from None
        data_root = Path(launch["host"]["volumes"][plan.data_volume.key])
        result = resume.read_result(data_root, paths.run_id)
        budget = launch.get("run_budget_usd", plan.proxy.budget_usd)
        left = resume.remaining_budget(record, budget, result, raised_to=budget_usd)
        budget = budget if budget_usd is None else budget_usd  # kept for the next leg
        session = resume.find_session(data_root, paths.run_id, result,
                                      self.events(paths.run_id, follow=False))
        self.progress("checking the local sandbox")
        self.check(plan)
        shared = bool(launch.get("share_gpus"))  # a resumed run keeps its way of holding GPUs
        lease = self._take_gpus(plan, paths.run_id, shared)
        with _released_on_error(lease):
            plan = plan.model_copy(update={"proxy": plan.proxy.model_copy(
                update={"budget_usd": left})})
            plan = plan.for_launch(paths.run_id, resume_session=session)
            launch.update(
                plan=plan.model_dump(mode="json"),
                task=task,
                token=mint_token(),  # the old one was revoked with its proxy
                run_budget_usd=budget,
                prior_usage=_prior_usage(paths, record),
                gpus=lease.to_json() if lease else [],
            )
            registry.write_json(paths.launch, launch, mode=0o600)
            record.new_leg(time.time())
            record.gpus = launch["gpus"]
            registry.write_record(paths, record)
        self._lease = lease
        return paths

    def _start(self, paths: RunPaths) -> RunRecord:
        self.progress("starting the sandbox")
        lease, self._lease = self._lease, None
        fds = lease.fds if lease else ()
        try:  # the supervisor inherits the GPU locks and holds them for the run's life
            pid = spawn_detached(
                [sys.executable, "-m", "ml_agent.backends.local.supervisor", str(paths.folder),
                 "--key-on-stdin", *(["--gpu-fds", ",".join(map(str, fds))] if fds else [])],
                log=paths.log,
                cwd=paths.folder,
                env=supervisor_env(os.environ),
                stdin=os.environ.get("ANTHROPIC_API_KEY", ""),
                keep_fds=fds,
            )
        finally:
            if lease:
                lease.release()
        registry.write_pid(paths, pid)
        try:
            return self._wait_started(paths)
        except KeyboardInterrupt:
            self.stop(paths.run_id)  # nothing may keep running behind an interrupted `up`
            raise

    def prepare(self, plan: Plan, task: str | None) -> RunPaths:
        """Check, lock the run's GPUs (kept for `_start`, which hands them to the
        supervisor), build the image, create the volumes and the run's folder (launch.json,
        a `starting` run.json): all the supervisor needs, before it is started."""
        if plan.launch is None:
            plan = plan.for_launch(new_run_id())
        assert plan.launch is not None
        if self._checked is not plan:
            self.progress("checking the local sandbox")
            self.check(plan)
        lease = self._take_gpus(plan, plan.launch.run_id, plan.launch.share_gpus)
        with _released_on_error(lease):
            paths = self._prepare(plan, task, lease)
        self._lease = lease
        return paths

    def _take_gpus(self, plan: Plan, run_id: str, shared: bool) -> gpus.Lease | None:
        """Lock the run's GPUs now (GpusBusy when too few are free); say which it got."""
        if not plan.sandbox.gpu:
            return None
        lease = gpus.take(GpuSpec.parse(plan.sandbox.gpu).count, home=self.home,
                          run_id=run_id, shared=shared)
        self.notes.append(f"run {run_id} gets {lease.describe()}")
        return lease

    def _prepare(self, plan: Plan, task: str | None, lease: gpus.Lease | None) -> RunPaths:
        """`prepare` once the run's GPUs (if any) are locked."""
        assert plan.launch is not None
        cached = image.cached_venv(plan, self.home)
        if cached is None:
            self.progress("building the local image (first run only; about a minute)")
        venv = image.ensure_venv(plan, self.home, self.progress)
        vols = volumes.ensure_volumes(plan, self.home)

        paths = RunPaths.of(plan.launch.run_id, self.home)
        paths.folder.mkdir(parents=True)
        paths.home.mkdir()
        paths.work.mkdir()
        host = sandbox.HostLayout.detect(
            venv=str(venv),
            volumes=vols,
            home=str(paths.home),
            workdir=str(paths.work),
            gpu=bool(plan.sandbox.gpu),
            bwrap=self._bwrap,
        )
        leased = lease.to_json() if lease else []
        launch = {
            "plan": plan.model_dump(mode="json"),
            "task": task,
            "token": mint_token(),
            "host": dataclasses.asdict(host),
            "ml_agent_home": str(self.home),
            "gpus": leased,  # the supervisor gives the sandbox CUDA_VISIBLE_DEVICES
            "share_gpus": bool(lease and lease.shared),
        }
        registry.write_json(paths.launch, launch, mode=0o600)
        record = RunRecord.launched(plan, backend=self.name,
                                    config=_display_path(plan.config_path), gpus=leased)
        registry.write_record(paths, record)
        return paths

    def _wait_started(self, paths: RunPaths) -> RunRecord:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            record = registry.read_record(paths)
            if record.status != "starting":
                if record.status == "failed" and record.exit_code is None:
                    raise SandboxError(f"the local run failed to start: {_tail(paths)}")
                return record
            if registry.supervisor_pid(paths) is None:
                if registry.read_record(paths).status != "starting":
                    continue
                raise SandboxError(f"the local run's supervisor exited early: {_tail(paths)}")
            time.sleep(POLL_S)
        self.stop(paths.run_id)
        raise SandboxError(f"the sandbox did not start within {START_TIMEOUT_S:.0f} s")

    # -- conversation ----------------------------------------------------------------------
    def events(self, run_id: str, *, follow: bool) -> Iterator[dict[str, Any]]:
        paths = registry.find(run_id, self.home)
        for line in _tail_lines(paths, paths.events, follow):
            event = protocol.decode_event(line)
            if event is not None:
                yield event

    def send(self, run_id: str, line: str) -> None:
        paths = registry.find(run_id, self.home)
        try:
            fd = os.open(paths.stdin, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                raise BackendError(f"run {paths.run_id} is not running") from None
            raise
        try:
            os.set_blocking(fd, True)
            os.write(fd, line.encode() if line.endswith("\n") else (line + "\n").encode())
        finally:
            os.close(fd)

    def logs(self, run_id: str, *, follow: bool) -> Iterator[str]:
        paths = registry.find(run_id, self.home)
        yield from _tail_lines(paths, paths.output, follow)

    def token(self, run_id: str) -> str | None:
        """The run's token, for redaction by the CLI (the launch file is private)."""
        try:
            paths = registry.find(run_id, self.home)
            return str(json.loads(paths.launch.read_text())["token"])
        except (OSError, ValueError, KeyError):
            return None

    # -- registry ------------------------------------------------------------------------
    def ps(self) -> list[RunRecord]:
        records = []
        for paths in registry.all_runs(self.home):
            try:
                record = registry.read_record(paths)
            except Exception:  # noqa: BLE001 - a torn or foreign folder must not break `ps`
                continue
            if registry.supervisor_gone(paths, record):
                record.status = "failed"  # its supervisor died (machine rebooted, killed)
            records.append(record)
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    def record(self, run_id: str) -> RunRecord:
        return registry.read_record(registry.find(run_id, self.home))

    def stop(self, run_id: str) -> RunRecord:
        paths = registry.find(run_id, self.home)
        pid = registry.supervisor_pid(paths)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while registry.supervisor_pid(paths) is not None and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if registry.supervisor_pid(paths) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # its session: supervisor and bwrap
            exit_by = time.monotonic() + 5  # its last threads, which may hold its GPU locks
            while not registry.exited(pid) and time.monotonic() < exit_by:
                time.sleep(0.01)
        _kill_leftovers(paths)
        record = registry.read_record(paths)
        if record.status not in FINAL:
            record.status = "stopped"
            record.ended_at = time.time()
            registry.write_record(paths, record)
        return record


#: What the supervisor keeps of the launcher's environment: what it, the proxy's upstream
#: client and the syncer's uploads need to run. Anything else may be a secret (cloud keys,
#: tokens), and this process's children include bwrap. The host's Anthropic key goes on
#: stdin (see supervisor.main), never in this environment.
SUPERVISOR_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH",
    "VIRTUAL_ENV", "ML_AGENT_HOME", "ML_AGENT_DEBUG", "ML_AGENT_GPU_ROOT", "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
    "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy",
})
SUPERVISOR_ENV_PREFIXES = ("LC_", "XDG_", "HF_", "HUGGINGFACE_", "TRACKIO_")
_SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


def supervisor_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The explicit environment a run's supervisor starts with (see SUPERVISOR_ENV)."""
    return {
        name: value
        for name, value in environ.items()
        if (name in SUPERVISOR_ENV or name.startswith(SUPERVISOR_ENV_PREFIXES))
        and not any(word in name.upper() for word in _SECRET_WORDS)
    }


#: Runs in a throw-away interpreter: starts the supervisor in its own session and exits, so
#: the supervisor is not our child (no zombie, no reaping) and outlives us and our Ctrl-C.
#: posix_spawn, not Popen: nothing here waits for the child, and a Popen never waited for
#: warns when collected; the spawned process is init's to reap. Its stdin (a pipe holding
#: what `stdin=` gave) is passed on as is.
_SPAWN = """
import os, sys
os.chdir(sys.argv[2])
log = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
dup2 = os.POSIX_SPAWN_DUP2
print(os.posix_spawn(sys.argv[3], sys.argv[3:], os.environ, setsid=True,
                     file_actions=[(dup2, log, 1), (dup2, log, 2)]))
"""


def spawn_detached(
    argv: list[str], *, log: Path, cwd: Path, env: Mapping[str, str], stdin: str = "",
    keep_fds: Sequence[int] = (),
) -> int:
    """Start `argv` detached (its own session, output to `log`) with exactly `env`, `stdin`
    written to it (secrets go there, never in env or argv); returns its pid. Used for a
    run's supervisor and a sweep's driver. `keep_fds` stay open in it, as the same numbers
    (a run's GPU locks: flock belongs to the open file, which it then shares)."""
    out = subprocess.run(
        [sys.executable, "-c", _SPAWN, str(log), str(cwd), *argv],
        capture_output=True, text=True, check=True, env=dict(env), input=stdin,
        pass_fds=tuple(keep_fds),
    )
    return int(out.stdout)


def _check_gpus(gpu: str) -> list[str]:
    """The GPUs `sandbox.gpu` asks for exist on this machine (free or not: `take` says);
    a warning when none is of the type it names (the local backend runs on what it has)."""
    have = gpus.inventory()
    spec = GpuSpec.parse(gpu)
    count = spec.count
    if not have:
        where = gpus.root() / gpus.GPUS_DIR
        raise SandboxError(
            f"sandbox.gpu is {gpu!r} but this machine has no NVIDIA GPU (nothing in {where}); "
            "set `--set sandbox.gpu=null` to run on the CPU, or use the Modal backend"
        )
    if count > len(have):
        raise SandboxError(
            f"sandbox.gpu is {gpu!r} but this machine has {len(have)} NVIDIA GPU"
            f"{'s' if len(have) > 1 else ''} ({', '.join(g.describe() for g in have)}); "
            f"ask for at most {len(have)} (e.g. `--set sandbox.gpu={gpu.partition(':')[0]}:"
            f"{len(have)}`), or use the Modal backend"
        )
    if not any(gpus.is_type(g, spec.type) for g in have):
        models = ", ".join(dict.fromkeys(g.model for g in have))
        return [f"sandbox.gpu asks for {spec.type} but this machine's GPUs are {models}: the "
                "local backend runs on the GPUs it has"]
    return []


@contextlib.contextmanager
def _released_on_error(lease: gpus.Lease | None) -> Iterator[None]:
    """GPUs locked for a launch that fails before its supervisor holds them: let go."""
    try:
        yield
    except BaseException:
        if lease:
            lease.release()
        raise


def _kill_leftovers(paths: RunPaths) -> None:
    """SIGKILL any bwrap of this run still alive (its supervisor was killed before bwrap
    armed --die-with-parent). bwrap's sandbox init shares its command line, which names
    the run folder; killing that init ends the sandbox's whole pid namespace."""
    marker = str(paths.home).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"bwrap") and marker in argv:
                os.kill(int(entry.name), signal.SIGKILL)


def _prior_usage(paths: RunPaths, record: RunRecord) -> dict[str, float]:
    """The proxy's usage of the run's earlier legs (usage.json, written at each leg's end),
    which the next leg's meter adds to; the registry's cost when a crash left no file."""
    usage: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError, AttributeError):
        loaded = json.loads((paths.folder / "usage.json").read_text())  # our own file
        usage = {k: float(v) for k, v in loaded.items() if isinstance(v, int | float)}
    if record.cost_usd is not None and record.cost_usd > usage.get("cost_usd", 0.0):
        usage["cost_usd"] = record.cost_usd
    return usage


def _display_path(path: str) -> str:
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return rel
    return path


def _tail(paths: RunPaths, n: int = 8) -> str:
    tail = [*lines.last_lines(paths.output, n), *lines.last_lines(paths.log, n)][-n:]
    return "\n".join(tail) or f"see {paths.log}"


def _tail_lines(paths: RunPaths, path: Path, follow: bool) -> Iterator[str]:
    """Complete lines of a growing file; with `follow`, until the run has ended. A line is
    cut at lines.MAX_LINE_BYTES (the agent writes output.log: a line may never end)."""
    pos = 0
    splitter = lines.LineSplitter()
    while True:
        done = not follow or _ended(paths)  # checked before reading: no line is lost
        full = False
        chunk = b""
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
            fh.seek(pos)
            chunk = fh.read(READ_CHUNK)  # a long unread log is not held at once
            pos += len(chunk)
            full = len(chunk) == READ_CHUNK
        for raw in splitter.feed(chunk):
            yield raw.decode("utf-8", "replace")
        if full:
            continue  # more is there: read it before deciding whether the run has ended
        if done:
            for raw in splitter.flush():
                yield raw.decode("utf-8", "replace")
            return
        time.sleep(POLL_S)


def _ended(paths: RunPaths) -> bool:
    try:
        record = registry.read_record(paths)
    except Exception:  # noqa: BLE001
        return True
    return record.status in FINAL or registry.supervisor_gone(paths, record)
