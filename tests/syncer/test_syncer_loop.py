"""The sync loop: live writers, failures and backoff, incremental uploads, state."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_agent.syncer import JsonFileState, Syncer
from tests.syncer.helpers import (
    TRACKIO_WRITER,
    FakeClock,
    RecordingUploader,
    WalWriter,
    add_project,
    clean_env,
    rows,
    tree,
)

SPACE = "my-org/metrics"


def make_syncer(vol: Path, uploader: RecordingUploader, tmp: Path, **kwargs) -> Syncer:
    logs: list[str] = kwargs.pop("logs", [])
    return Syncer(vol, uploader, resolve_space=lambda: SPACE, work_dir=tmp / "work",
                  log=logs.append, **kwargs)


def test_trackio_logging_live_while_syncing_loses_nothing(tmp_path: Path) -> None:
    """trackio.log in another process; hundreds of cycles; every upload whole; none lost."""
    vol = tmp_path / "vol"
    vol.mkdir()
    uploader = RecordingUploader(tmp_path / "store")
    syncer = make_syncer(vol, uploader, tmp_path)
    steps = 600
    writer = subprocess.Popen([sys.executable, "-c", TRACKIO_WRITER, str(steps)],
                              env=clean_env(vol), stdout=subprocess.DEVNULL)
    cycles = 0
    try:
        while writer.poll() is None or cycles < 300:
            syncer.cycle()
            cycles += 1
            time.sleep(0.004)  # a real loop sleeps between cycles; leave the writer some CPU
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    syncer.final_sync()
    live = uploader.of("live")
    assert cycles >= 300 and len(live) >= 3
    assert all(u.integrity == "ok" and u.space_id == SPACE and u.private for u in live)
    counts = [rows(u.db) for u in live]
    assert counts == sorted(counts)  # each upload holds at least what the previous one did
    assert counts[-1] == rows(vol / "live.db") == steps  # the last upload holds every row
    assert rows(live[-1].db, f"step = {steps - 1}") == 1


def test_a_writer_checkpointing_under_the_syncer(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    db = add_project(vol, template, "p")
    uploader = RecordingUploader(tmp_path / "store")
    syncer = make_syncer(vol, uploader, tmp_path)
    writer = WalWriter(db, checkpoint_every=37)
    for step in range(1000):
        writer.log(step)
        if step % 11 == 0:
            syncer.cycle()
    syncer.final_sync()
    writer.close()
    uploads = uploader.of("p")
    assert len(uploads) == len(range(0, 1000, 11)) + 1  # one per changed cycle, plus the final
    assert all(u.integrity == "ok" for u in uploads)
    assert rows(uploads[-1].db) == 1003


def test_failed_uploads_back_off_and_the_next_success_catches_up(
    tmp_path: Path, template: Path
) -> None:
    vol = tmp_path / "vol"
    db = add_project(vol, template, "flaky")
    add_project(vol, template, "steady")
    clock = FakeClock()
    uploader = RecordingUploader(tmp_path / "store", clock=clock, fail_first=4,
                                 fail_projects={"flaky"})
    logs: list[str] = []
    syncer = make_syncer(vol, uploader, tmp_path, clock=clock, sleep=clock.sleep,
                         rng=random.Random(7), backoff_base_s=3, backoff_max_s=20, logs=logs)
    flaky, steady = WalWriter(db), WalWriter(vol / "steady.db")
    for step in range(60):  # 60 s of one-second cycles, both projects logging
        flaky.log(step)
        if step % 3 == 0:
            steady.log(step)
        syncer.cycle()
        clock.sleep(1)
    attempts = [t for p, t in uploader.attempts if p == "flaky"]
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    # Four failures, then successes; each wait is base * 2^(n-1), capped, times [0.5, 1],
    # rounded up to the next one-second cycle.
    for n, gap in enumerate(gaps[:4], start=1):
        nominal = min(20, 3 * 2 ** (n - 1))
        assert nominal * 0.5 <= gap <= nominal + 1, (n, gap)
    assert gaps[4:] and all(gap == 1 for gap in gaps[4:])  # healthy again: every cycle
    assert sum("retrying in" in line for line in logs) == 4
    # The other project went on uploading at each of its changes meanwhile.
    assert len(uploader.of("steady")) == 20
    flaky.close()
    steady.close()
    before = tree(vol)
    syncer.final_sync()
    assert tree(vol) == before  # the volume is only ever read
    assert rows(uploader.of("flaky")[-1].db) == 63  # nothing lost
    assert rows(uploader.of("steady")[-1].db) == 23


def test_final_sync_retries_with_backoff_sleeps(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    clock = FakeClock()
    uploader = RecordingUploader(tmp_path / "store", clock=clock, fail_first=2)
    syncer = make_syncer(vol, uploader, tmp_path, clock=clock, sleep=clock.sleep,
                         rng=random.Random(1), backoff_base_s=4)
    report = syncer.final_sync(attempts=3)
    assert report.uploaded == ["p"] and len(uploader.attempts) == 3
    assert 2 <= clock.sleeps[0] <= 4 and 4 <= clock.sleeps[1] <= 8
    assert syncer.pending() == []


def test_final_sync_that_keeps_failing_says_so(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    clock = FakeClock()
    logs: list[str] = []
    syncer = make_syncer(vol, RecordingUploader(tmp_path / "s", clock=clock, fail_first=99),
                         tmp_path, clock=clock, sleep=clock.sleep, logs=logs)
    report = syncer.final_sync(attempts=2)
    assert report.failed == ["p"] and syncer.pending() == ["p"]
    assert "was not published" in logs[-1]


def test_one_upload_per_change_among_a_hundred_idle_projects(
    tmp_path: Path, template: Path
) -> None:
    vol = tmp_path / "vol"
    for i in range(100):
        add_project(vol, template, f"idle-{i:03d}")
    busy = WalWriter(add_project(vol, template, "busy"))
    uploader = RecordingUploader(tmp_path / "store")
    syncer = make_syncer(vol, uploader, tmp_path)
    first = syncer.cycle()
    assert len(first.uploaded) == 101  # everything once
    for change in range(10):
        busy.log(change)
        report = syncer.cycle()
        assert report.uploaded == ["busy"] and report.projects == 101
        assert syncer.cycle().uploaded == []  # nothing changed: nothing uploaded
    assert len(uploader.of("busy")) == 11
    assert all(len(uploader.of(f"idle-{i:03d}")) == 1 for i in range(100))
    assert rows(uploader.of("busy")[-1].db) == 13
    busy.close()


def test_a_new_space_gets_everything_again(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    target = ["my-org/a"]
    uploader = RecordingUploader(tmp_path / "store")
    syncer = Syncer(vol, uploader, resolve_space=lambda: target[0], work_dir=tmp_path / "w",
                    log=lambda _: None)
    syncer.cycle()
    target[0] = "my-org/b"
    syncer.cycle()
    syncer.cycle()
    assert [u.space_id for u in uploader.uploads] == ["my-org/a", "my-org/b"]


def test_nothing_is_uploaded_without_a_space(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    uploader = RecordingUploader(tmp_path / "store")
    syncer = Syncer(vol, uploader, resolve_space=lambda: None, work_dir=tmp_path / "w",
                    log=lambda _: None)
    assert syncer.cycle().uploaded == [] and uploader.attempts == []


@pytest.mark.parametrize("private", [True, False])
def test_privacy_is_passed_to_the_uploader(tmp_path: Path, template: Path, private: bool) -> None:
    vol = tmp_path / "vol"
    add_project(vol, template, "p")
    uploader = RecordingUploader(tmp_path / "store")
    make_syncer(vol, uploader, tmp_path, private=private).cycle()
    assert [u.private for u in uploader.uploads] == [private]


def test_state_file_survives_a_restart(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    db = add_project(vol, template, "p")
    state_path = tmp_path / "private" / "state.json"
    uploader = RecordingUploader(tmp_path / "store")
    make_syncer(vol, uploader, tmp_path, state=JsonFileState(state_path)).cycle()
    again = make_syncer(vol, uploader, tmp_path, state=JsonFileState(state_path))
    assert again.cycle().uploaded == []  # a restarted syncer does not re-upload
    writer = WalWriter(db)
    writer.log(1)
    assert again.cycle().uploaded == ["p"]
    writer.close()
    assert len(uploader.uploads) == 2


def test_touched_or_replaced_files_with_the_same_content_are_not_uploaded_again(
    tmp_path: Path, template: Path
) -> None:
    vol = tmp_path / "vol"
    db = add_project(vol, template, "p")
    uploader = RecordingUploader(tmp_path / "store")
    syncer = make_syncer(vol, uploader, tmp_path)
    syncer.cycle()
    os.utime(db, ns=(1, 1))  # new mtime
    first = syncer.cycle()
    shutil.copyfile(db, tmp_path / "same.db")
    os.replace(tmp_path / "same.db", db)  # new inode, same bytes
    second = syncer.cycle()
    assert first.same == ["p"] and second.same == ["p"] and len(uploader.uploads) == 1
    assert syncer.cycle().changed == []  # the new look was remembered
    writer = WalWriter(db)
    writer.log(1)
    assert syncer.cycle().uploaded == ["p"]
    writer.close()


def test_a_deleted_project_stops_being_pending(tmp_path: Path, template: Path) -> None:
    vol = tmp_path / "vol"
    db = add_project(vol, template, "p")
    clock = FakeClock()
    syncer = make_syncer(vol, RecordingUploader(tmp_path / "s", fail_first=9), tmp_path,
                         clock=clock)
    syncer.cycle()
    assert syncer.pending() == ["p"]
    db.unlink()
    syncer.cycle()
    assert syncer.pending() == []
