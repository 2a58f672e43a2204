"""What a Modal run keeps in its app's `-state` Dict lasts only as long as the run."""

from __future__ import annotations

import pytest

from ml_agent.backends.modal import ModalBackend
from ml_agent.contracts import protocol
from tests.modal.plans import config_plan


@pytest.mark.parametrize("config", ["a10.yaml", "cpu.yaml"])  # V1 and V2 sandboxes
def test_the_stdin_position_is_forgotten_at_the_runs_end(modal_with_secrets, config):
    fake = modal_with_secrets
    backend = ModalBackend()
    run = backend.up(config_plan(config), task=None, detach=True)
    backend.send(run.run_id, protocol.encode_input("user", text="hello"))
    key = f"stdin:{run.run_id}"
    assert key in fake.dict_items("ml-agent-state")

    backend.stop(run.run_id)

    assert key not in fake.dict_items("ml-agent-state")
    assert f"token:{run.run_id}" in fake.dict_items("ml-agent-state")  # revoke stays possible
