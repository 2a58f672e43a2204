"""A sandbox line that never ends, read through the real modal SDK from the fake control
plane: `logs` and `attach` cut it at lines.MAX_LINE_BYTES instead of holding all of it."""

from __future__ import annotations

import json

import pytest

from ml_agent.backends.modal import ModalBackend
from ml_agent.lines import MAX_LINE_BYTES, was_cut
from tests.modal.plans import config_plan

CHUNKS = 12  # x 1 MiB, no newline


@pytest.fixture
def fake(fake_modal):
    for name, env in {"anthropic-secret": {"ANTHROPIC_API_KEY": "sk-ant-real"},
                      "hf-write": {"HF_TOKEN": "hf"}, "github-secret": {}}.items():
        fake_modal.add_secret(name, env)
    return fake_modal


@pytest.mark.parametrize("config", ["a10.yaml", "cpu.yaml"])  # V1 (GPU) and V2 sandboxes
def test_a_line_that_never_ends_is_cut_on_both_kinds_of_sandbox(fake, config):
    fake.v2_output_keep = 64 << 20  # V2 sandboxes keep recent output only: keep it all
    messages: list[str] = []
    backend = ModalBackend(progress=messages.append)
    run = backend.up(config_plan(config), task="train", detach=True)
    sandbox = fake.sandboxes[run.sandbox_id]
    event = {"type": "turn_end", "seq": 1, "ts": 1.0}
    for _ in range(CHUNKS):
        sandbox.write_stdout("x" * (1 << 20))
    sandbox.write_stdout("\n" + json.dumps(event) + "\n")
    sandbox.exit(0)

    logs = list(backend.logs(run.run_id, follow=False))
    assert [len(line) <= MAX_LINE_BYTES + 100 for line in logs] == [True, True]
    assert was_cut(logs[0]) and logs[0].endswith(
        f"{(CHUNKS << 20) - MAX_LINE_BYTES} more bytes not shown]")
    assert json.loads(logs[1]) == event

    assert list(backend.events(run.run_id, follow=False)) == [event]
    assert any(f"longer than {MAX_LINE_BYTES} bytes" in m for m in messages), messages
