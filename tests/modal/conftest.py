"""Fixtures for the Modal backend's tests: no test here can ever reach the real Modal.

Every test runs with MODAL_* cleared, MODAL_CONFIG_PATH at a missing file (so
~/.modal.toml is never read) and modal's cached client dropped: without a token the SDK
fails at once with AuthError. `fake_modal` then points the SDK at the in-process fake
control plane (tests/fakes/modal_server.py). Only tests marked `modal` keep the real
credentials, and they are skipped when there are none.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes.modal_server import FakeModal, isolated_modal_env


def real_modal_credentials() -> bool:
    """Credentials exist on this machine (env or ~/.modal.toml); read before any isolation."""
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    config = Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    return config.is_file() and "token_id" in config.read_text(errors="replace")


HAS_REAL_MODAL = real_modal_credentials()


@pytest.fixture(autouse=True)
def _no_real_modal(request, tmp_path, monkeypatch):
    monkeypatch.setenv("ML_AGENT_HOME", str(tmp_path / "ml-agent-home"))
    if request.node.get_closest_marker("modal"):
        if not HAS_REAL_MODAL:
            pytest.skip("needs real Modal credentials (`modal setup`)")
        yield
        return
    with isolated_modal_env({"MODAL_CONFIG_PATH": str(tmp_path / "missing-modal.toml")}):
        yield


@pytest.fixture
def fake_modal(tmp_path):
    """The fake control plane, with the SDK pointed at it (and nowhere else)."""
    with FakeModal() as fake, fake.environ(str(tmp_path / "missing-modal.toml")):
        yield fake


#: The secrets the shipped configs name, as the fake control plane holds them.
MODAL_SECRETS = {
    "anthropic-secret": {"ANTHROPIC_API_KEY": "sk-ant-real"},
    "github-secret": {"GITHUB_TOKEN": "gh"},
    "hf-write": {"HF_TOKEN": "hf"},
}


@pytest.fixture
def modal_with_secrets(fake_modal):
    """The fake control plane holding every secret the shipped configs name."""
    for name, env in MODAL_SECRETS.items():
        fake_modal.add_secret(name, env)
    return fake_modal


@pytest.fixture
def modal_run_end(modal_with_secrets, monkeypatch, tmp_path):
    """...and running the app's real `finalize_run`, `run_events`, `list_runs` and
    `resume_info`, the data
    volume at a temp folder."""
    from ml_agent.backends.modal import app as modal_app

    monkeypatch.setenv("ML_AGENT_DATA_VOLUME", "sandbox-data")
    monkeypatch.setenv("ML_AGENT_DATA_MOUNT", str(tmp_path / "data"))
    modal_with_secrets.function_handlers["finalize_run"] = modal_app.finalize_run
    modal_with_secrets.function_handlers["run_events"] = modal_app.run_events
    modal_with_secrets.function_handlers["list_runs"] = modal_app.list_runs
    modal_with_secrets.function_handlers["resume_info"] = modal_app.resume_info
    return modal_with_secrets
