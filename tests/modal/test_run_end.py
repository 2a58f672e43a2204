"""The end of a Modal run: final metric sync, token revoked, proxy usage in result.json, cost.

`finalize_run` runs for real here: the fake control plane executes its body (in a thread,
with the SDK pointed back at the fake), with the data volume's mount standing in a temp
folder, as the container would see it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ml_agent.backends.modal import ModalBackend
from ml_agent.backends.modal.stores import ModalUsageSink
from ml_agent.contracts import protocol
from tests.modal.plans import config_plan

RUN_ID = "20261126-0315-a1b2c3"
SYNC_REPORT = {"space_id": "my-org/metrics", "projects": 2, "uploaded": ["live"], "failed": []}


@pytest.fixture
def fake(modal_run_end):
    modal_run_end.servicer.function_results["sync_now"] = SYNC_REPORT
    return modal_run_end


@pytest.fixture
def data(tmp_path) -> Path:
    return tmp_path / "data"


def plan(run_id: str = RUN_ID):
    return config_plan("a10.yaml", "syncer.enabled=true", run_id=run_id)


def agent_result(data: Path, run_id: str, **fields) -> Path:
    """result.json as agent.py writes it: every key, proxy_usage null."""
    result = dict.fromkeys(protocol.RESULT_KEYS)
    result.update(run_id=run_id, status="running", started_at="2026-11-26T03:15:00Z",
                  agent_cost_usd=0.1, usage={"input_tokens": 900}, turns=1, **fields)
    folder = data / "runs" / run_id
    folder.mkdir(parents=True)
    path = folder / protocol.RESULT_FILE
    path.write_text(json.dumps(result, indent=2))
    return path


def meter(run_id: str, cost: float) -> dict[str, float]:
    """What the proxy adds to the usage modal.Dict for one answer."""
    usage = {"input_tokens": 1000, "output_tokens": 200, "requests": 1, "cost_usd": cost}
    return ModalUsageSink.for_app("ml-agent").add(run_id, usage)


def test_stop_syncs_then_writes_the_proxy_usage_into_result_json(fake, data):
    messages: list[str] = []
    backend = ModalBackend(progress=messages.append)
    run = backend.up(plan(), task=None, detach=True)
    path = agent_result(data, run.run_id)
    meter(run.run_id, 0.25)
    usage = meter(run.run_id, 0.17)

    stopped = backend.stop(run.run_id)

    result = json.loads(path.read_text())
    assert result["proxy_usage"] == usage and usage["requests"] == 2
    assert result["status"] == "stopped" and result["ended_at"]  # the agent never finished
    assert (result["agent_cost_usd"], result["usage"]) == (0.1, {"input_tokens": 900})  # its view
    assert result["cost_usd"] == pytest.approx(0.42)  # the proxy's metering
    assert stopped.cost_usd == pytest.approx(0.42)
    ((args, _),) = fake.function_calls("finalize_run")
    assert args[:3] == (run.run_id, usage, "stopped")
    # Order: the sandbox ended, then the final metric sync, then result.json, committed.
    names = fake.method_names
    maps = [i for i, name in enumerate(names) if name == "FunctionMap"]  # syncer, sync, final
    assert len(maps) == 3
    assert names.index("SandboxTerminate") < maps[1] < maps[2] < names.index("VolumeCommit")
    data_volume = fake.servicer.volumes["sandbox-data"]
    assert [r.volume_id for r in fake.requests("VolumeCommit")] == [data_volume]
    assert data_volume in [r.volume_id for r in fake.requests("VolumeReload")]
    assert "final metric sync done: 1 changed project(s) uploaded to my-org/metrics" in messages
    assert f"proxy usage written to /data/runs/{run.run_id}/result.json" in messages
    # Idempotent: a second stop calls nothing.
    assert backend.stop(run.run_id).status == "stopped"
    assert len(fake.function_calls("finalize_run")) == 1


def test_ps_shows_cost_so_far_from_the_proxy_usage(fake):
    backend = ModalBackend()
    run = backend.up(plan(), task=None, detach=True)
    assert backend.ps()[0].cost_usd is None  # nothing metered yet
    meter(run.run_id, 0.25)
    assert backend.ps()[0].cost_usd == 0.25
    meter(run.run_id, 0.5)
    (listed,) = backend.ps()
    assert (listed.status, listed.cost_usd) == ("running", 0.75)
    assert backend.registry.get(run.run_id).cost_usd == 0.75  # kept for after the end


def test_a_run_that_ended_by_itself_gets_its_usage_when_ps_sees_it(fake, data):
    backend = ModalBackend()
    run = backend.up(plan(), task="train", detach=True)
    path = agent_result(data, run.run_id, ended_at="2026-11-26T03:20:00Z")
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "status": "succeeded"}))
    usage = meter(run.run_id, 0.3)
    fake.sandboxes[run.sandbox_id].exit(0)

    (listed,) = backend.ps()
    assert (listed.status, listed.cost_usd) == ("succeeded", 0.3)
    ((args, _),) = fake.function_calls("finalize_run")  # spawned: ps does not wait for it
    assert args[:3] == (run.run_id, usage, "succeeded")
    deadline = time.monotonic() + 10
    while json.loads(path.read_text())["proxy_usage"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    result = json.loads(path.read_text())
    assert result["proxy_usage"] == usage
    assert (result["status"], result["ended_at"]) == ("succeeded", "2026-11-26T03:20:00Z")
    assert all(record["revoked"] for record in fake.dict_items("ml-agent-tokens").values())
    backend.ps()
    assert len(fake.function_calls("finalize_run")) == 1  # once, at the transition


def test_finish_ends_a_one_shot_run_like_stop_without_terminating(fake, data):
    messages: list[str] = []
    backend = ModalBackend(progress=messages.append)
    run = backend.up(plan(), task="train", detach=True)
    path = agent_result(data, run.run_id)
    usage = meter(run.run_id, 0.05)
    fake.sandboxes[run.sandbox_id].exit(1)

    finished = backend.finish(run.run_id)

    assert (finished.status, finished.exit_code, finished.cost_usd) == ("failed", 1, 0.05)
    assert not fake.requests("SandboxTerminate")
    assert fake.function_calls("sync_now") == [((), {})]
    assert json.loads(path.read_text())["proxy_usage"] == usage
    assert any(m.startswith("final metric sync done") for m in messages)
    assert backend.finish(run.run_id).status == "failed"  # idempotent
    assert len(fake.function_calls("sync_now")) == 1


def test_a_failed_final_step_is_a_warning_not_a_live_run(fake, data):
    messages: list[str] = []
    backend = ModalBackend(progress=messages.append)
    run = backend.up(plan(), task=None, detach=True)
    data.mkdir()  # the volume, without the run folder: the sandbox never wrote to it

    def failing_sync():
        raise RuntimeError("the Hub is down")

    fake.function_handlers["sync_now"] = failing_sync
    stopped = backend.stop(run.run_id)
    assert stopped.status == "stopped"
    assert backend.registry.get(run.run_id).status == "stopped"
    assert any("final metric sync failed" in m and "the Hub is down" in m for m in messages)
    assert any("not updated with the proxy's usage: no run folder" in m for m in messages)


def test_stop_after_the_sandbox_ended_keeps_its_status(fake, data):
    backend = ModalBackend()
    run = backend.up(plan(), task="train", detach=True)
    fake.sandboxes[run.sandbox_id].exit(0)  # before any `ps` saw it
    stopped = backend.stop(run.run_id)
    assert (stopped.status, stopped.exit_code) == ("succeeded", 0)
    assert not fake.requests("SandboxTerminate")
    assert [name for name, _, _ in fake.servicer.function_inputs] == [
        "syncer", "sync_now", "finalize_run"
    ]


@pytest.mark.parametrize("end", ["finish", "stop"])
def test_a_run_that_hit_its_timeout_ends_as_timeout_like_any_other_end(fake, data, end):
    # modal's wait(raise_on_termination=False) raises SandboxTimeoutError for such a sandbox.
    messages: list[str] = []
    backend = ModalBackend(progress=messages.append)
    run = backend.up(plan(), task="train", detach=True)
    path = agent_result(data, run.run_id)
    usage = meter(run.run_id, 0.2)
    sandbox = fake.sandboxes[run.sandbox_id]
    if end == "stop":  # the timeout hits between stop's poll and its terminate
        fake.on_terminate = lambda sb: sb._time_out()
    else:
        sandbox.time_out()

    ended = getattr(backend, end)(run.run_id)

    assert (ended.status, ended.exit_code) == ("timeout", 124)
    assert backend.registry.get(run.run_id).status == "timeout"
    assert fake.function_calls("sync_now") == [((), {})]
    assert all(record["revoked"] for record in fake.dict_items("ml-agent-tokens").values())
    result = json.loads(path.read_text())
    assert (result["status"], result["proxy_usage"]) == ("timeout", usage)
    assert any(m.startswith("final metric sync done") for m in messages)


def test_the_fake_times_a_sandbox_out_at_its_timeout(fake):
    backend = ModalBackend()
    run = backend.up(plan().model_copy(update={"sandbox": plan().sandbox.model_copy(
        update={"timeout_s": 1})}), task="train", detach=True)
    assert fake.requests("SandboxCreate")[0].definition.timeout_secs == 1
    assert backend.finish(run.run_id).status == "timeout"


def test_re_attach_replays_what_a_v2_sandbox_no_longer_keeps_from_the_event_log(fake, data):
    # A V2 sandbox (CPU) keeps only its recent output; the run's transcript keeps it all.
    fake.v2_output_keep = 400
    backend = ModalBackend()
    run = backend.up(config_plan("cpu.yaml", "syncer.enabled=true"), task="x", detach=True)
    events = [{"type": "assistant_text", "seq": i, "ts": float(i), "text": f"step {i}"}
              for i in range(1, 21)]
    lines = "".join(json.dumps(e) + "\n" for e in events)
    folder = data / "runs" / run.run_id
    folder.mkdir(parents=True)
    inputs = json.dumps({"type": "input", "input": {"type": "user", "text": "x"}}) + "\n"
    (folder / protocol.TRANSCRIPT_FILE).write_text(inputs + lines)
    fake.sandboxes[run.sandbox_id].write_stdout(lines)

    assert list(ModalBackend().events(run.run_id, follow=False)) == events
    ((args, _),) = fake.function_calls("run_events")
    assert args[0] == run.run_id and 10 < args[1] <= 20


def test_the_data_volume_keeps_ended_runs_when_the_registry_forgets_them(fake, data):
    # modal.Dict entries expire after 7 days untouched: the run folder is the record.
    backend = ModalBackend()
    run = backend.up(plan(), task=None, detach=True)
    agent_result(data, run.run_id)
    stopped = backend.stop(run.run_id)
    kept = json.loads((data / "runs" / run.run_id / "run.json").read_text())
    assert kept == stopped.to_dict() and kept["status"] == "stopped"

    registry = fake.servicer.dict_data[fake.servicer.dicts["ml-agent-runs"]]
    registry.clear()  # the entries expired
    assert ModalBackend().ps() == []
    found = ModalBackend().find(run.run_id[:15])  # e.g. `ml-agent logs <prefix>`
    assert found.to_dict() == stopped.to_dict()
    assert [r.run_id for r in ModalBackend().ps()] == [run.run_id]  # the index is back
