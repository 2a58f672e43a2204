"""The deployed Modal app: the proxy as an ASGI web endpoint, the syncer and run-end functions.

Modal re-imports this module by name inside each container and looks the function up by
its global name, so `proxy`, `syncer`, `sync_now`, `finalize_run`, `run_events` and
`list_runs` are plain module-level functions and `build_app(plan)` registers them on an
App. Containers never see the YAML: every setting travels as an environment variable
(`ML_AGENT_*` below) set on the function, and keys arrive through Modal secrets
(`proxy.secret`, `syncer.secret`) only.

The syncer and every `sync_now` share their upload records (a modal.Dict, stores.py), so
the final sync of a `stop` uploads only what changed; `finalize_run` mounts the data volume
to write the proxy's usage into the run's result.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_agent.contracts import AGENT_DIR

if TYPE_CHECKING:
    import modal

    from ml_agent.backends.modal.stores import ModalSyncState
    from ml_agent.plan import Plan
    from ml_agent.syncer import Uploader

#: Where `add_local_python_source` puts packages in a container (modal.mount.ROOT_DIR).
REMOTE_ROOT = "/root"
PYTHON = "3.11"
PROXY_PACKAGES = ("starlette>=1.0", "httpx>=0.28,<0.29", "sniffio>=1.3", "pydantic>=2.11,<3")
SYNCER_PACKAGES = ("trackio>=0.43,<0.44", "huggingface_hub", "pydantic>=2.11,<3")
#: Requests in flight in the one proxy container (it streams: I/O-bound). A sweep runs up
#: to 100 agents (max_parallel) and an agent may have more than one request open (the
#: CLI's side calls): 64 made a full sweep queue at Modal's door.
PROXY_CONCURRENCY = 256
PROXY_TIMEOUT_S = 3600  # a function's lifetime per input; Modal limits one web request to 150 s
SYNCER_TIMEOUT_S = 24 * 3600  # Modal's maximum; `up` respawns a syncer that stopped
FINALIZE_TIMEOUT_S = 300
FUNCTION_NAMES = ("proxy", "syncer", "sync_now", "finalize_run", "run_events", "list_runs",
                  "resume_info")
#: Parts of ml_agent the containers never import (a config/CLI edit must not redeploy).
UNUSED_SOURCE = (("cli",), ("config",), ("backends", "local"), ("_bundle",))
#: The syncer keeps going while a sandbox of its app may still appear or run.
SYNCER_MIN_UPTIME_S = 600.0


# -- settings, via env ---------------------------------------------------------------------
def settings_env(plan: Plan) -> dict[str, str]:
    """Everything the proxy and syncer containers need from the config (no secrets)."""
    proxy, syncer = plan.proxy, plan.syncer
    env = {
        "ML_AGENT_APP": plan.app,
        "ML_AGENT_APP_HASH": plan.app_hash,
        "ML_AGENT_PROXY_UPSTREAM": proxy.upstream,
        "ML_AGENT_PROXY_ALLOWED_PATHS": json.dumps(list(proxy.allowed_paths)),
        "ML_AGENT_PROXY_BUDGET_USD": "" if proxy.budget_usd is None else f"{proxy.budget_usd:g}",
        # finalize_run writes the proxy's usage into result.json on the data volume.
        "ML_AGENT_DATA_VOLUME": plan.data_volume.name,
        "ML_AGENT_DATA_MOUNT": plan.data_volume.mount,
    }
    if syncer.enabled and syncer.mount and syncer.volume_name:
        from ml_agent.syncer.settings import SyncerSettings

        settings = SyncerSettings.from_plan(
            syncer,
            # The function stops itself (and clears its pulse) before Modal's 24 h limit;
            # it also stops once no sandbox of the app is left, not on idleness.
            idle_stop_s=0.0,
            max_runtime_s=SYNCER_TIMEOUT_S - 1800.0,
        )
        env.update(settings.to_env(), ML_AGENT_SYNC_VOLUME=syncer.volume_name)
    return env


def deployed_hash(plan: Plan) -> str:
    """What `up` compares with the deployed app: `plan.app_hash` (proxy, syncer) plus the
    data volume that `finalize_run` mounts (the Plan's app_hash leaves volumes out)."""
    data = plan.data_volume
    return hashlib.sha256(f"{plan.app_hash}\0{data.name}\0{data.mount}".encode()).hexdigest()


def code_hash(root: Path | None = None) -> str:
    """What the containers run: the ml_agent source files they ship (the same selection as
    `add_local_python_source` below), the agent protocol file and the pip packages. `up`
    redeploys when it differs from the deployed app's, so a new ml-agent version never talks
    to an old proxy or syncer; a config/CLI edit leaves it unchanged."""
    root = root or Path(__file__).resolve().parents[2]  # the ml_agent package folder
    digest = hashlib.sha256("\0".join(PROXY_PACKAGES + SYNCER_PACKAGES).encode())
    files = [(f"agent/{AGENT_DIR.joinpath('protocol.py').name}", AGENT_DIR / "protocol.py")]
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not _unused_source(rel / d))
        files += [(f"ml_agent/{(rel / n).as_posix()}", Path(folder, n))
                  for n in sorted(names) if not _unused_source(rel / n)]
    for name, path in files:
        digest.update(f"\0{name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _unused_source(path: Path) -> bool:
    """modal's `ignore` filter (paths relative to ml_agent/): .py files the containers use."""
    parts = Path(path).parts
    if "__pycache__" in parts:
        return True
    if any(parts[: len(prefix)] == prefix for prefix in UNUSED_SOURCE):
        return True
    # Directories are walked (suffix ""), files must be Python.
    return Path(path).suffix not in ("", ".py")


def _support_image(packages: tuple[str, ...]) -> modal.Image:
    """A slim image with our own source (the protocol file lives outside the package)."""
    import modal

    return (
        modal.Image.debian_slim(python_version=PYTHON)
        .uv_pip_install(*packages)
        .add_local_file(AGENT_DIR / "protocol.py", f"{REMOTE_ROOT}/agent/protocol.py")
        # Only what the containers import: a config/CLI edit must not redeploy or race.
        .add_local_python_source("ml_agent", ignore=_unused_source)
    )


def build_app(plan: Plan) -> modal.App:
    """The app `up` deploys: the proxy web endpoint and the syncer, named by `plan.app`."""
    import modal

    from ml_agent.backends.modal import builder

    # include_source=False: the images carry our source (filtered) instead of modal mounting
    # the whole package of this module.
    app = modal.App(plan.app, include_source=False)
    env: dict[str, str | None] = dict(settings_env(plan))
    slim = _support_image(PROXY_PACKAGES)
    if plan.proxy.enabled:
        proxy_secrets = builder.secrets([plan.proxy.secret] if plan.proxy.secret else [])
        web = modal.asgi_app()(proxy)
        web = modal.concurrent(max_inputs=PROXY_CONCURRENCY)(web)
        app.function(
            image=slim,
            secrets=proxy_secrets,
            env=env,
            # One container: budgets and usage totals are counted in one place.
            max_containers=1,
            timeout=PROXY_TIMEOUT_S,
            scaledown_window=300,
        )(web)
    if plan.syncer.enabled and plan.syncer.volume_name and plan.syncer.mount:
        synced = modal.Volume.from_name(plan.syncer.volume_name, create_if_missing=True)
        options: dict[str, Any] = {
            "image": _support_image(SYNCER_PACKAGES),
            "secrets": builder.secrets([plan.syncer.secret] if plan.syncer.secret else []),
            "env": env,
            # The syncer only reads the volume; uploads go from its own snapshot copy.
            "volumes": {plan.syncer.mount: synced.with_mount_options(read_only=True)},
        }
        app.function(**options, timeout=SYNCER_TIMEOUT_S, max_containers=1)(syncer)
        app.function(**options, timeout=600)(sync_now)
    data = plan.data_volume
    app.function(
        image=slim,  # no secret: it only edits result.json in the run folders
        env=env,
        volumes={data.mount: modal.Volume.from_name(data.name, create_if_missing=True)},
        timeout=FINALIZE_TIMEOUT_S,
    )(finalize_run)
    read_only = modal.Volume.from_name(data.name, create_if_missing=True).with_mount_options(
        read_only=True
    )
    app.function(
        image=slim,  # no secret: it only reads a run's transcript
        env=env,
        volumes={data.mount: read_only},
        timeout=FINALIZE_TIMEOUT_S,
    )(run_events)
    app.function(image=slim, env=env, volumes={data.mount: read_only},
                 timeout=FINALIZE_TIMEOUT_S)(list_runs)
    app.function(image=slim, env=env, volumes={data.mount: read_only},
                 timeout=FINALIZE_TIMEOUT_S)(resume_info)
    return app


# -- in the containers ---------------------------------------------------------------------
def proxy() -> Any:
    """The proxy's ASGI app (Modal calls this once per container)."""
    import threading
    import time

    from ml_agent.backends.modal.stores import (
        KEY_REFUSED,
        AppState,
        ModalTokenStore,
        ModalUsageSink,
    )
    from ml_agent.proxy import create_app

    app_name = os.environ["ML_AGENT_APP"]
    state = AppState(app_name)

    def key_refused(status: int, kind: str, message: str) -> None:
        # For `up`/`attach` to end the run and name proxy.secret (issue 13.2); a modal.Dict
        # write is a network call, so not on the proxy's event loop.
        fact = {"ts": time.time(), "status": status, "type": kind, "message": message}
        threading.Thread(target=state.put, args=(KEY_REFUSED, fact), daemon=True).start()

    return create_app(
        upstream=os.environ["ML_AGENT_PROXY_UPSTREAM"],
        api_key=os.environ["ANTHROPIC_API_KEY"],
        tokens=ModalTokenStore.for_app(app_name),
        usage=ModalUsageSink.for_app(app_name),
        allowed_paths=tuple(json.loads(os.environ["ML_AGENT_PROXY_ALLOWED_PATHS"])),
        on_upstream_auth_error=key_refused,
    )


def _reload_volume() -> None:
    """See what the sandbox committed to the volume since the last scan."""
    import modal

    modal.Volume.from_name(os.environ["ML_AGENT_SYNC_VOLUME"]).reload()


def _sync_state() -> ModalSyncState:
    """The upload records the syncer and every final sync share (one modal.Dict per app)."""
    from ml_agent.backends.modal.stores import ModalSyncState

    return ModalSyncState.for_app(os.environ["ML_AGENT_APP"], os.environ["ML_AGENT_SYNC_VOLUME"])


def _no_live_sandbox(started: float, min_uptime_s: float) -> bool:
    """Stop once no sandbox of this app is running (after a grace period for new runs)."""
    import modal

    if time.monotonic() - started < min_uptime_s:
        return False
    app = modal.App.lookup(os.environ["ML_AGENT_APP"])
    return not list(modal.Sandbox.list(app_id=app.app_id))


def syncer() -> None:
    """The one long-running syncer of this app (`up` spawns it when its pulse stops)."""
    run_syncer()


def run_syncer(
    *, uploader: Uploader | None = None, min_uptime_s: float = SYNCER_MIN_UPTIME_S
) -> str:
    """The syncer's body (`uploader`: tests pass one; by default trackio.sync, HF_TOKEN)."""
    from ml_agent.backends.modal.stores import AppState
    from ml_agent.syncer import SyncerSettings, run_forever

    started = time.monotonic()
    pulse = AppState(os.environ["ML_AGENT_APP"])
    state = _sync_state()

    def before_scan() -> None:
        # Reload the volume (the sandbox's commits) and the records (sync_now's uploads),
        # and show `up` that this syncer is alive.
        _reload_volume()
        state.refresh()
        pulse.put("syncer_heartbeat", time.time())

    try:
        return run_forever(
            SyncerSettings.from_env(),
            before_scan=before_scan,
            should_stop=lambda: _no_live_sandbox(started, min_uptime_s),
            uploader=uploader,
            state=state,
        )
    finally:
        pulse.put("syncer_heartbeat", 0.0)


def sync_now() -> dict[str, Any]:
    """One final sync (`stop` calls it after the sandbox has ended); what it did."""
    return final_sync()


def final_sync(*, uploader: Uploader | None = None) -> dict[str, Any]:
    """sync_now's body: uploads only what changed since the last upload by any syncer."""
    from ml_agent.syncer import SyncerSettings, build_syncer

    state = _sync_state()
    sync = build_syncer(SyncerSettings.from_env(), uploader=uploader, state=state)
    try:
        _reload_volume()
        state.refresh()
        report = sync.final_sync()
    finally:
        sync.close()
    return {
        "space_id": report.space_id,
        "projects": report.projects,
        "uploaded": list(report.uploaded),
        "failed": sorted(set(report.failed) | set(report.busy)),
    }


def finalize_run(
    run_id: str, usage: dict[str, float], status: str | None = None,
    ended_at: float | None = None, record: dict[str, Any] | None = None,
    error: str | None = None,
) -> str:
    """Write the proxy's usage into the run's result.json on the data volume, keep the
    run's registry entry (`record`) beside it as run.json, and commit.

    `stop` (and `finish`) call it once the sandbox has ended, so the agent's last write is
    committed; `status`/`ended_at` fill in a result.json the agent could not finish, and
    `error` (why the launcher ended the run, e.g. a key the upstream refused) fails it. The
    run folder is the durable record of a run: the registry modal.Dict, whose entries
    expire, is rebuilt from the run.json files (`list_runs`).
    """
    import modal

    from ml_agent.results import WRITTEN, merge_proxy_usage, write_run_record

    volume = modal.Volume.from_name(os.environ["ML_AGENT_DATA_VOLUME"])
    volume.reload()  # the sandbox's last commit
    root = Path(os.environ["ML_AGENT_DATA_MOUNT"])
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended_at)) if ended_at else None
    outcome = merge_proxy_usage(root, run_id, usage, status=status, ended_at=when,
                                error=error)
    kept = record is not None and write_run_record(root, run_id, record)
    if outcome == WRITTEN or kept:
        volume.commit()
    return outcome


def list_runs() -> list[dict[str, Any]]:
    """The registry entries kept in the run folders on the data volume (run.json)."""
    import modal

    from ml_agent.results import read_run_records

    modal.Volume.from_name(os.environ["ML_AGENT_DATA_VOLUME"]).reload()
    return read_run_records(Path(os.environ["ML_AGENT_DATA_MOUNT"]))


def run_events(run_id: str, before: int) -> list[dict[str, Any]]:
    """The run's events with `seq` below `before`, from its transcript on the data volume.

    A re-attaching client calls it when the sandbox's output no longer starts at the first
    event (V2 sandboxes keep only recent output). It sees what the sandbox has committed to
    the volume: all of it once the sandbox has ended.
    """
    import modal

    from ml_agent.results import read_run_events

    modal.Volume.from_name(os.environ["ML_AGENT_DATA_VOLUME"]).reload()
    return read_run_events(Path(os.environ["ML_AGENT_DATA_MOUNT"]), run_id, before)


def resume_info(run_id: str) -> dict[str, Any]:
    """What `up --resume` needs from the run folder: its result.json (the cost so far) and
    the Claude session to continue (`ml_agent.resume.find_session`; None when it has none)."""
    import modal

    from ml_agent.errors import BackendError
    from ml_agent.resume import find_session, read_result

    modal.Volume.from_name(os.environ["ML_AGENT_DATA_VOLUME"]).reload()
    root = Path(os.environ["ML_AGENT_DATA_MOUNT"])
    result = read_result(root, run_id)
    try:
        session: str | None = find_session(root, run_id, result)
    except BackendError:
        session = None
    return {"result": result, "session": session}
