""".claude/scripts/setup_trackio.py with the real trackio, in a temporary TRACKIO_DIR."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ml_agent.contracts import CLAUDE_DIR

SCRIPT = CLAUDE_DIR / "scripts" / "setup_trackio.py"
# The call transformers 5.x's TrackioCallback.setup makes, then a log line.
TRAINER_LIKE = """
import trackio
trackio.init(project="sst2-distilbert", name="lr3e-5", space_id=None, resume="allow",
             private=None, bucket_id=None, auto_log_gpu=False, auto_log_cpu=False)
trackio.log({"train/loss": 0.5, "train/global_step": 10})
trackio.finish()
"""


def run_setup(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",  # nothing here may reach the Hub
        "TRACKIO_DIR": str(tmp_path / "trackio"),
        "ML_AGENT_RUN_DIR": str(tmp_path / "runs" / "r1"),
        "ML_AGENT_RUN_ID": "r1",
        "ML_AGENT_HF_NAMESPACE": "my-org",
    }
    base.update(env)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=base, capture_output=True, text=True,
        timeout=120,
    )


def test_writes_space_id_starts_the_run_and_creates_the_folders(tmp_path):
    proc = run_setup(
        tmp_path, "--project", "sst2-distilbert", "--run-name", "lr3e-5",
        "--space", "sst2-space", "--config", '{"lr": 3e-5}',
        TRACKIO_SPACE_ID="someone-else/public-space",  # must be ignored, not used
    )
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    run_dir = tmp_path / "runs" / "r1"
    assert out["project"] == "sst2-distilbert" and out["run_name"] == "lr3e-5"
    assert out["space_id"] == "my-org/sst2-space"
    # The syncer's contract: first line of $TRACKIO_DIR/space_id is namespace/space-name.
    space_file = tmp_path / "trackio" / "space_id"
    assert space_file.read_text().splitlines()[0] == "my-org/sst2-space"
    for key in ("checkpoints", "model", "eval", "logs"):
        assert out[key] == str(run_dir / key) and (run_dir / key).is_dir()
    assert "ignoring TRACKIO_SPACE_ID" in proc.stderr
    # What transformers' TrackioCallback does next continues the same local run.
    trainer = subprocess.run(
        [sys.executable, "-c", TRAINER_LIKE], capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
             "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
             "TRACKIO_DIR": str(tmp_path / "trackio")},
    )
    assert trainer.returncode == 0, trainer.stderr
    with sqlite3.connect(tmp_path / "trackio" / "sst2-distilbert.db") as db:
        runs = set(db.execute("select distinct run_name, run_id from metrics"))
    assert len(runs) == 1 and next(iter(runs))[0] == "lr3e-5"


def test_without_a_namespace_metrics_stay_local(tmp_path):
    proc = run_setup(tmp_path, "--project", "p", "--run-name", "r", ML_AGENT_HF_NAMESPACE="")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "trackio" / "space_id").exists()
    assert "metrics stay local" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "other-org/x"], "outside the namespace 'my-org'"),
        (["--space", "bad name!"], "not a valid Space name"),
        (["--config", "[1]"], "must be a JSON object"),
    ],
)
def test_bad_arguments_change_nothing(tmp_path, args, message):
    proc = run_setup(tmp_path, "--project", "p", "--run-name", "r", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "trackio").exists() and not (tmp_path / "runs").exists()


SWEEP = "sw-20261204-1612-5d1e7b"


def _runs(tmp_path: Path, project: str) -> set[str]:
    with sqlite3.connect(tmp_path / "trackio" / f"{project}.db") as db:
        return {name for (name,) in db.execute("select distinct run_name from metrics")}


def test_the_launchers_names_are_the_defaults(tmp_path):
    """A sweep's run: the launcher sets the project and run name (agent/protocol.py ENV);
    without flags, the script logs under them."""
    proc = run_setup(tmp_path, ML_AGENT_TRACKIO_PROJECT=SWEEP,
                     ML_AGENT_TRACKIO_RUN_NAME="r01-claude-haiku-4-5")
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert (out["project"], out["run_name"]) == (SWEEP, "r01-claude-haiku-4-5")
    assert _runs(tmp_path, SWEEP) == {"r01-claude-haiku-4-5"}
    assert "ignored" not in proc.stderr


def test_the_launchers_names_win_over_differing_flags(tmp_path):
    proc = run_setup(tmp_path, "--project", "sst2-distilbert", "--run-name", "lr3e-5",
                     ML_AGENT_TRACKIO_PROJECT=SWEEP, ML_AGENT_TRACKIO_RUN_NAME="r00-a")
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert (out["project"], out["run_name"]) == (SWEEP, "r00-a")
    assert f"--project 'sst2-distilbert' ignored: this run logs under '{SWEEP}' " \
        "($ML_AGENT_TRACKIO_PROJECT" in proc.stderr
    assert "--run-name 'lr3e-5' ignored" in proc.stderr
    assert _runs(tmp_path, SWEEP) == {"r00-a"}
    assert not (tmp_path / "trackio" / "sst2-distilbert.db").exists()


def test_empty_launcher_names_leave_the_choice_to_the_flags(tmp_path):
    """A lone run: the variables are set but empty; the agent's flags name the run."""
    proc = run_setup(tmp_path, "--project", "p", "--run-name", "r",
                     ML_AGENT_TRACKIO_PROJECT="", ML_AGENT_TRACKIO_RUN_NAME="")
    assert proc.returncode == 0, proc.stderr
    assert _runs(tmp_path, "p") == {"r"}
    missing = run_setup(tmp_path, "--run-name", "r", ML_AGENT_TRACKIO_PROJECT="")
    assert missing.returncode == 2
    assert "--project is required (the launcher did not set $ML_AGENT_TRACKIO_PROJECT)" \
        in missing.stderr
