"""Run folders built by hand, as the local backend lays them out: `results` and `pull` only
read files, so a registry entry plus a folder on the data volume is an honest run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml_agent.backends.local import registry
from ml_agent.contracts import RunRecord

DATA_VOLUME = "sandbox-data"
TRACKIO_VOLUME = "sandbox-trackio"


def make_run(
    home: Path,
    run_id: str,
    *,
    status: str = "succeeded",
    created_at: float = 1_000.0,
    ended_at: float | None = 1_600.0,
    cost: float | None = 0.5,
    agent_cost: float | None = None,
    sweep: str | None = None,
    result: dict[str, Any] | None = None,
    evals: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    """A registry entry and its run folder; returns the run folder on the data volume."""
    paths = registry.RunPaths.of(run_id, home)
    paths.folder.mkdir(parents=True)
    registry.write_record(paths, RunRecord(
        run_id=run_id, backend="local", app="ml-agent", config="configs/local.yaml",
        config_hash="h", gpu=None, status=status, created_at=created_at, ended_at=ended_at,
        cost_usd=cost, agent_cost_usd=agent_cost, data_volume=DATA_VOLUME,
        trackio_volume=TRACKIO_VOLUME, sweep=sweep,
    ))
    folder = home / "volumes" / DATA_VOLUME / "runs" / run_id
    folder.mkdir(parents=True)
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    for stem, data in (evals or {}).items():
        (folder / "eval").mkdir(exist_ok=True)
        text = data if isinstance(data, str) else json.dumps(data)
        (folder / "eval" / f"{stem}.json").write_text(text)
    for rel, content in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    return folder
