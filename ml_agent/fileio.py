"""Atomic writes, and careful reads of files the sandbox could have written or planted."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ml_agent.errors import UnsafeFile

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, dir_fd: int | None = None
) -> None:
    """Replace `path` with `data`: a reader sees the old file or the new one, never half.

    The bytes go to a temp file with a unique name in the same folder (created with `mode`,
    minus the umask; never through a link), are fsynced, renamed over `path`, and the folder
    is fsynced so the rename survives a crash. With `dir_fd`, `path` is a plain name in that
    folder (for folders opened without following links: see `open_dir`).
    """
    if dir_fd is None:
        path = Path(path)
        with _closing(os.open(path.parent, _DIR & ~os.O_NOFOLLOW)) as folder:
            _write_in(folder, path.name, data, mode)
        return
    name = os.fspath(path)
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"with dir_fd, path must be a plain name (got {name!r})")
    _write_in(dir_fd, name, data, mode)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, mode: int = 0o600, dir_fd: int | None = None,
    indent: int | None = 2, default: Callable[[Any], Any] | None = None,
) -> None:
    """`atomic_write_bytes` of `obj` as JSON (UTF-8, a final newline)."""
    text = json.dumps(obj, indent=indent, default=default) + "\n"
    atomic_write_bytes(path, text.encode(), mode=mode, dir_fd=dir_fd)


def _write_in(folder: int, name: str, data: bytes, mode: int) -> None:
    for _ in range(8):
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode, dir_fd=folder)
            break
        except FileExistsError:  # 48 random bits taken (or planted): draw again
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temp name", name)
    try:
        with open(fd, "wb", closefd=True) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise
    os.fsync(folder)


def open_dir(root: str | os.PathLike[str], *parts: str) -> int:
    """A descriptor on `root/parts...`, each part opened without following a link (`root`
    itself is trusted). Close it yourself. Raises FileNotFoundError when a part is missing,
    UnsafeFile when one is a link or not a folder."""
    fd = os.open(root, _DIR & ~os.O_NOFOLLOW)
    for part in parts:
        if not part or "/" in part or part in (".", ".."):
            os.close(fd)
            raise ValueError(f"not a plain name: {part!r}")
        try:
            nxt = os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeFile(f"{part} is a link or not a folder; not followed") from None
            raise
        finally:
            os.close(fd)
        fd = nxt
    return fd


def read_untrusted(path: str | os.PathLike[str], *, cap: int, dir_fd: int | None = None) -> bytes:
    """The bytes of a file the sandbox could have written, read without trusting it.

    Opened without following a link in its last component and without blocking (a FIFO
    would wait for a writer forever), kept only if fstat says it is a regular file, and
    refused past `cap` bytes both by its size and by what is actually read (a sparse or
    growing file cannot make this read more than `cap + 1` bytes). Earlier components of
    `path` are followed: walk untrusted folders with `open_dir` and pass `dir_fd`.

    Raises FileNotFoundError when there is no file, UnsafeFile for a link, a FIFO, a
    device, a folder or a file over `cap`.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{name} is a symbolic link; not followed") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a socket; a folder
            raise UnsafeFile(f"{name} is not a regular file") from None
        raise
    with _closing(fd):
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{name} is not a regular file")
        if st.st_size > cap:
            raise UnsafeFile(f"{name} is {st.st_size} bytes, over the {cap} byte limit")
        chunks: list[bytes] = []
        total = 0
        while total <= cap:
            chunk = os.read(fd, min(_CHUNK, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise UnsafeFile(f"{name} grew past the {cap} byte limit while being read")
        return b"".join(chunks)


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)
