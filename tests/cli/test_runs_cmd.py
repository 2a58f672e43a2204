"""`ps`, `logs`, `attach`, `stop` on local runs: ids that work when pasted, prefixes, where
the results are. The registry is written as `up` writes it; nothing runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_agent.backends.local import registry
from ml_agent.contracts import RunRecord

IDS = ("20261126-0315-a1b2c3", "20261126-0315-a1ffff", "20261127-0900-0c0c0c")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for i, run_id in enumerate(IDS):
        paths = registry.RunPaths.of(run_id, home)
        paths.folder.mkdir(parents=True)
        data = home / "volumes" / "sandbox-data"
        registry.write_json(paths.launch, {"host": {"volumes": {"data": str(data)}}}, mode=0o600)
        registry.write_record(paths, RunRecord(
            run_id=run_id, backend="local", app="ml-agent",
            config="/a/rather/long/path/to/the/project/configs/local.yaml", config_hash="c",
            gpu=None, status="succeeded", created_at=time.time() - 60 * i, ended_at=time.time(),
            run_dir=f"/data/runs/{run_id}", cost_usd=0.5,
        ))
        paths.output.write_text(f"output of {run_id}\n")
    return home


def cli(home: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "ANTHROPIC_"))}
    env.update(ML_AGENT_HOME=str(home), COLUMNS=str(columns),
               MODAL_CONFIG_PATH=str(home / "no-modal.toml"))
    return subprocess.run([sys.executable, "-m", "ml_agent", *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("columns", [60, 80])
def test_ps_shows_whole_run_ids_even_on_a_narrow_terminal(home: Path, columns: int) -> None:
    out = cli(home, "ps", columns=columns)
    assert out.returncode == 0, out.stderr
    for run_id in IDS:
        assert run_id in out.stdout.split(), out.stdout  # whole, as one word: paste works


def test_ps_json_says_where_each_run_folder_is_on_this_machine(home: Path) -> None:
    out = cli(home, "ps", "--json")
    rows = {row["run_id"]: row for row in json.loads(out.stdout)}
    folder = home / "volumes" / "sandbox-data" / "runs" / IDS[0]
    assert rows[IDS[0]]["where"] == {"host_path": str(folder)}
    assert rows[IDS[0]]["run_dir"] == f"/data/runs/{IDS[0]}"  # the sandbox's view, as before


def test_a_unique_prefix_is_enough_and_an_ambiguous_one_lists_the_runs(home: Path) -> None:
    out = cli(home, "logs", "20261127")
    assert out.returncode == 0 and out.stdout == f"output of {IDS[2]}\n"
    out = cli(home, "logs", "20261126-0315-a1")
    assert out.returncode == 1
    assert out.stderr == (
        f"error: '20261126-0315-a1' matches 2 runs ({IDS[1]}, {IDS[0]}); give more of the id\n"
    )
    out = cli(home, "logs", "nope")
    assert out.returncode == 1 and out.stderr == "error: no run 'nope' (see `ml-agent ps`)\n"


def test_a_modal_run_folder_is_named_by_its_volume_and_path() -> None:
    from ml_agent.cli.runs import where
    from ml_agent.contracts import CONFIGS_DIR

    record = RunRecord(run_id=IDS[0], backend="modal", app="ml-agent",
                       config=str(CONFIGS_DIR / "a10.yaml"), config_hash="c", gpu="A10",
                       status="running", created_at=time.time())
    assert where(record) == {"volume": "sandbox-data", "path": f"runs/{IDS[0]}"}
    gone = RunRecord(**{**record.to_dict(), "config": "/nowhere/gone.yaml"})
    assert where(gone) == {"volume": None, "path": f"runs/{IDS[0]}"}
