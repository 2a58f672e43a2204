"""The deployed app's definition: settings travel by env, functions are importable globals."""

from __future__ import annotations

import json
from pathlib import Path

import modal
from modal._utils.async_utils import synchronizer

from ml_agent.backends.modal import app as modal_app
from ml_agent.syncer import SyncerSettings
from tests.modal.plans import config_plan


def test_settings_env_carries_the_config_and_no_secret():
    plan = config_plan("a10.yaml", "syncer.enabled=true", "syncer.space_id=my-org/metrics")
    env = modal_app.settings_env(plan)
    assert env["ML_AGENT_APP"] == "ml-agent"
    assert env["ML_AGENT_PROXY_UPSTREAM"] == "https://api.anthropic.com"
    assert json.loads(env["ML_AGENT_PROXY_ALLOWED_PATHS"])[0] == "POST /v1/messages"
    assert env["ML_AGENT_SYNC_VOLUME"] == "sandbox-trackio"
    settings = SyncerSettings.from_env(env)
    assert settings.trackio_dir == "/root/.cache/huggingface/trackio"
    assert (settings.namespace, settings.space_id) == ("my-org", "my-org/metrics")
    assert settings.idle_stop_s == 0  # it stops when no sandbox is left, not when idle
    assert not any("anthropic-secret" in v or "hf-write" in v for v in env.values())


def test_build_app_registers_module_level_functions():
    plan = config_plan("a10.yaml", "syncer.enabled=true")
    app = modal_app.build_app(plan)
    assert app.name == "ml-agent"
    state = synchronizer._translate_in(app)._local_state
    assert list(state.functions) == ["proxy", "syncer", "sync_now", "finalize_run", "run_events",
                                    "list_runs", "resume_info"]
    assert state.web_endpoints == ["proxy"]
    for name in modal_app.FUNCTION_NAMES:  # the container finds them by module and name
        assert callable(getattr(modal_app, name))
        assert not isinstance(getattr(modal_app, name), modal.Function)


def test_containers_get_only_the_source_they_import():
    assert modal_app._unused_source(Path("cli/app.py"))
    assert modal_app._unused_source(Path("config"))
    assert modal_app._unused_source(Path("backends/local/sandbox.py"))
    assert modal_app._unused_source(Path("proxy/__pycache__/app.cpython-311.pyc"))
    assert not modal_app._unused_source(Path("backends/modal/app.py"))
    assert not modal_app._unused_source(Path("syncer/loop.py"))
    assert not modal_app._unused_source(Path("proxy"))
