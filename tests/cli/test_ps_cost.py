"""`ps` COST: the proxy's metering; the agent's own figure beside it, labelled, when it differs."""

from __future__ import annotations

import json

import pytest

from ml_agent.backends.local import registry
from ml_agent.cli import main
from ml_agent.contracts import RunRecord


def record(run_id: str, cost: float | None, agent: float | None) -> RunRecord:
    return RunRecord(run_id=run_id, backend="local", app="ml-agent", config="configs/local.yaml",
                     config_hash="h", gpu=None, status="succeeded", created_at=1.0,
                     cost_usd=cost, agent_cost_usd=agent)


@pytest.mark.parametrize(
    ("cost", "agent", "shown"),
    [
        (0.1234, 0.0, "$0.12 (agent says $0.0000)"),  # an agent that says it spent nothing
        (0.1234, 0.12, "$0.12"),  # the same to the cent: said once
        (None, 0.25, "- (agent says $0.25)"),  # the proxy metered nothing (no request)
        (0.004, None, "$0.0040"),
    ],
)
def test_ps_shows_the_proxys_cost_and_labels_the_agents(tmp_path, monkeypatch, capsys, cost,
                                                        agent, shown):
    monkeypatch.setenv("ML_AGENT_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    paths = registry.RunPaths.of("20261126-0315-a1b2c3", tmp_path)
    paths.folder.mkdir(parents=True)
    registry.write_record(paths, record(paths.run_id, cost, agent))
    assert main(["ps", "--backend", "local"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.rstrip().endswith(shown), line
    assert main(["ps", "--backend", "local", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["cost_usd"], listed["agent_cost_usd"]) == (cost, agent)
