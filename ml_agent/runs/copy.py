"""Copy a run folder to this machine (`ml-agent pull`): only what changed, links never.

The source is agent-written: a symbolic link is skipped and reported (never followed, not
recreated), a FIFO, socket or device is refused, names cannot climb out of the destination
(`..` is refused by the folder's reader), and the destination's own folders are opened
without following links, so nothing planted on either side makes a write land elsewhere.
A file is unchanged when its size and modification time (whole seconds: Modal keeps no
more) match the copy's; copies get the source's time so a second pull skips them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ml_agent.errors import MlAgentError, UnsafeFile
from ml_agent.runs.folders import DIR, FILE, LINK, Entry, RunFolder

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class CopyPlan:
    copy: list[Entry] = field(default_factory=list)
    unchanged: list[Entry] = field(default_factory=list)
    folders: list[Entry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.copy)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    """The path, or one of its folders, matches a glob (`*` also crosses '/')."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, pat) for p in prefixes for pat in patterns)


def selected(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if exclude and _matches(path, exclude):
        return False
    return not include or _matches(path, include)


def plan_copy(folder: RunFolder, dest: Path, include: Sequence[str] = (),
              exclude: Sequence[str] = ()) -> CopyPlan:
    """What a pull of `folder` into `dest` copies, keeps and skips (reads only)."""
    plan = CopyPlan()
    for entry in folder.walk():
        if exclude and _matches(entry.path, exclude):
            continue
        if entry.kind == DIR:
            if selected(entry.path, include, exclude):
                plan.folders.append(entry)
            continue
        if not selected(entry.path, include, exclude):
            continue
        if entry.kind == LINK:
            plan.skipped.append((entry.path, "a symbolic link in the run folder; not followed"))
        elif entry.kind != FILE:
            plan.skipped.append((entry.path, "not a regular file (a FIFO, socket or device)"))
        elif _same(dest / entry.path, entry):
            plan.unchanged.append(entry)
        else:
            plan.copy.append(entry)
    return plan


def _same(path: Path, entry: Entry) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return (os.path.isfile(path) and not path.is_symlink() and st.st_size == entry.size
            and int(st.st_mtime) == int(entry.mtime))


def check_space(plan: CopyPlan, dest: Path) -> None:
    """Refuse a pull that cannot fit (a sparse 1 TB file in the run folder, say)."""
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if plan.bytes > free:
        raise MlAgentError(
            f"the files to pull take {plan.bytes / 1e9:.1f} GB but {probe} has "
            f"{free / 1e9:.1f} GB free; narrow the pull with --include/--exclude"
        )


@contextlib.contextmanager
def _dest_dir(root: Path, parts: Sequence[str]) -> Iterator[int]:
    """A descriptor on `root/parts...`, creating folders, following no link below `root`."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, _DIR & ~os.O_NOFOLLOW)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFile(f"{part} in {root} is a link or a file; not followed") \
                        from None
                raise
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def copy_file(folder: RunFolder, entry: Entry, dest: Path,
              on_bytes: Callable[[int], None] = lambda _: None) -> None:
    """Copy one regular file into `dest` (same relative path), atomically, with its mtime."""
    *parts, name = entry.path.split("/")
    with _dest_dir(dest, parts) as dir_fd:
        tmp = f".{name}.{secrets.token_hex(4)}.part"
        fd = os.open(tmp, _NEW, 0o644, dir_fd=dir_fd)
        try:
            with open(fd, "wb", closefd=True) as out:
                for chunk in folder.open_chunks(entry.path):
                    out.write(chunk)
                    on_bytes(len(chunk))
            os.utime(tmp, (entry.mtime, entry.mtime), dir_fd=dir_fd, follow_symlinks=False)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


def make_folders(plan: CopyPlan, dest: Path) -> None:
    for entry in plan.folders:
        with _dest_dir(dest, entry.path.split("/")):
            pass
