"""LocalBackend with a real supervisor and sandbox (a scripted stand-in agent, no model):
up, events, send, ps, the timeout, and stop leaving no process behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ml_agent.backends.local import LocalBackend, registry
from ml_agent.contracts import protocol
from ml_agent.errors import BackendError
from tests.local.helpers import AGENT, processes_of, seeded_plan, with_network

pytestmark = pytest.mark.slow

@pytest.fixture
def backend(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ML_AGENT_HOME", str(home))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-key")  # the proxy's, from the host
    backend = LocalBackend(home)
    yield backend
    for record in backend.ps():
        backend.stop(record.run_id)


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_up_send_events_ps_and_stop_leaves_nothing_behind(backend):
    plan = seeded_plan(backend.home, AGENT)
    run_id = plan.launch.run_id
    record = backend.up(plan, task=None, detach=True)
    assert record.status == "running" and record.backend == "local"

    first = next(backend.events(run_id, follow=True))
    assert first["type"] == protocol.READY and first["run_id"] == run_id
    token = backend.token(run_id)
    assert first["key"] == token and token.startswith("mla-run-")  # a run token, not the key
    assert first["gh"] is None  # no sandbox secret named, none visible
    backend.send(run_id, protocol.encode_input(protocol.IN_USER, text="hello"))
    texts = _wait_for(lambda: [e for e in backend.events(run_id, follow=False)
                               if e["type"] == protocol.ASSISTANT_TEXT])
    assert texts[0]["text"] == "echo: hello"
    assert any('"type": "ready"' in line for line in backend.logs(run_id, follow=False))
    assert [r.run_id for r in backend.ps()] == [run_id]
    assert processes_of(run_id)  # the sandbox (bwrap, agent, its child) is running

    record = backend.stop(run_id)
    assert record.status == "stopped" and record.ended_at
    data = Path(backend.home, "volumes", "sandbox-data", "runs", run_id)
    assert (data / "stopped").read_text() == "yes"  # the agent was asked first
    assert processes_of(run_id) == []
    assert backend.stop(run_id).status == "stopped"  # idempotent
    with pytest.raises(BackendError, match="is not running"):
        backend.send(run_id, protocol.encode_input(protocol.IN_USER, text="late"))


def test_a_one_shot_task_of_any_length_reaches_the_agent_on_stdin(backend):
    plan = seeded_plan(backend.home, AGENT)
    run_id = plan.launch.run_id
    # Over an argv word's 128 KiB (execve fails: E2BIG) and a pipe's 64 KiB buffer.
    task = "train\n" + "x" * 300_000
    backend.up(plan, task=task, detach=True)
    seen = Path(backend.home, "volumes", "sandbox-data", "runs", run_id, "task")
    assert _wait_for(lambda: seen.is_file() and seen.read_text() == task, 30)


def test_the_timeout_kills_a_run_that_ignores_sigterm(backend):
    plan = seeded_plan(backend.home, AGENT, timeout_s=2)
    run_id = plan.launch.run_id
    started = time.monotonic()
    backend.up(plan, task="stubborn", detach=True)
    record = _wait_for(lambda: (r := backend.record(run_id)).status != "running" and r, 60)
    assert record.status == "timeout"
    assert time.monotonic() - started < 40
    _wait_for(lambda: not processes_of(run_id), 10)  # the supervisor exits after recording
    events = list(backend.events(run_id, follow=False))
    assert [e["type"] for e in events] == [protocol.READY]


def test_a_missing_sandbox_secret_is_a_clear_error_before_anything_starts(backend):
    plan = seeded_plan(backend.home, AGENT)
    plan = plan.model_copy(
        update={"sandbox": plan.sandbox.model_copy(update={"secrets": ("github-secret",)})}
    )
    with pytest.raises(BackendError, match=r"secret 'github-secret' not found: create .*"
                                          r"secrets/github-secret.env"):
        backend.up(plan, task=None, detach=True)
    assert backend.ps() == []


def test_a_gpu_that_is_not_there_is_a_clear_error(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("ML_AGENT_GPU_ROOT", str(tmp_path / "no-driver"))  # even on a GPU host
    plan = seeded_plan(backend.home, AGENT)
    plan = plan.model_copy(update={"sandbox": plan.sandbox.model_copy(update={"gpu": "A10"})})
    with pytest.raises(BackendError, match=r"sandbox.gpu is 'A10' but this machine has no "
                                          r"NVIDIA GPU .*sandbox.gpu=null"):
        backend.up(plan, task=None, detach=True)


def test_an_allowlist_is_warned_about_not_silently_dropped(backend):
    from tests.local.helpers import with_network

    plan = with_network(seeded_plan(backend.home, AGENT), "allowlist")
    plan = plan.model_copy(update={"sandbox": plan.sandbox.model_copy(update={"cpu": 2.0})})
    backend.check(plan)
    assert any("allowlist cannot be enforced" in w for w in backend.warnings)
    assert any("sandbox cpu not enforced" in w for w in backend.warnings)


def test_a_killed_supervisor_takes_its_sandbox_with_it(backend):
    import signal

    from ml_agent.backends.local import registry

    plan = seeded_plan(backend.home, AGENT)
    run_id = plan.launch.run_id
    backend.up(plan, task=None, detach=True)
    pid = registry.supervisor_pid(registry.find(run_id, backend.home))
    assert pid and processes_of(run_id)
    os.kill(pid, signal.SIGKILL)  # no cleanup at all: bwrap --die-with-parent must do it
    try:
        _wait_for(lambda: not processes_of(run_id), 15)
    except AssertionError:
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in processes_of(run_id)}
        raise AssertionError(f"left behind: {left}") from None
    finally:
        assert [r.status for r in backend.ps()] == ["failed"]
        backend.stop(run_id)  # also kills a sandbox whose supervisor died (no orphans)
        assert processes_of(run_id) == []


def test_a_run_between_its_record_and_its_supervisor_is_starting_not_failed(backend):
    plan = seeded_plan(backend.home, AGENT)
    paths = backend.prepare(plan, task=None)  # run.json says `starting`; no supervisor yet
    assert [r.status for r in backend.ps()] == ["starting"]
    record = registry.read_record(paths)
    record.legs[-1]["started_at"] = record.created_at = time.time() - 2 * registry.START_GRACE_S
    registry.write_record(paths, record)
    assert [r.status for r in backend.ps()] == ["failed"]  # no supervisor ever came


def test_the_syncer_runs_when_enabled_with_a_token_and_syncs_at_the_end(backend):
    plan = seeded_plan(backend.home, AGENT)
    syncer = plan.syncer.model_copy(update={"enabled": True})
    plan = plan.model_copy(update={"syncer": syncer})
    (backend.home / "secrets").mkdir()
    (backend.home / "secrets" / "hf-write.env").write_text("HF_TOKEN=hf_test\n")
    backend.up(plan, task=None, detach=True)
    backend.stop(plan.launch.run_id)
    log = (backend.home / "runs" / plan.launch.run_id / "supervisor.log").read_text()
    assert "syncer started" in log and "final metric sync" in log
    assert "hf_test" not in log


def test_the_syncer_is_skipped_with_a_log_line_without_a_token(backend):
    plan = seeded_plan(backend.home, AGENT)
    plan = plan.model_copy(update={"syncer": plan.syncer.model_copy(update={"enabled": True})})
    backend.up(plan, task=None, detach=True)
    backend.stop(plan.launch.run_id)
    log = (backend.home / "runs" / plan.launch.run_id / "supervisor.log").read_text()
    assert "syncer skipped: no HF token" in log and "secrets/hf-write.env" in log
    # and on the console: `up` prints the backend's warnings before the conversation
    said = [w for w in backend.warnings if w.startswith("syncer skipped: no HF token")]
    assert len(said) == 1 and "secrets/hf-write.env" in said[0]


def test_named_sandbox_secrets_are_in_the_sandbox_env(backend):
    (backend.home / "secrets").mkdir()
    (backend.home / "secrets" / "github-secret.env").write_text("GITHUB_TOKEN=ghp_test\n")
    plan = seeded_plan(backend.home, AGENT)
    plan = plan.model_copy(
        update={"sandbox": plan.sandbox.model_copy(update={"secrets": ("github-secret",)})}
    )
    backend.up(plan, task=None, detach=True)
    first = next(backend.events(plan.launch.run_id, follow=True))
    assert first["gh"] == "ghp_test"  # by design: the agent can read what the config names


def test_a_planted_symlink_never_makes_the_supervisor_write_through_it(backend, tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text('{"untouched": true}')
    planting = AGENT.replace(
        "child = subprocess.Popen",
        f"os.symlink({str(victim)!r}, os.path.join(run_dir, 'result.json'))\n"
        "child = subprocess.Popen",
    )
    plan = seeded_plan(backend.home, planting)
    backend.up(plan, task=None, detach=True)
    next(backend.events(plan.launch.run_id, follow=True))  # `ready`: the link is planted
    backend.stop(plan.launch.run_id)
    assert victim.read_text() == '{"untouched": true}'
    log = (backend.home / "runs" / plan.launch.run_id / "supervisor.log").read_text()
    assert "result.json not updated" in log


#: A stand-in agent that makes one model request per message through the proxy, then
#: claims it spent nothing (in its events and in result.json).
THRIFTY = """
import json, os, sys, time, urllib.request
env = os.environ
run_dir = env["ML_AGENT_RUN_DIR"]
os.makedirs(run_dir, exist_ok=True)
print(json.dumps({"type": "ready", "seq": 1, "ts": time.time()}), flush=True)
seq = 1
for line in sys.stdin:
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 10,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(env["ANTHROPIC_BASE_URL"] + "/v1/messages", data=body,
        headers={"x-api-key": env["ANTHROPIC_API_KEY"], "content-type": "application/json",
                 "anthropic-version": "2023-06-01"})
    urllib.request.urlopen(request).read()
    seq += 1
    print(json.dumps({"type": "turn_end", "seq": seq, "ts": time.time(), "status": "succeeded",
                      "cost_usd": 0.0, "turns": 1, "duration_s": 0.1}), flush=True)
    with open(os.path.join(run_dir, "result.json"), "w") as fh:
        json.dump({"run_id": env["ML_AGENT_RUN_ID"], "status": "running", "cost_usd": None,
                   "agent_cost_usd": 0.0, "proxy_usage": None}, fh)
"""


def test_cost_is_the_proxys_meter_live_and_at_the_end_not_what_the_agent_says(backend):
    from tests.fakes.anthropic import FakeAnthropic

    with FakeAnthropic(keys={"sk-ant-upstream"}) as fake:
        plan = seeded_plan(backend.home, THRIFTY)
        proxy = plan.proxy.model_copy(update={"upstream": fake.url, "secret": "fake-upstream"})
        plan = plan.model_copy(update={"proxy": proxy})
        (backend.home / "secrets").mkdir()
        (backend.home / "secrets" / "fake-upstream.env").write_text(
            "ANTHROPIC_API_KEY=sk-ant-upstream\n")
        run_id = plan.launch.run_id
        backend.up(plan, task=None, detach=True)
        backend.send(run_id, protocol.encode_input(protocol.IN_USER, text="go"))
        # While it runs: the cost so far, from the proxy's meter (the agent says 0).
        live = _wait_for(lambda: next((r for r in backend.ps() if r.cost_usd and
                                       r.agent_cost_usd is not None), None))
        assert live.status == "running" and live.cost_usd > 0 and live.agent_cost_usd == 0.0
        record = backend.stop(run_id)
    assert record.cost_usd == live.cost_usd and record.agent_cost_usd == 0.0
    data = backend.home / "volumes" / plan.data_volume.name
    result = json.loads((data / "runs" / run_id / "result.json").read_text())
    assert result["cost_usd"] == record.cost_usd and result["agent_cost_usd"] == 0.0
    assert result["proxy_usage"]["requests"] == 1 and result["status"] == "stopped"


def test_the_supervisor_starts_with_neither_the_launchers_secrets_nor_the_key(
    backend, monkeypatch
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "decoy-aws-secret")
    plan = seeded_plan(backend.home, AGENT)
    # The key is the host's ANTHROPIC_API_KEY (the fixture's): the run starts only if the
    # supervisor got it, on stdin.
    assert backend.up(plan, task=None, detach=True).status == "running"
    pid = registry.supervisor_pid(registry.find(plan.launch.run_id, backend.home))
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"ML_AGENT_HOME={backend.home}".encode() in environ
    assert not [v for v in environ if b"decoy-aws-secret" in v or b"sk-ant-host-key" in v]


#: A stand-in agent that says whether it reaches its proxy and a server on the host's
#: loopback (port PORT), then exits.
NET_AGENT = """
import json, os, socket, time, urllib.request
try:
    with urllib.request.urlopen(os.environ["ANTHROPIC_BASE_URL"] + "/healthz", timeout=10) as r:
        proxy = json.load(r)["status"]
except OSError as exc:
    proxy = f"unreachable: {exc}"
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    host = "reached"
except OSError:
    host = "unreachable"
print(json.dumps({"type": "ready", "seq": 1, "ts": time.time(), "proxy": proxy,
                  "host": host, "base_url": os.environ["ANTHROPIC_BASE_URL"]}), flush=True)
"""


@pytest.mark.parametrize(("mode", "host"), [("blocked", "unreachable"), ("open", "reached")])
def test_the_network_mode_decides_what_the_sandbox_reaches(backend, server, mode, host):
    # Blocked: no network but the sandbox's own loopback, where a bridge relays the usual
    # base URL to the proxy's Unix socket, bound in.
    plan = with_network(seeded_plan(backend.home, NET_AGENT.replace("PORT", str(server))), mode)
    backend.up(plan, task=None, detach=True)
    first = next(backend.events(plan.launch.run_id, follow=True))
    assert (first["proxy"], first["host"]) == ("ok", host), first
    assert first["base_url"].startswith("http://127.0.0.1:")
    # The agent exits after `ready`: the run ends, the bridge with it (nothing lingers).
    _wait_for(lambda: backend.record(plan.launch.run_id).status == "succeeded")
    _wait_for(lambda: not processes_of(plan.launch.run_id), 15)
    assert not (backend.home / "runs" / plan.launch.run_id / "proxy.sock").exists()

