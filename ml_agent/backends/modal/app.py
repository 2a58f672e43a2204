"""The deployed Modal app: the proxy as an ASGI web endpoint, the syncer as functions.

Modal re-imports this module by name inside each container and looks the function up by
its global name, so `proxy`, `syncer` and `sync_now` are plain module-level functions and
`build_app(plan)` registers them on an App. Containers never see the YAML: every setting
travels as an environment variable (`ML_AGENT_*` below) set on the function, and keys
arrive through Modal secrets (`proxy.secret`, `syncer.secret`) only.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_agent.contracts import AGENT_DIR

if TYPE_CHECKING:
    import modal

    from ml_agent.plan import Plan

#: Where `add_local_python_source` puts packages in a container (modal.mount.ROOT_DIR).
REMOTE_ROOT = "/root"
PYTHON = "3.11"
PROXY_PACKAGES = ("starlette>=1.0", "httpx>=0.28,<0.29", "sniffio>=1.3", "pydantic>=2.11,<3")
SYNCER_PACKAGES = ("trackio>=0.43,<0.44", "huggingface_hub", "pydantic>=2.11,<3")
PROXY_CONCURRENCY = 64  # requests in flight in the one proxy container
PROXY_TIMEOUT_S = 3600  # a function's lifetime per input; Modal limits one web request to 150 s
SYNCER_TIMEOUT_S = 24 * 3600  # Modal's maximum; `up` respawns a syncer that stopped
FUNCTION_NAMES = ("proxy", "syncer", "sync_now")
#: Parts of ml_agent the containers never import (a config/CLI edit must not redeploy).
UNUSED_SOURCE = (("cli",), ("config",), ("backends", "local"))
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
    if plan.proxy.enabled:
        proxy_secrets = builder.secrets([plan.proxy.secret] if plan.proxy.secret else [])
        web = modal.asgi_app()(proxy)
        web = modal.concurrent(max_inputs=PROXY_CONCURRENCY)(web)
        app.function(
            image=_support_image(PROXY_PACKAGES),
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
    return app


# -- in the containers ---------------------------------------------------------------------
def proxy() -> Any:
    """The proxy's ASGI app (Modal calls this once per container)."""
    from ml_agent.backends.modal.stores import ModalTokenStore, ModalUsageSink
    from ml_agent.proxy import create_app

    app_name = os.environ["ML_AGENT_APP"]
    return create_app(
        upstream=os.environ["ML_AGENT_PROXY_UPSTREAM"],
        api_key=os.environ["ANTHROPIC_API_KEY"],
        tokens=ModalTokenStore.for_app(app_name),
        usage=ModalUsageSink.for_app(app_name),
        allowed_paths=tuple(json.loads(os.environ["ML_AGENT_PROXY_ALLOWED_PATHS"])),
    )


def _reload_volume() -> None:
    """See what the sandbox committed to the volume since the last scan."""
    import modal

    modal.Volume.from_name(os.environ["ML_AGENT_SYNC_VOLUME"]).reload()


def _reload_and_pulse() -> None:
    """The long-running syncer's before_scan: reload, and show `up` that it is alive."""
    from ml_agent.backends.modal.stores import AppState

    _reload_volume()
    AppState(os.environ["ML_AGENT_APP"]).put("syncer_heartbeat", time.time())


def _no_live_sandbox(started: float) -> bool:
    """Stop once no sandbox of this app is running (after a grace period for new runs)."""
    import modal

    if time.monotonic() - started < SYNCER_MIN_UPTIME_S:
        return False
    app = modal.App.lookup(os.environ["ML_AGENT_APP"])
    return not list(modal.Sandbox.list(app_id=app.app_id))


def syncer() -> None:
    """The one long-running syncer of this app (`up` spawns it when its pulse stops)."""
    from ml_agent.backends.modal.stores import AppState
    from ml_agent.syncer import SyncerSettings, run_forever

    started = time.monotonic()
    try:
        run_forever(
            SyncerSettings.from_env(),
            before_scan=_reload_and_pulse,
            should_stop=lambda: _no_live_sandbox(started),
        )
    finally:
        AppState(os.environ["ML_AGENT_APP"]).put("syncer_heartbeat", 0.0)


def sync_now() -> None:
    """One final sync (`stop` calls it after the sandbox has ended)."""
    from ml_agent.syncer import SyncerSettings, build_syncer

    sync = build_syncer(SyncerSettings.from_env())
    try:
        _reload_volume()
        sync.final_sync()
    finally:
        sync.close()
