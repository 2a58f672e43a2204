"""`results` and `pull` of Modal runs: the registry Dict and the data volume, read through
the real SDK's volume file API (against the fake control plane's volume files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ml_agent.backends.modal.stores import RunRegistry
from ml_agent.cli import main
from ml_agent.contracts import CONFIGS_DIR, RunRecord
from tests.cli.test_results_plot import LOG

RUN = "20261126-0315-a1b2c3"


def put_run(run_id: str, *, data_volume: str | None = "sandbox-data") -> None:
    RunRegistry().put(RunRecord(
        run_id=run_id, backend="modal", app="ml-agent", config=str(CONFIGS_DIR / "a10.yaml"),
        config_hash="h", gpu="A10", status="succeeded", created_at=time.time() - 300,
        ended_at=time.time(), cost_usd=0.75, agent_cost_usd=0.7, data_volume=data_volume,
        sweep="sw-20261126-0315-111111",
    ))


def fill(folder) -> None:
    run = folder / "runs" / RUN
    (run / "eval").mkdir(parents=True)
    (run / "model").mkdir()
    (run / "result.json").write_text(json.dumps({"cost_usd": 0.75, "turns": 12}))
    (run / "eval" / "metrics.json").write_text(json.dumps({"accuracy": 0.93}))
    (run / "model" / "weights.bin").write_bytes(os.urandom(9 << 20))  # two 8 MiB blocks
    (run / "REPORT.md").write_text("# done\n")
    os.symlink("/etc/passwd", run / "passwd")
    os.mkfifo(run / "pipe")


def test_results_of_a_modal_run_read_its_volume(fake_modal, tmp_path, capsys):
    fake_modal.volume_files("sandbox-data", tmp_path / "data")
    fill(tmp_path / "data")
    put_run(RUN)
    assert main(["results", "--json", "20261126-0315"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["backend"] == "modal" and row["sweep"] == "sw-20261126-0315-111111"
    assert row["metrics"] == {"metrics.accuracy": 0.93, "turns": 12}
    assert row["cost_usd"] == 0.75 and row["notes"] == []


def test_a_run_recorded_without_its_data_volume_finds_it_in_its_config(fake_modal, tmp_path,
                                                                      capsys):
    fake_modal.volume_files("sandbox-data", tmp_path / "data")  # a10.yaml's data volume
    fill(tmp_path / "data")
    put_run(RUN, data_volume=None)  # as runs launched before the registry recorded it
    assert main(["results", "--json", RUN]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["metrics"]["metrics.accuracy"] == 0.93 and row["notes"] == []


def test_pull_of_a_modal_run_copies_files_once_and_skips_links(fake_modal, tmp_path, capsys):
    fake_modal.volume_files("sandbox-data", tmp_path / "data")
    fill(tmp_path / "data")
    put_run(RUN)
    dest = tmp_path / "here"
    assert main(["pull", RUN, str(dest)]) == 0
    err = capsys.readouterr().err
    assert "skipped passwd: a symbolic link" in err and "skipped pipe: not a regular" in err
    assert "4 file(s) copied" in err and "modal volume sandbox-data:/runs/" in err
    source = tmp_path / "data" / "runs" / RUN
    for rel in ("result.json", "eval/metrics.json", "model/weights.bin", "REPORT.md"):
        assert (dest / rel).read_bytes() == (source / rel).read_bytes()
    assert not (dest / "passwd").exists()
    gets = len(fake_modal.requests("VolumeGetFile2"))
    assert main(["pull", RUN, str(dest)]) == 0
    assert "0 file(s) copied (0 B), 4 unchanged" in capsys.readouterr().err
    assert len(fake_modal.requests("VolumeGetFile2")) == gets  # nothing downloaded again


def test_pull_of_a_modal_run_whose_volume_is_gone(fake_modal, tmp_path, capsys):
    put_run(RUN, data_volume="deleted-volume")
    assert main(["pull", RUN, str(tmp_path / "here")]) == 1
    err = capsys.readouterr().err
    assert "the data volume of run" in err and "deleted-volume" in err and "gone" in err


def test_plot_of_modal_runs_reads_their_trackio_volume(fake_modal, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    trackio = tmp_path / "trackio"
    trackio.mkdir()
    other = "20261126-0316-bbbbbb"
    subprocess.run([sys.executable, "-c", LOG, RUN, other], check=True, capture_output=True,
                   env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                        "TRACKIO_DIR": str(trackio), "HF_HOME": str(tmp_path / "hf")},
                   timeout=120)
    os.symlink("/etc/passwd", trackio / "planted.db")
    fake_modal.volume_files("sandbox-trackio", trackio)
    for run_id in (RUN, other):
        RunRegistry().put(RunRecord(
            run_id=run_id, backend="modal", app="ml-agent", config="c.yaml", config_hash="h",
            gpu=None, status="succeeded", created_at=1.0, data_volume="sandbox-data",
            trackio_volume="sandbox-trackio"))
    out = tmp_path / "acc.png"
    assert main(["results", RUN, other, "--plot", "acc", "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "2 curve(s) of acc" in said.out and "planted.db skipped" in said.err
    assert out.read_bytes()[:4] == b"\x89PNG"
