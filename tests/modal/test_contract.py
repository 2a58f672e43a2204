"""The Modal backend against the real modal SDK and the fake control plane (127.0.0.1)."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
from modal_proto import api_pb2

from ml_agent.backends.modal import ModalBackend
from ml_agent.contracts import hash_token, protocol
from ml_agent.errors import BackendError, RunNotFound
from tests.modal.plans import config_plan

REAL_KEY = "sk-ant-the-real-key"
SYNCED = "syncer.enabled=true"  # base.yaml ships it off; the contract covers it on


def a10(run_id: str = "20261126-0315-a1b2c3", *overrides: str):
    return config_plan("a10.yaml", SYNCED, *overrides, run_id=run_id)


@pytest.fixture
def fake(fake_modal):
    fake_modal.add_secret("anthropic-secret", {"ANTHROPIC_API_KEY": REAL_KEY})
    fake_modal.add_secret("hf-write", {"HF_TOKEN": "hf_write"})
    fake_modal.add_secret("github-secret", {"GITHUB_TOKEN": "gh"})
    return fake_modal


@pytest.fixture
def backend():
    return ModalBackend()


def _tokens(fake) -> dict[str, dict]:
    """The token store's content, as the proxy would read it."""
    data = fake.servicer.dict_data[fake.servicer.dicts["ml-agent-tokens"]]
    return {pickle.loads(k): pickle.loads(v) for k, v in data.items()}


def _sandbox_env(fake, definition) -> dict[str, str]:
    env: dict[str, str] = {}
    for secret_id in definition.secret_ids:
        env.update(fake.secret_env(secret_id))
    return env


def test_up_deploys_the_app_and_creates_the_sandbox(fake, backend):
    messages: list[str] = []
    run = backend.up(a10(), task=None, detach=True, progress=messages.append)

    proxy = fake.function("proxy")
    assert proxy.webhook_config.type == api_pb2.WEBHOOK_TYPE_ASGI_APP
    assert proxy.module_name == "ml_agent.backends.modal.app"
    assert proxy.max_concurrent_inputs == 256 and proxy.concurrency_limit == 1
    syncer = fake.function("syncer")
    assert [(m.mount_path, m.read_only) for m in syncer.volume_mounts] == [
        ("/root/.cache/huggingface/trackio", True)
    ]
    finalize = fake.function("finalize_run")  # writes the proxy's usage into result.json
    assert [(m.mount_path, m.read_only) for m in finalize.volume_mounts] == [("/data", False)]
    named = set(fake.servicer.secrets.values())
    assert not named & set(finalize.secret_ids)  # no key, no HF token: only its settings
    replay = fake.function("run_events")  # reads a run's transcript for a re-attach
    assert [(m.mount_path, m.read_only) for m in replay.volume_mounts] == [("/data", True)]
    assert not named & set(replay.secret_ids)
    runs = fake.function("list_runs")  # rebuilds the run registry from the run folders
    assert [(m.mount_path, m.read_only) for m in runs.volume_mounts] == [("/data", True)]
    assert len(fake.requests("AppPublish")) == 1
    assert {r.deployment_name for r in fake.requests("VolumeGetOrCreate")} == {
        "sandbox-data", "sandbox-trackio"
    }

    (create,) = fake.requests("SandboxCreate")
    sandbox = create.definition
    assert list(sandbox.entrypoint_args) == ["python", "/agent/agent.py"]
    assert sandbox.resources.gpu_config.gpu_type == "A10"
    assert sandbox.resources.gpu_config.count == 1
    assert sandbox.timeout_secs == 3600
    assert sandbox.workdir == "/app"
    assert sorted(m.mount_path for m in sandbox.volume_mounts) == [
        "/data", "/root/.cache/huggingface/trackio"
    ]
    assert {t.tag_name: t.tag_value for t in create.tags}["ml-agent-run"] == run.run_id
    env = _sandbox_env(fake, sandbox)
    assert env["ANTHROPIC_BASE_URL"] == "https://fake--proxy.modal.run"
    assert env["ANTHROPIC_API_KEY"].startswith("mla-run-")
    assert env["ML_AGENT_RUN_DIR"] == f"/data/runs/{run.run_id}"
    assert env["HF_HOME"] == "/data/hf-cache"
    assert REAL_KEY not in json.dumps(env) and "HF_TOKEN" not in env
    # The image: base + apt + pip built, then the agent and .claude mounted at start.
    commands = [list(r.image.dockerfile_commands) for r in fake.requests("ImageGetOrCreate")]
    assert ["FROM base", "RUN apt-get update", "RUN apt-get install -y git curl"] in commands
    assert any(c[-1].endswith("claude-agent-sdk==0.2.184 trackio==0.43.0") for c in commands)
    mounted = {f.filename for r in fake.requests("MountGetOrCreate") for f in r.files}
    assert {"/agent/agent.py", "/agent/protocol.py", "/app/.claude/CLAUDE.md"} <= mounted
    github = fake.servicer.secrets["github-secret"]
    assert github in sandbox.secret_ids  # sandbox.secrets, by name
    assert fake.servicer.secrets["anthropic-secret"] not in sandbox.secret_ids

    # The token store holds only the hash of the run token, for this run.
    ((key, record),) = _tokens(fake).items()
    assert key == hash_token(env["ANTHROPIC_API_KEY"])
    assert record["run_id"] == run.run_id and record["budget_usd"] == 20
    assert record["expires_at"] > time.time() + 3600 and not record["revoked"]
    assert run.status == "running" and run.sandbox_id == next(iter(fake.sandboxes))
    assert any("deploying app" in m for m in messages)
    assert any("layer 2 (pip" in m for m in messages)
    assert len(fake.requests("FunctionMap")) == 1  # the syncer was spawned


def test_second_up_reuses_the_deployed_app(fake, backend):
    first = backend.up(a10("20261126-0315-aaaaaa"), task=None, detach=True)
    second = backend.up(
        a10("20261126-0316-bbbbbb"), task="train", detach=True
    )
    assert len(fake.requests("AppPublish")) == 1
    # proxy, syncer, sync_now, finalize_run, run_events, list_runs, resume_info
    assert len(fake.requests("FunctionCreate")) == 7
    assert len(fake.requests("FunctionMap")) == 1  # the one syncer is alive
    assert len(fake.requests("SandboxCreate")) == 2
    assert list(fake.requests("SandboxCreate")[1].definition.entrypoint_args)[-1] == (
        protocol.ONE_SHOT_FLAG
    )
    assert fake.sandboxes[second.sandbox_id].stdin_text == protocol.task_input("train")
    assert [r.run_id for r in backend.ps()] == [second.run_id, first.run_id]


def test_an_app_deployed_by_another_ml_agent_version_is_redeployed_once_no_run_uses_it(
        fake, backend):
    from ml_agent.backends.modal.stores import AppState

    backend.up(a10("20261126-0315-aaaaaa"), task=None, detach=True)
    AppState("ml-agent").put("code_hash", "what an older ml-agent shipped")
    said: list[str] = []
    backend.up(a10("20261126-0316-bbbbbb"), task=None, detach=True, progress=said.append)
    assert len(fake.requests("AppPublish")) == 1  # not under live runs: two proxies at once
    assert any("is redeployed once its 1 live run(s) have ended" in line for line in said)
    for sandbox in list(fake.sandboxes.values()):
        sandbox.exit(0)
    said.clear()
    backend.up(a10("20261126-0317-cccccc"), task=None, detach=True, progress=said.append)
    assert len(fake.requests("AppPublish")) == 2
    assert any("deploying app 'ml-agent'" in line for line in said), said
    said.clear()
    backend.up(a10("20261126-0318-dddddd"), task=None, detach=True, progress=said.append)
    assert len(fake.requests("AppPublish")) == 2
    assert any("is up to date" in line for line in said), said


def test_code_hash_covers_what_the_containers_run_and_nothing_else(tmp_path):
    import shutil

    from ml_agent.backends.modal.app import code_hash

    package = Path(code_hash.__code__.co_filename).resolve().parents[2]
    copy = tmp_path / "ml_agent"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_hash(copy)
    assert before == code_hash(package)
    (copy / "cli" / "app.py").write_text("# a CLI edit\n", encoding="utf-8")
    (copy / "config" / "models.py").write_text("# a config edit\n", encoding="utf-8")
    assert code_hash(copy) == before  # the containers never import these
    with (copy / "proxy" / "budget.py").open("a", encoding="utf-8") as fh:
        fh.write("# a proxy edit\n")
    assert code_hash(copy) != before


@pytest.mark.parametrize("change", ["proxy.budget_usd=5", "volumes.data.name=other-data"])
def test_changed_app_part_is_refused_under_live_runs(fake, backend, change):
    backend.up(a10(), task=None, detach=True)
    changed = a10("20261126-0320-cccccc", change)
    with pytest.raises(BackendError, match="still use the deployed ones"):
        backend.up(changed, task=None, detach=True)
    next(iter(fake.sandboxes.values())).exit(0)
    backend.up(changed, task=None, detach=True)
    assert len(fake.requests("AppPublish")) == 2


def test_attach_replays_events_send_logs_and_stop(fake, backend):
    run = backend.up(a10(), task=None, detach=True)
    sandbox = fake.sandboxes[run.sandbox_id]
    emitted = [
        {"type": "ready", "seq": 1, "ts": 1.0, "model": "m", "run_id": run.run_id},
        {"type": "assistant_text", "seq": 2, "ts": 2.0, "text": "hello"},
    ]
    sandbox.write_stdout(json.dumps(emitted[0]) + "\nnot an event\n")
    sandbox.write_stdout(json.dumps(emitted[1]) + "\n")
    sandbox.write_stderr("a warning\n")

    assert list(backend.events(run.run_id, follow=False)) == emitted
    assert list(backend.events(run.run_id[:15], follow=False)) == emitted  # a prefix

    backend.send(run.run_id, protocol.encode_input("user", text="train it"))
    assert json.loads(sandbox.stdin_text) == {"type": "user", "text": "train it"}

    assert sorted(backend.logs(run.run_id, follow=False)) == sorted(
        [json.dumps(emitted[0]), "not an event", json.dumps(emitted[1]), "a warning"]
    )

    stopped = backend.stop(run.run_id)
    assert stopped.status == "stopped" and stopped.ended_at
    assert fake.requests("SandboxTerminate")
    # The syncer (spawned by up), then the final sync, then result.json's proxy usage.
    assert [name for name, _, _ in fake.servicer.function_inputs] == [
        "syncer", "sync_now", "finalize_run"
    ]
    assert [t["revoked"] for t in _tokens(fake).values()] == [True]
    assert backend.stop(run.run_id).status == "stopped"  # idempotent
    # After the end, following reads to the end and returns.
    assert list(backend.events(run.run_id, follow=True)) == emitted
    assert [r.status for r in backend.ps()] == ["stopped"]


def test_a_task_of_any_length_reaches_the_agent_on_stdin(fake, backend):
    # An argv word of the sandbox's command is capped (modal: ARG_MAX_BYTES = 64 KiB).
    task = "train\n" + "é" * 2_000_000  # 4 MB of UTF-8: several stdin drains
    run = backend.up(a10(), task=task, detach=True)
    (create,) = fake.requests("SandboxCreate")
    assert list(create.definition.entrypoint_args) == [
        "python", "/agent/agent.py", protocol.ONE_SHOT_FLAG
    ]
    sandbox = fake.sandboxes[run.sandbox_id]
    assert len(sandbox.stdin) > 1 and not sandbox.stdin_dropped
    assert protocol.decode_input(sandbox.stdin_text) == {"type": "user", "text": task}


def test_every_chat_line_reaches_the_agent_across_handles_and_processes(fake, backend):
    # Modal drops a stdin write whose index it has seen: a fresh writer per line would
    # lose every line after the first.
    run = backend.up(a10(), task=None, detach=True)
    sandbox = fake.sandboxes[run.sandbox_id]
    lines = [protocol.encode_input("user", text=f"line {i}") for i in range(3)]
    backend.send(run.run_id, lines[0])
    backend.send(run.run_id, lines[1])
    ModalBackend().send(run.run_id, lines[2])  # `attach` from another process
    assert sandbox.stdin_text == "".join(lines)
    assert sandbox.stdin_dropped == []


def test_the_fake_drops_a_repeated_stdin_index_like_modal(fake, backend):
    import modal

    run = backend.up(a10(), task=None, detach=True)
    for text in ("first\n", "second\n"):
        handle = modal.Sandbox.from_id(run.sandbox_id)  # each writer starts at index 1
        handle.stdin.write(text)
        handle.stdin.drain()
    sandbox = fake.sandboxes[run.sandbox_id]
    assert (sandbox.stdin_text, sandbox.stdin_dropped) == ("first\n", [b"second\n"])


def test_ps_sees_a_finished_run(fake, backend):
    run = backend.up(a10(), task="x", detach=True)
    fake.sandboxes[run.sandbox_id].exit(3)
    (listed,) = backend.ps()
    assert (listed.status, listed.exit_code) == ("failed", 3)


def test_without_syncer_only_the_proxy_is_deployed(fake):
    fake.servicer.function_results["finalize_run"] = "proxy usage written"
    messages: list[str] = []
    backend = ModalBackend(progress=messages.append)
    run = backend.up(config_plan("a10.yaml"), task=None, detach=True)
    assert [r.function.function_name for r in fake.requests("FunctionCreate")] == [
        "proxy", "finalize_run", "run_events", "list_runs", "resume_info"
    ]
    assert backend.stop(run.run_id).status == "stopped"
    # No syncer spawned, no final sync to run; result.json still gets the proxy's usage.
    assert [name for name, _, _ in fake.servicer.function_inputs] == ["finalize_run"]
    assert not [m for m in messages if "warning" in m or "metric" in m]
    assert "proxy usage written to /data/runs/20261126-0315-a1b2c3/result.json" in messages


def test_unknown_run(fake, backend):
    with pytest.raises(RunNotFound, match="ml-agent ps"):
        backend.stop("20990101-0000-ffffff")


def test_missing_secrets_name_the_command(fake_modal, backend):
    with pytest.raises(BackendError) as info:
        backend.up(a10(), task=None, detach=True)
    message = str(info.value)
    assert "modal secret create anthropic-secret ANTHROPIC_API_KEY=" in message
    assert "modal secret create hf-write HF_TOKEN=" in message
    assert not fake_modal.requests("SandboxCreate")


def test_image_build_failure_names_the_layer(fake, backend):
    fake.fail_image_build("trackio==0.43.0", "No solution found when resolving trackio")
    with pytest.raises(BackendError, match=r"layer 2 \(pip: claude-agent-sdk==0.2.184"):
        backend.up(a10(), task=None, detach=True)
    assert not fake.requests("SandboxCreate")


def test_scheduling_timeout_is_a_user_error(fake, backend, monkeypatch):
    import modal.sandbox._impl_v1 as impl_v1

    monkeypatch.setattr(impl_v1, "_SANDBOX_SCHEDULING_TIMEOUT", 1.5)
    fake.schedule_sandboxes = False
    with pytest.raises(BackendError, match="could not schedule the sandbox"):
        backend.up(a10(), task=None, detach=True)
    assert fake.requests("SandboxTerminate")  # the SDK cleans up the unscheduled sandbox


def test_no_token_is_a_user_error():
    start = time.monotonic()
    with pytest.raises(BackendError, match="modal setup"):
        ModalBackend().up(a10(), task=None, detach=True)
    assert time.monotonic() - start < 5


def test_a_failed_launch_revokes_its_token(fake, backend):
    fake.fail_image_build("trackio==0.43.0", "boom")
    with pytest.raises(BackendError):
        backend.up(a10(), task=None, detach=True)
    assert [t["revoked"] for t in _tokens(fake).values()] == [True]


def test_cpu_config_sandbox(fake, backend):
    backend.up(config_plan("cpu.yaml"), task=None, detach=True)
    (create,) = fake.requests("SandboxCreateV2")  # modal's default for CPU sandboxes
    resources = create.definition.resources
    assert not resources.gpu_config.gpu_type
    assert (resources.milli_cpu, resources.memory_mb) == (4000, 16384)


@pytest.mark.parametrize("config", ["base.yaml", "cpu.yaml"])
def test_a_cpu_run_on_sandbox_v2_from_up_to_stop(fake, backend, config):
    # CPU sandboxes speak V2 (modal/sandbox/_sandbox.py impl_class_for_create_args): stdio
    # through the task command router, stdin numbered by byte offset.
    run = backend.up(config_plan(config, "syncer.enabled=true"), task="train", detach=True)
    assert not fake.requests("SandboxCreate") and fake.requests("SandboxCreateV2")
    sandbox = fake.sandboxes[run.sandbox_id]
    assert sandbox.v2 and sandbox.env["ML_AGENT_RUN_ID"] == run.run_id
    emitted = [{"type": "ready", "seq": 1, "ts": 1.0, "model": "m", "run_id": run.run_id},
               {"type": "assistant_text", "seq": 2, "ts": 2.0, "text": "hello"}]
    sandbox.write_stdout("".join(json.dumps(e) + "\n" for e in emitted))
    sandbox.write_stderr("a warning\n")
    assert list(backend.events(run.run_id, follow=False)) == emitted
    assert "a warning" in list(backend.logs(run.run_id, follow=False))

    lines = [protocol.encode_input("user", text=f"line {i}") for i in range(2)]
    backend.send(run.run_id, lines[0])
    ModalBackend().send(run.run_id, lines[1])  # another process continues the offset
    assert sandbox.stdin_text == protocol.task_input("train") + "".join(lines)
    assert sandbox.stdin_dropped == []

    stopped = backend.stop(run.run_id)
    assert stopped.status == "stopped"
    assert fake.requests("SandboxTerminateV2")
    assert [t["revoked"] for t in _tokens(fake).values()] == [True]
