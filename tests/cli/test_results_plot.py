"""`ml-agent results --plot METRIC`: curves from the runs' trackio databases, as a PNG."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ml_agent.cli import main
from tests.cli.runfolders import TRACKIO_VOLUME, make_run
from tests.cli.test_results_cmd import A, B, C

#: Real trackio, as the agent's setup_trackio.py calls it (the run's id in the config).
LOG = """
import sys, trackio
for run in sys.argv[1:]:
    trackio.init(project="sweep", name="r-" + run[-6:], config={"ml_agent_run_id": run})
    for step in range(6):
        trackio.log({"loss": 1.0 / (step + 1), "acc": step / 6})
    trackio.finish()
"""


def log_with_trackio(home, *runs: str) -> None:
    folder = home / "volumes" / TRACKIO_VOLUME
    folder.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TRACKIO_DIR": str(folder),
           "HF_HOME": str(home / "hf")}
    subprocess.run([sys.executable, "-c", LOG, *runs], env=env, check=True,
                   capture_output=True, timeout=120)


def test_plot_writes_a_png_of_the_metric_across_the_chosen_runs(home, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    for run in (A, B, C):
        make_run(home, run)
    log_with_trackio(home, A, B, C)
    out = tmp_path / "loss.png"
    assert main(["results", A, B, "--plot", "loss", "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert f"wrote {out}" in said.out and "2 curve(s) of loss" in said.out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_metric_no_run_logged_is_one_clear_error(home, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    make_run(home, A)
    log_with_trackio(home, A)
    assert main(["results", A, "--plot", "bleu", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no curve of 'bleu'" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.png"))


def test_without_matplotlib_the_error_names_the_extra(home, capsys, monkeypatch, tmp_path):
    make_run(home, A)
    log_with_trackio(home, A)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a machine without it
    assert main(["results", A, "--plot", "loss", "--out", str(tmp_path)]) == 1
    assert "pip install 'ml-agent[plot]'" in capsys.readouterr().err
