"""`ml-agent dashboard CONFIG` loads its config under the project tree rule, like validate,
plan and up: a file outside the tree is refused unless `--allow-outside` admits it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_agent.cli import main
from ml_agent.contracts import CONFIGS_DIR


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project's config that extends a file in a folder outside the project."""
    monkeypatch.delenv("ML_AGENT_ALLOW_OUTSIDE", raising=False)
    monkeypatch.setenv("ML_AGENT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "base.yaml").write_text(
        f"extends: {CONFIGS_DIR / 'local.yaml'}\nvolumes:\n  trackio: {{name: shared-metrics}}\n"
    )
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "run.yaml").write_text("extends: ../shared/base.yaml\n")
    return project / "run.yaml"


def test_dashboard_refuses_a_config_reaching_outside_the_project(config, capsys):
    assert main(["dashboard", str(config), "--no-browser"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "outside the project tree" in err and "--allow-outside" in err


def test_dashboard_allow_outside_admits_the_folder(config, tmp_path, capsys):
    code = main(["dashboard", str(config), "--no-browser",
                 "--allow-outside", str(tmp_path / "shared")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1  # the config loaded: its volume, never used here, does not exist
    assert f"no local trackio volume at {tmp_path / 'home' / 'volumes' / 'shared-metrics'}" in err
