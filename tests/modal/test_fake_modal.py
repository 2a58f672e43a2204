"""The fake control plane speaks to the real modal SDK; the suite can never reach real Modal."""

from __future__ import annotations

import os
import time

import modal
import pytest
from modal.exception import AuthError

from tests.fakes.modal_server import FakeModal


def test_no_token_fails_at_once_without_network():
    assert not [k for k in os.environ if k.startswith("MODAL_TOKEN")]
    start = time.monotonic()
    with pytest.raises(AuthError, match="Token missing"):
        modal.Volume.from_name("anything", create_if_missing=True).hydrate()
    assert time.monotonic() - start < 5


def test_home_modal_config_is_not_read(tmp_path, monkeypatch):
    import modal.config as modal_config

    assert modal_config._user_config == {}
    assert not os.path.exists(modal_config.user_config_path)


def test_sdk_resolves_objects_against_the_fake(fake_modal):
    volume = modal.Volume.from_name("sandbox-data", create_if_missing=True)
    volume.hydrate()
    registry = modal.Dict.from_name("ml-agent-test", create_if_missing=True)
    registry["run"] = {"status": "running"}
    assert registry.get("run") == {"status": "running"}
    assert volume.object_id.startswith("vo-")
    assert fake_modal.requests("VolumeGetOrCreate")[0].deployment_name == "sandbox-data"
    assert "DictUpdate" in fake_modal.method_names


def test_missing_named_secret_is_not_found(fake_modal):
    with pytest.raises(modal.exception.NotFoundError, match="anthropic-secret"):
        modal.Secret.from_name("anthropic-secret").hydrate()


def test_a_wrong_token_is_refused(tmp_path):
    with FakeModal(token_secret="the-right-one") as fake:
        env = fake.env(str(tmp_path / "missing.toml"))
        env["MODAL_TOKEN_SECRET"] = "a-wrong-one"
        from tests.fakes.modal_server import isolated_modal_env

        with isolated_modal_env(env), pytest.raises(AuthError):
            modal.Volume.from_name("v", create_if_missing=True).hydrate()
