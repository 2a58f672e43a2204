"""Consistent private copies of trackio projects, taken without writing the source folder.

The source is untrusted (the sandbox writes it): every file is opened relative to a
directory descriptor with O_NOFOLLOW and kept only when fstat says it is a regular file,
so a symlink or FIFO planted by the agent is skipped, never followed.

The database is copied with SQLite's backup API, which reads one consistent transaction:
- WAL database with its `-wal` and `-shm` present (a writer may be live): opened in place
  with `mode=ro&readonly_shm=1`, which never writes the volume (not even the -shm index)
  and holds a shared read lock that keeps a live writer from checkpointing under us;
- WAL database without `-shm` (no live writer can exist; SQLite would *create* the index
  in place, which we refuse to do), or whose index SQLite cannot use read-only: `.db` and
  `-wal` are copied byte for byte through their descriptors, accepted only if no file
  changed meanwhile, and recovered privately;
- rollback-journal database: opened in place with `mode=ro` (a shared lock, no files).
Each snapshot is a single self-contained file (journal_mode=DELETE) that passes
`PRAGMA integrity_check`, beside a mirror of the project's media (regular files only).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ml_agent.syncer.scan import DB_EXT

SQLITE_MAGIC = b"SQLite format 3\x00"
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
#: Media mirrored per project at most (bytes), and entries visited at most.
MAX_MEDIA_BYTES = 2 << 30
MAX_MEDIA_ENTRIES = 100_000
MAX_MEDIA_DEPTH = 16
#: A project's database (.db plus -wal, apparent sizes) copied at most per snapshot. A sparse
#: -wal of 12 KB on disk made every snapshot write its 6 GiB apparent size to the host.
MAX_DB_BYTES = 1 << 30
_CHUNK = 1 << 20


class SnapshotError(Exception):
    """The project cannot be copied as it is (not a database, a planted link...)."""


class SnapshotBusy(SnapshotError):
    """A writer got in the way of a consistent copy: try again next cycle, no backoff."""


class SnapshotTooBig(SnapshotError):
    """The database is over MAX_DB_BYTES: not copied (the syncer backs off and says so)."""


@dataclass
class Snapshot:
    """A private, TRACKIO_DIR-shaped folder holding one project: `<project>.db`, `media/`."""

    project: str
    root: Path  # use as TRACKIO_DIR
    warnings: list[str] = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.root / (self.project + DB_EXT)

    def digest(self) -> str:
        """sha256 of the database bytes and the media listing: equal digests, same upload.

        A backup of unchanged pages is byte-identical, so a project whose files were only
        touched (or whose inodes a network filesystem renumbered) is not uploaded again.
        """
        h = hashlib.sha256()
        with open(self.db_path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        media = self.root / "media" / self.project
        for dirpath, dirnames, filenames in os.walk(media):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.lstat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), media)
                h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        return h.hexdigest()


@contextlib.contextmanager
def _fd(path: str, flags: int, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_regular(name: str, dir_fd: int) -> int:
    """An fd on `name` in `dir_fd`, which must be a regular file (a symlink fails: ELOOP)."""
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as exc:
        raise SnapshotError(f"cannot open {name} without following links: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SnapshotError(f"{name} is not a regular file")
    return fd


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _copy_fd(src_fd: int, dest: Path, limit: int | None = None) -> int:
    """Copy an open file to `dest` (created 0600, never through a link); returns bytes."""
    os.lseek(src_fd, 0, os.SEEK_SET)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    total = 0
    with _fd(str(dest), flags) as out:
        while chunk := os.read(src_fd, _CHUNK):
            total += len(chunk)
            if limit is not None and total > limit:
                raise SnapshotError(f"{dest.name} grew past {limit} bytes while copying")
            os.write(out, chunk)
    return total


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _connect_ro(path: str, readonly_shm: bool) -> sqlite3.Connection:
    uri = f"file:{quote(path)}?mode=ro" + ("&readonly_shm=1" if readonly_shm else "")
    conn = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
    conn.execute("PRAGMA trusted_schema = OFF")  # the schema comes from the sandbox
    return conn


def _backup(src: sqlite3.Connection, dest: Path, name: str) -> None:
    """Back `src` up into a fresh single-file database at `dest`, integrity-checked, never
    past MAX_DB_BYTES (SnapshotTooBig: the size is checked before a page is written)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(dest) + suffix)
    out = sqlite3.connect(str(dest))
    try:
        # A snapshot is disposable (a crash means a new one next cycle, and the upload reads
        # it from the page cache): no fsync, not even through fileio's atomic write.
        out.execute("PRAGMA synchronous = OFF")
        # The pages the source claims (its header, its WAL) bound what the backup writes.
        page = int(src.execute("PRAGMA page_size").fetchone()[0])
        out.execute(f"PRAGMA page_size = {page}")
        out.execute(f"PRAGMA max_page_count = {max(1, MAX_DB_BYTES // page)}")
        try:
            src.backup(out)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise SnapshotTooBig(_too_big(name, "its pages add up to")) from None
            raise
        out.execute("PRAGMA synchronous = OFF")
        out.execute("PRAGMA journal_mode = DELETE")
        result = out.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            raise SnapshotError(f"snapshot failed integrity_check: {result[:3]}")
        if not out.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'metrics'"
        ).fetchone():
            raise SnapshotBusy("no metrics table yet (trackio is creating it); next cycle")
    finally:
        out.close()


def _snapshot_in_place(source: str, db_fd: int, dir_fd: int, name: str, dest: Path,
                       readonly_shm: bool) -> None:
    src = _connect_ro(source, readonly_shm)
    try:
        # SQLite resolves links in the name it opens: a name swapped for a link shows here.
        opened = src.execute("PRAGMA database_list").fetchone()[2]
        if os.path.realpath(opened) != os.path.realpath(source):
            raise SnapshotError(f"{name} changed into a link while opening; skipped")
        _backup(src, dest, name)
    except sqlite3.Error as exc:
        raise SnapshotBusy(f"cannot read {name} in place: {exc}") from exc
    finally:
        src.close()
    now = _lstat_at(name, dir_fd)
    if now is None or not stat.S_ISREG(now.st_mode) or now.st_ino != os.fstat(db_fd).st_ino:
        raise SnapshotBusy(f"{name} was replaced while copying; next cycle")


def _snapshot_by_copy(db_fd: int, dir_fd: int, name: str, dest: Path, work: Path) -> None:
    """Copy `.db` and `-wal` byte for byte; keep the pair only if no file (the -shm
    included) changed meanwhile, then let SQLite recover it privately."""
    work.mkdir(mode=0o700, exist_ok=True)

    def stamps() -> list[tuple[int, int, int] | None]:
        found = [_lstat_at(name + s, dir_fd) for s in ("-wal", "-shm")]
        return [_stamp(os.fstat(db_fd))] + [_stamp(st) if st else None for st in found]

    try:
        before = stamps()
        copied = _copy_fd(db_fd, work / name, limit=MAX_DB_BYTES)
        if before[1] is not None:
            wal_fd = _open_regular(name + "-wal", dir_fd)
            try:
                _copy_fd(wal_fd, work / (name + "-wal"), limit=MAX_DB_BYTES - copied)
            finally:
                os.close(wal_fd)
        if stamps() != before:
            raise SnapshotBusy(f"{name} changed while copying; next cycle")
        src = sqlite3.connect(str(work / name))
        try:
            src.execute("PRAGMA trusted_schema = OFF")
            _backup(src, dest, name)
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot read {name}: {exc}") from exc
        finally:
            src.close()
    finally:
        for leftover in os.listdir(work):
            os.unlink(work / leftover)


def snapshot_database(trackio_dir: Path, project: str, dest: Path, scratch: Path) -> None:
    """Write a consistent copy of `<trackio_dir>/<project>.db` to `dest` (`scratch`: a
    private folder for intermediate copies).

    Raises SnapshotBusy when a writer got in the way (try again next cycle) and
    SnapshotError when the project cannot be copied as it is.
    """
    name = project + DB_EXT
    with _fd(str(trackio_dir), _OPEN_DIR) as dir_fd:
        db_fd = _open_regular(name, dir_fd)
        try:
            header = os.pread(db_fd, 100, 0)
            if len(header) == 0:
                raise SnapshotBusy(f"{name} is empty (being created); next cycle")
            if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
                raise SnapshotError(f"{name} is not an SQLite database")
            present = []
            sizes = [os.fstat(db_fd)]
            for suffix in ("-wal", "-shm"):
                st = _lstat_at(name + suffix, dir_fd)
                if st is not None and not stat.S_ISREG(st.st_mode):
                    raise SnapshotError(f"{name}{suffix} is not a regular file; skipped")
                present.append(st is not None)
                if st is not None and suffix == "-wal":
                    sizes.append(st)
            _check_size(name, sizes)
            source = os.path.join(os.path.realpath(trackio_dir), name)
            if header[18] != 2:  # rollback journal: a shared lock, no side files
                _snapshot_in_place(source, db_fd, dir_fd, name, dest, readonly_shm=False)
            elif all(present):
                try:
                    _snapshot_in_place(source, db_fd, dir_fd, name, dest, readonly_shm=True)
                except SnapshotBusy:
                    # An index SQLite cannot use read-only (being created by a writer, or
                    # stale on a read-only mount): the files themselves may still be quiet.
                    _snapshot_by_copy(db_fd, dir_fd, name, dest, scratch)
            else:
                _snapshot_by_copy(db_fd, dir_fd, name, dest, scratch)
        finally:
            os.close(db_fd)


def _check_size(name: str, sizes: list[os.stat_result]) -> None:
    """Refuse, before copying a byte, a database whose apparent size (what a copy writes)
    is over MAX_DB_BYTES, however little it holds on disk (a sparse file)."""
    apparent = sum(st.st_size for st in sizes)
    if apparent > MAX_DB_BYTES:
        on_disk = sum(st.st_blocks * 512 for st in sizes)
        sparse = f", {on_disk} on disk: sparse" if on_disk < apparent // 2 else ""
        raise SnapshotTooBig(_too_big(name, f"it and its -wal are {apparent} bytes{sparse},"))


def _too_big(name: str, what: str) -> str:
    return (f"{name} not copied: {what} over the snapshot limit of {MAX_DB_BYTES} bytes "
            f"({MAX_DB_BYTES >> 20} MiB); skipped")


def mirror_media(src_dir_fd: int, dest: Path, warnings: list[str], budget: list[int],
                 rel: str = "") -> set[str]:
    """Mirror regular files under `src_dir_fd` into `dest` (unchanged ones kept); returns the
    relative paths seen. Links, FIFOs, devices are skipped with a warning."""
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    seen: set[str] = set()
    with os.scandir(src_dir_fd) as entries:
        for entry in entries:
            budget[1] -= 1
            if budget[1] < 0:
                warnings.append(f"media: more than {MAX_MEDIA_ENTRIES} entries; rest skipped")
                break
            path = f"{rel}{entry.name}"
            if entry.is_symlink():
                warnings.append(f"media/{path} is a symbolic link; not followed")
            elif entry.is_dir(follow_symlinks=False):
                if path.count("/") >= MAX_MEDIA_DEPTH:
                    warnings.append(f"media/{path}: nested deeper than {MAX_MEDIA_DEPTH}; skipped")
                    continue
                try:
                    sub = os.open(entry.name, _OPEN_DIR, dir_fd=src_dir_fd)
                except OSError:
                    warnings.append(f"media/{path} could not be opened as a folder; skipped")
                    continue
                try:
                    seen.add(path + "/")
                    seen |= mirror_media(sub, dest / entry.name, warnings, budget, path + "/")
                finally:
                    os.close(sub)
            elif entry.is_file(follow_symlinks=False):
                _mirror_file(src_dir_fd, entry.name, dest / entry.name, path, warnings, budget)
                seen.add(path)
            else:
                warnings.append(f"media/{path} is not a regular file; skipped")
    return seen


def _mirror_file(dir_fd: int, name: str, out: Path, path: str, warnings: list[str],
                 budget: list[int]) -> None:
    try:
        fd = _open_regular(name, dir_fd)
    except SnapshotError as exc:
        warnings.append(f"media/{path}: {exc}")
        return
    try:
        st = os.fstat(fd)
        if st.st_size > budget[0]:
            warnings.append(f"media/{path}: over the {MAX_MEDIA_BYTES} byte media budget")
            return
        budget[0] -= st.st_size
        with contextlib.suppress(FileNotFoundError):
            mine = os.lstat(out)
            if (mine.st_size, mine.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                return  # unchanged since the last snapshot
        _copy_fd(fd, out, limit=st.st_size)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)


def _prune(dest: Path, seen: set[str], rel: str = "") -> None:
    """Delete what the source no longer has (our own tree: no links in it)."""
    for entry in os.scandir(dest):
        path = f"{rel}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            if path + "/" in seen:
                _prune(Path(entry.path), seen, path + "/")
            else:
                shutil.rmtree(entry.path)
        elif path not in seen:
            os.unlink(entry.path)


def snapshot_project(trackio_dir: Path, project: str, root: Path) -> Snapshot:
    """Refresh `root` (private, reused across cycles) into a snapshot of `project`.

    Raises SnapshotError when the database cannot be copied safely this cycle.
    """
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    snap = Snapshot(project=project, root=root)
    scratch = root.parent / f".scratch-{project}"
    scratch.mkdir(mode=0o700, exist_ok=True)
    tmp = scratch / f"{project}{DB_EXT}"
    snapshot_database(trackio_dir, project, tmp, scratch / "copy")
    # Not fileio's atomic write: a disposable copy (rebuilt from the volume next cycle, read
    # back from the page cache by the upload), so the fsyncs would buy nothing.
    os.replace(tmp, snap.db_path)
    media_dest = root / "media" / project
    try:
        with _fd(str(trackio_dir), _OPEN_DIR) as dir_fd, \
                _fd("media", _OPEN_DIR, dir_fd) as media_fd, \
                _fd(project, _OPEN_DIR, media_fd) as project_fd:
            seen = mirror_media(project_fd, media_dest, snap.warnings,
                                [MAX_MEDIA_BYTES, MAX_MEDIA_ENTRIES])
    except FileNotFoundError:
        seen = set()
    except OSError as exc:  # ELOOP / ENOTDIR: media/ or media/<project> is a link or a file
        snap.warnings.append(f"media/{project} is not a plain folder ({exc.strerror}); skipped")
        seen = set()
    if media_dest.exists():
        _prune(media_dest, seen)
    return snap
