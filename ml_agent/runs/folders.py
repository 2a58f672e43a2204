"""A run's folder on its data volume, read without trusting what the agent put there.

Two implementations of one small interface: `LocalFolder` (the host folder of a local
volume, walked through directory descriptors that never follow a link) and `ModalFolder`
(the Modal volume's file API, which reports links as links and serves only their entry).
`results` reads `eval/*.json` and `result.json` through it, `pull` copies from it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ml_agent.errors import UnsafeFile, VolumeGone
from ml_agent.fileio import open_dir, read_untrusted

if TYPE_CHECKING:
    import modal

FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One name in a run folder: `path` is relative to the run folder, '/'-separated."""

    path: str
    kind: str  # FILE, DIR, LINK or OTHER (a FIFO, socket or device)
    size: int = 0
    mtime: float = 0.0


class RunFolder(Protocol):
    """Read access to one run folder (paths relative to it, '/'-separated)."""

    where: str  # for messages: the host folder, or `modal volume NAME:/runs/ID`

    def check(self) -> None:
        """VolumeGone when the volume or the run folder no longer exists."""
        ...

    def read(self, path: str, cap: int) -> bytes:
        """A regular file's bytes, at most `cap` (FileNotFoundError, UnsafeFile)."""
        ...

    def listdir(self, path: str) -> list[Entry]:
        """The entries of one folder, links reported as links (FileNotFoundError)."""
        ...

    def walk(self) -> Iterator[Entry]:
        """Every entry under the run folder; folders before their contents."""
        ...

    def open_chunks(self, path: str) -> Iterator[bytes]:
        """A regular file's bytes in chunks (UnsafeFile for anything else)."""
        ...


def _parts(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"not a plain relative path: {path!r}")
    return parts


class LocalFolder:
    """A run folder on a local volume: `<volume folder>/runs/<run id>`."""

    def __init__(self, volume: Path, run_id: str) -> None:
        self.volume = volume
        self.run_id = run_id
        self.where = str(volume / "runs" / run_id)

    def check(self) -> None:
        """VolumeGone when the volume or the run folder is missing."""
        if not self.volume.is_dir():
            raise VolumeGone(f"the data volume of run {self.run_id} is gone ({self.volume})")
        try:
            os.close(open_dir(self.volume, "runs", self.run_id))
        except FileNotFoundError:
            raise VolumeGone(
                f"run {self.run_id} has no folder on its data volume ({self.where})"
            ) from None

    @contextlib.contextmanager
    def _dir(self, parts: list[str]) -> Iterator[int]:
        fd = open_dir(self.volume, "runs", self.run_id, *parts)
        try:
            yield fd
        finally:
            os.close(fd)

    def read(self, path: str, cap: int) -> bytes:
        *folder, name = _parts(path)
        with self._dir(folder) as fd:
            return read_untrusted(name, cap=cap, dir_fd=fd)

    def listdir(self, path: str) -> list[Entry]:
        parts = _parts(path)
        prefix = "/".join(parts) + "/" if parts else ""
        entries = []
        with self._dir(parts) as fd, os.scandir(fd) as it:
            for item in it:
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append(Entry(prefix + item.name, _kind(st.st_mode), st.st_size,
                                     st.st_mtime))
        return sorted(entries, key=lambda e: e.path)

    def walk(self) -> Iterator[Entry]:
        stack = [""]
        while stack:
            for entry in self.listdir(stack.pop()):
                yield entry
                if entry.kind == DIR:
                    stack.append(entry.path)

    def open_chunks(self, path: str) -> Iterator[bytes]:
        *folder, name = _parts(path)
        with self._dir(folder) as dir_fd:
            try:
                fd = os.open(name, _READ, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafeFile(f"{path} is a symbolic link; not followed") from None
                if exc.errno in (errno.ENXIO, errno.EISDIR):
                    raise UnsafeFile(f"{path} is not a regular file") from None
                raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeFile(f"{path} is not a regular file")
            while chunk := os.read(fd, _CHUNK):
                yield chunk
        finally:
            os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return LINK
    return OTHER


class ModalFolder:
    """A run folder on a Modal volume, through the SDK's volume file API (no container)."""

    def __init__(self, volume: modal.Volume, volume_name: str, run_id: str) -> None:
        self.volume = volume
        self.run_id = run_id
        self.root = f"/runs/{run_id}"
        self.where = f"modal volume {volume_name}:{self.root}"
        # Each listing is a round trip; one command reads a folder's listing several times
        # (check, then the kind and size of each file it reads), so it is kept.
        self._listings: dict[str, list[Entry]] = {}

    @classmethod
    def open(cls, volume_name: str, run_id: str) -> ModalFolder:
        import modal
        from modal.exception import NotFoundError

        volume = modal.Volume.from_name(volume_name)
        try:
            volume.hydrate()
        except NotFoundError:
            raise VolumeGone(
                f"the data volume of run {run_id} is gone (Modal volume {volume_name!r})"
            ) from None
        return cls(volume, volume_name, run_id)

    def check(self) -> None:
        self.listdir("")

    def _entries(self, path: str, *, recursive: bool) -> list[Entry]:
        from modal.exception import NotFoundError
        from modal.types import FileEntryType

        parts = _parts(path)
        full = "/".join([self.root, *parts])
        try:
            raw = self.volume.listdir(full, recursive=recursive)
        except NotFoundError:
            if not parts:
                raise VolumeGone(
                    f"run {self.run_id} has no folder on its data volume ({self.where})"
                ) from None
            raise FileNotFoundError(path) from None
        kinds = {FileEntryType.FILE: FILE, FileEntryType.DIRECTORY: DIR,
                 FileEntryType.SYMLINK: LINK}
        base = self.root.strip("/") + "/"
        entries = []
        for item in raw:
            rel = item.path.lstrip("/")
            rel = rel[len(base):] if rel.startswith(base) else rel
            if not rel or any(p in (".", "..") for p in rel.split("/")):
                continue
            entries.append(Entry(rel, kinds.get(item.type, OTHER), item.size, float(item.mtime)))
        return sorted(entries, key=lambda e: e.path)

    def listdir(self, path: str) -> list[Entry]:
        key = "/".join(_parts(path))
        if key not in self._listings:
            self._listings[key] = self._entries(path, recursive=False)
        return self._listings[key]

    def walk(self) -> Iterator[Entry]:
        yield from self._entries("", recursive=True)

    def _kind_of(self, path: str) -> Entry | None:
        parent = "/".join(_parts(path)[:-1])
        return next((e for e in self.listdir(parent) if e.path == path.strip("/")), None)

    def read(self, path: str, cap: int) -> bytes:
        entry = self._kind_of(path)
        if entry is None:
            raise FileNotFoundError(path)
        if entry.kind != FILE:
            raise UnsafeFile(f"{path} is not a regular file")
        if entry.size > cap:
            raise UnsafeFile(f"{path} is {entry.size} bytes, over the {cap} byte limit")
        data = b""
        for chunk in self.open_chunks(path):
            data += chunk
            if len(data) > cap:
                raise UnsafeFile(f"{path} grew past the {cap} byte limit while being read")
        return data

    def open_chunks(self, path: str) -> Iterator[bytes]:
        yield from self.volume.read_file(f"{self.root}/{'/'.join(_parts(path))}")
