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


def _cpu_sandbox(fake_modal) -> tuple[modal.Sandbox, object]:
    """A CPU sandbox, created by the real SDK (V2, modal's default for gpu=None)."""
    app = modal.App.lookup("fake-v2", create_if_missing=True)
    sandbox = modal.Sandbox.create("python", "agent.py", app=app, image=modal.Image.debian_slim())
    return sandbox, fake_modal.sandboxes[sandbox.object_id]


def test_cpu_sandboxes_speak_v2_through_the_task_router(fake_modal):
    sandbox, inside = _cpu_sandbox(fake_modal)
    assert inside.v2 and fake_modal.requests("SandboxCreateV2")
    inside.write_stdout("hello\n")
    inside.exit(3)
    assert list(sandbox.stdout) == ["hello\n"]
    assert sandbox.wait(raise_on_termination=False) is None and sandbox.returncode == 3
    assert fake_modal.requests("SandboxStdioReadV2") and fake_modal.requests("SandboxWaitV2")


def test_v2_stdin_is_numbered_by_offset_and_a_second_writer_repeats_it(fake_modal):
    sandbox, inside = _cpu_sandbox(fake_modal)
    for text in ("first\n", "other\n"):
        handle = modal.Sandbox.from_id(sandbox.object_id)  # each writer starts at offset 0
        handle.stdin.write(text)
        handle.stdin.drain()
    assert (inside.stdin_text, inside.stdin_dropped) == ("first\n", [b"other\n"])


def test_v2_keeps_only_recent_output(fake_modal):
    fake_modal.v2_output_keep = 10
    sandbox, inside = _cpu_sandbox(fake_modal)
    inside.write_stdout("0123456789abcdef\n")
    inside.exit(0)
    # modal says so too: "dropped 7 bytes; only the most recent portion of output is retained"
    assert "".join(modal.Sandbox.from_id(sandbox.object_id).stdout) == "789abcdef\n"


def test_a_sandbox_times_out_like_modals(fake_modal):
    sandbox, inside = _cpu_sandbox(fake_modal)
    inside.time_out()
    with pytest.raises(modal.exception.SandboxTimeoutError):
        sandbox.wait(raise_on_termination=False)  # modal raises even so
    assert sandbox.returncode == 124
