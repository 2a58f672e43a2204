"""What the sandbox may plant on the volume: links are never followed, Spaces stay in bounds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ml_agent.syncer import SPACE_ID_FILE, SpaceResolver, Syncer
from tests.syncer.helpers import RecordingUploader, add_project, rows, tree

SECRET = b"hf_this-is-the-host's-secret"


def make(vol: Path, tmp: Path) -> tuple[Syncer, RecordingUploader, list[str]]:
    uploader = RecordingUploader(tmp / "store")
    logs: list[str] = []
    syncer = Syncer(vol, uploader, resolve_space=lambda: "my-org/metrics",
                    work_dir=tmp / "work", log=logs.append)
    return syncer, uploader, logs


def test_a_symlinked_database_is_never_followed(tmp_path: Path, template: Path) -> None:
    outside = tmp_path / "host"
    secret_db = add_project(outside, template, "secret")  # a readable database elsewhere
    vol = tmp_path / "vol"
    add_project(vol, template, "fine")
    os.symlink(secret_db, vol / "evil.db")
    syncer, uploader, logs = make(vol, tmp_path)
    for _ in range(3):
        syncer.cycle()
    assert [u.project for u in uploader.uploads] == ["fine"]
    assert sum("'evil'" in line and "not a regular file" in line for line in logs) == 1


@pytest.mark.parametrize("side", ["-wal", "-shm"])
def test_a_symlinked_wal_or_shm_skips_the_project(tmp_path: Path, template: Path,
                                                  side: str) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    (tmp_path / "elsewhere").write_bytes(b"\0" * 4096)
    os.symlink(tmp_path / "elsewhere", vol / f"p.db{side}")
    syncer, uploader, logs = make(vol, tmp_path)
    syncer.cycle()
    assert uploader.uploads == [] and any("not a regular file" in line for line in logs)


def test_links_and_fifos_under_media_are_never_followed(tmp_path: Path, template: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "token").write_bytes(SECRET)
    (host / "dir").mkdir()
    (host / "dir" / "token").write_bytes(SECRET)
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    media = vol / "media" / "p" / "run-1"
    media.mkdir(parents=True)
    (media / "ok.png").write_bytes(b"png")
    os.symlink(host / "token", media / "leak.png")
    os.symlink(host / "dir", media / "leakdir")
    os.symlink("/proc/self/environ", media / "env.txt")
    os.mkfifo(media / "pipe.png")  # opening it for reading would block forever
    before = tree(vol)
    syncer, uploader, logs = make(vol, tmp_path)
    syncer.cycle()
    [upload] = uploader.uploads
    assert upload.media == {"run-1/ok.png": b"png"}
    for planted in ("leak.png", "leakdir", "env.txt", "pipe.png"):
        assert any(planted in line for line in logs), planted
    assert tree(vol) == before


@pytest.mark.parametrize("planted", ["media", "media/p"])
def test_a_symlinked_media_folder_is_not_followed(tmp_path: Path, template: Path,
                                                  planted: str) -> None:
    host = tmp_path / "host" / "p"
    host.mkdir(parents=True)
    (host / "token").write_bytes(SECRET)
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    (vol / planted).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(host if planted == "media/p" else host.parent, vol / planted)
    syncer, uploader, logs = make(vol, tmp_path)
    syncer.cycle()
    [upload] = uploader.uploads
    assert upload.media == {} and rows(upload.db) == 3
    assert any("not a plain folder" in line for line in logs)


# -- the target Space -----------------------------------------------------------------------
def resolver(vol: Path, logs: list[str], space_id: str | None = None,
             namespace: str | None = "my-org") -> SpaceResolver:
    return SpaceResolver(vol, space_id=space_id, namespace=namespace, log=logs.append)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("other-org/metrics\n", "outside the namespace"),
        ("my-org-evil/metrics", "outside the namespace"),
        ("My-Org/metrics", "outside the namespace"),
        ("my-org", "not a Space id"),
        ("my-org/../x", "not a Space id"),
        ("my-org/a/b", "not a Space id"),
        ("https://huggingface.co/spaces/my-org/x", "not a Space id"),
    ],
)
def test_a_space_id_file_outside_the_namespace_is_ignored_with_a_warning(
    tmp_path: Path, template: Path, content: str, why: str
) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    (vol / SPACE_ID_FILE).write_text(content)
    logs: list[str] = []
    uploader = RecordingUploader(tmp_path / "store")
    syncer = Syncer(vol, uploader, resolve_space=resolver(vol, logs), work_dir=tmp_path / "w",
                    log=logs.append)
    for _ in range(3):
        syncer.cycle()
    assert uploader.uploads == []
    assert len(logs) == 1 and logs[0].startswith("warning: ignoring") and why in logs[0]


def test_a_space_id_file_inside_the_namespace_is_honoured(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    (vol / SPACE_ID_FILE).write_text("my-org/mnist-run\n")
    logs: list[str] = []
    uploader = RecordingUploader(tmp_path / "store")
    Syncer(vol, uploader, resolve_space=resolver(vol, logs), work_dir=tmp_path / "w",
           log=logs.append).cycle()
    assert [(u.space_id, u.private) for u in uploader.uploads] == [("my-org/mnist-run", True)]
    assert not any(line.startswith("warning") for line in logs)


def test_the_config_space_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / SPACE_ID_FILE).write_text("my-org/from-agent")
    logs: list[str] = []
    assert resolver(tmp_path, logs, space_id="my-org/from-config")() == "my-org/from-config"


def test_no_namespace_means_the_agent_cannot_choose(tmp_path: Path) -> None:
    (tmp_path / SPACE_ID_FILE).write_text("anyone/x")
    logs: list[str] = []
    assert resolver(tmp_path, logs, namespace=None)() is None
    assert "syncer.namespace is not set" in logs[0]


def test_a_symlinked_space_id_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("my-org/x")
    os.symlink(tmp_path / "elsewhere", tmp_path / SPACE_ID_FILE)
    logs: list[str] = []
    assert resolver(tmp_path, logs)() is None
    assert "it is a symbolic link; not followed" in logs[0]


def test_a_fifo_or_a_huge_space_id_file_is_refused_unread(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / SPACE_ID_FILE)  # opened without blocking, then refused
    logs: list[str] = []
    assert resolver(tmp_path, logs)() is None
    assert "it is not a regular file" in logs[0]
    os.unlink(tmp_path / SPACE_ID_FILE)
    with open(tmp_path / SPACE_ID_FILE, "wb") as fh:
        fh.truncate(1 << 30)
    assert resolver(tmp_path, logs)() is None
    assert "it is 1073741824 bytes, over the 1024 byte limit" in logs[-1]


def test_no_space_yet_warns_once_then_publishes_when_named(tmp_path: Path) -> None:
    logs: list[str] = []
    resolve = resolver(tmp_path, logs)
    assert resolve() is None and resolve() is None
    assert len(logs) == 1 and "no target Space" in logs[0]
    (tmp_path / SPACE_ID_FILE).write_text("my-org/late")
    assert resolve() == "my-org/late"
