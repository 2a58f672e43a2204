"""A live smoke test on the real Modal: runs only where Modal credentials exist (costs cents).

It deploys a separate app (`ml-agent-smoke`), launches configs/cpu.yaml for at most five
minutes, waits for the agent's `ready` event through the proxy, then stops the run and
reads the proxy's usage back from result.json on the data volume.
"""

from __future__ import annotations

import json

import modal
import pytest

from ml_agent.backends.modal import ModalBackend
from ml_agent.contracts import new_run_id, protocol
from ml_agent.errors import BackendError
from tests.modal.plans import config_plan

pytestmark = [pytest.mark.modal, pytest.mark.timeout(900)]


def test_cpu_run_starts_answers_and_stops():
    plan = config_plan(
        "cpu.yaml", "app=ml-agent-smoke", "sandbox.timeout=5m", run_id=new_run_id()
    )
    backend = ModalBackend()
    try:
        run = backend.up(plan, task=None, detach=True)
    except BackendError as exc:
        if "missing Modal secret" in str(exc):
            pytest.skip(str(exc))
        raise
    try:
        first = next(backend.events(run.run_id, follow=True))
        assert first["type"] == "ready" and first["run_id"] == run.run_id
        assert any(r.run_id == run.run_id and r.status == "running" for r in backend.ps())
    finally:
        stopped = backend.stop(run.run_id)
    assert stopped.status in ("stopped", "succeeded")
    # finalize_run wrote the proxy's usage into result.json on the data volume.
    volume = modal.Volume.from_name(plan.data_volume.name)
    raw = b"".join(volume.read_file(f"runs/{run.run_id}/{protocol.RESULT_FILE}"))
    result = json.loads(raw)
    assert result["run_id"] == run.run_id
    assert isinstance(result["proxy_usage"], dict), result
