"""`ml-agent pull`: a run folder copied here, only what changed, no link ever followed."""

from __future__ import annotations

import os
import shutil

import pytest

from ml_agent.cli import main
from tests.cli.runfolders import make_run

RUN = "20261126-0315-a1b2c3"
FILES = {
    "REPORT.md": b"# report\n",
    "result.json": b'{"status": "succeeded"}',
    "eval/metrics.json": b'{"accuracy": 0.9}',
    "model/weights.bin": b"\x00" * 70_000,
    "checkpoints/step-1/weights.bin": b"\x01" * 1000,
    "logs/train.log": b"step 1\n",
}


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def run(home):
    return make_run(home, RUN, files=FILES)


def test_pull_copies_the_run_folder_then_only_what_changed(run, tmp_path, capsys):
    dest = tmp_path / "here"
    assert main(["pull", RUN, str(dest)]) == 0
    assert tree(dest) == FILES
    assert "6 file(s) copied" in capsys.readouterr().err
    assert main(["pull", RUN, str(dest)]) == 0
    assert "0 file(s) copied (0 B), 6 unchanged" in capsys.readouterr().err
    (run / "logs" / "train.log").write_bytes(b"step 1\nstep 2\n")
    os.utime(run / "logs" / "train.log", (1e9, 1e9))
    assert main(["pull", RUN, str(dest)]) == 0
    assert "1 file(s) copied (14 B), 5 unchanged" in capsys.readouterr().err
    assert (dest / "logs" / "train.log").read_bytes() == b"step 1\nstep 2\n"


def test_dest_defaults_to_the_run_id_and_a_prefix_is_enough(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["pull", "20261126-0315"]) == 0
    assert tree(tmp_path / RUN) == FILES


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--include", "eval/*", "--include", "REPORT.md"], {"eval/metrics.json", "REPORT.md"}),
        (["--exclude", "checkpoints", "--exclude", "*.bin"],
         {"REPORT.md", "result.json", "eval/metrics.json", "logs/train.log"}),
        (["-i", "model", "-x", "model/*.json"], {"model/weights.bin"}),
    ],
)
def test_include_and_exclude_globs(run, tmp_path, flags, expected):
    dest = tmp_path / "here"
    assert main(["pull", RUN, str(dest), *flags]) == 0
    assert set(tree(dest)) == expected
    assert not (dest / "checkpoints").exists() or "checkpoints/step-1/weights.bin" in expected


def test_links_the_agent_planted_are_skipped_and_said_fifos_refused(run, tmp_path, capsys):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "id_rsa").write_bytes(b"PRIVATE")
    os.symlink(secret / "id_rsa", run / "key")
    os.symlink(secret, run / "eval" / "outside-dir")
    os.mkfifo(run / "logs" / "pipe")
    os.symlink(secret, run / "logs" / "\x1b[2Jclear")
    dest = tmp_path / "here"
    assert main(["pull", RUN, str(dest)]) == 0
    err = capsys.readouterr().err
    assert "skipped key: a symbolic link" in err
    assert "skipped eval/outside-dir: a symbolic link" in err
    assert "skipped logs/pipe: not a regular file" in err
    assert "skipped logs/[2Jclear: a symbolic link" in err and "\x1b" not in err
    assert tree(dest) == FILES and not any(p.is_symlink() for p in dest.rglob("*"))


def test_a_link_in_the_destination_is_not_followed(run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "here"
    dest.mkdir()
    os.symlink(elsewhere, dest / "eval")
    assert main(["pull", RUN, str(dest)]) == 1
    assert "eval in " in (err := capsys.readouterr().err) and "is a link or a file" in err
    assert list(elsewhere.iterdir()) == []


def test_a_run_whose_volume_is_gone_is_one_clear_error(run, home, tmp_path, capsys):
    shutil.rmtree(home / "volumes")
    assert main(["pull", RUN, str(tmp_path / "here")]) == 1
    err = capsys.readouterr().err
    assert "the data volume of run" in err and "is gone" in err and "Traceback" not in err
    assert not (tmp_path / "here").exists()


def test_a_run_without_a_folder_is_one_clear_error(home, tmp_path, capsys):
    folder = make_run(home, RUN)
    folder.rmdir()
    assert main(["pull", RUN, str(tmp_path / "here")]) == 1
    assert "has no folder on its data volume" in capsys.readouterr().err


def test_a_dest_that_is_a_file_is_one_clear_error(run, tmp_path, capsys):
    (tmp_path / "here").write_text("mine")
    assert main(["pull", RUN, str(tmp_path / "here")]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err
    assert (tmp_path / "here").read_text() == "mine"
