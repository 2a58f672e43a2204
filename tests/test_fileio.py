"""fileio: atomic writes leave no half file nor temp; untrusted reads refuse links, FIFOs,
devices, folders and oversized files without blocking or reading them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from ml_agent.errors import UnsafeFile
from ml_agent.fileio import atomic_write_bytes, atomic_write_json, open_dir, read_untrusted


def test_atomic_write_replaces_the_file_with_the_mode_asked_and_no_temp_left(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write_bytes(target, b"x", mode=0o644)
    assert target.read_bytes() == b"x" and stat.S_IMODE(target.stat().st_mode) == 0o644 & ~_umask()
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_replaces_a_planted_link_never_its_target(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").symlink_to(victim)
    fd = open_dir(tmp_path, "run")
    try:
        atomic_write_json("result.json", {"ok": True}, dir_fd=fd)
    finally:
        os.close(fd)
    assert victim.read_text() == "untouched"
    assert not (tmp_path / "run" / "result.json").is_symlink()


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]
    fd = open_dir(tmp_path)
    try:
        with pytest.raises(ValueError, match="plain name"):
            atomic_write_bytes("../f.json", b"", dir_fd=fd)
    finally:
        os.close(fd)


def test_concurrent_writers_never_show_a_reader_half_a_file(tmp_path):
    target = tmp_path / "record.json"
    atomic_write_json(target, {"n": 0, "pad": "x" * 50_000})
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            atomic_write_json(target, {"n": n, "pad": "x" * 50_000})

    writers = [threading.Thread(target=write) for _ in range(3)]
    for w in writers:
        w.start()
    try:
        for _ in range(300):
            assert json.loads(target.read_text())["pad"] == "x" * 50_000
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert os.listdir(tmp_path) == ["record.json"]


def test_read_untrusted_reads_a_regular_file_up_to_its_cap(tmp_path):
    (tmp_path / "r").write_bytes(b"12345")
    assert read_untrusted(tmp_path / "r", cap=5) == b"12345"
    with pytest.raises(UnsafeFile, match="over the 4 byte limit"):
        read_untrusted(tmp_path / "r", cap=4)
    with pytest.raises(FileNotFoundError):
        read_untrusted(tmp_path / "missing", cap=5)


def test_read_untrusted_counts_the_bytes_it_reads_not_only_the_size(tmp_path):
    # /proc files are regular files of size 0 that read as much as they hold: a file that
    # grows between fstat and read behaves the same.
    assert os.stat("/proc/self/maps").st_size == 0
    with pytest.raises(UnsafeFile, match="grew past the 16 byte limit"):
        read_untrusted("/proc/self/maps", cap=16)


def test_read_untrusted_refuses_links_folders_and_devices(tmp_path):
    (tmp_path / "real").write_text("{}")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeFile, match="symbolic link"):
        read_untrusted(tmp_path / "link", cap=100)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        read_untrusted(tmp_path, cap=100)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        read_untrusted("/dev/zero", cap=100)


def test_read_untrusted_does_not_block_on_a_fifo(tmp_path):
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_untrusted(fifo, cap=100)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock it (a writer opens the FIFO), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_untrusted blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], UnsafeFile)
    assert "not a regular file" in str(outcome[0])


#: Refuses a 2 GiB sparse file and prints how much the peak memory grew (KiB).
SPARSE = """
import resource, sys
from ml_agent.errors import UnsafeFile
from ml_agent.fileio import read_untrusted
with open(sys.argv[1], "wb") as f:
    f.truncate(2 << 30)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_untrusted(sys.argv[1], cap=4 << 20)
except UnsafeFile as exc:
    print(exc, file=sys.stderr)
else:
    sys.exit("not refused")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_sparse_2_gib_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "result.json"
    out = subprocess.run([sys.executable, "-c", SPARSE, str(path)], capture_output=True,
                         text=True, check=True)
    assert "over the 4194304 byte limit" in out.stderr
    assert int(out.stdout) < 8 * 1024  # KiB: nothing like the file was read


def test_open_dir_does_not_follow_a_linked_folder(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeFile, match="r1 is a link or not a folder"):
        open_dir(tmp_path, "runs", "r1")
    with pytest.raises(FileNotFoundError):
        open_dir(tmp_path, "runs", "r2")
    os.close(open_dir(tmp_path, "runs"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
