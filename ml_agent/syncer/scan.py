"""Find trackio projects in a folder and fingerprint them cheaply (lstat only, no opens).

trackio 0.43 keeps one SQLite database per project, `<TRACKIO_DIR>/<project>.db`, named by
`trackio.utils.canonical_project_name` (letters, digits, `-`, `_`), writes it in WAL mode
(fresh rows live in `<project>.db-wal`, readers coordinate through `<project>.db-shm`), and
keeps logged media under `<TRACKIO_DIR>/media/<project>/`. `registry-*.db` are trackio's
model registries, not projects.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

DB_EXT = ".db"
#: The files whose change means new rows: the database and its WAL and shared-memory index.
SUFFIXES = ("", "-wal", "-shm")
#: trackio's canonical project names (utils.canonical_project_name).
PROJECT_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
REGISTRY_PREFIX = "registry-"

#: One file's part of a signature: (size, mtime_ns, inode), or None when absent.
FileSig = tuple[int, int, int] | None


@dataclass(frozen=True)
class Signature:
    """What a project's files looked like: equal signatures mean nothing to upload."""

    db: FileSig
    wal: FileSig
    shm: FileSig

    @property
    def parts(self) -> tuple[FileSig, FileSig, FileSig]:
        return (self.db, self.wal, self.shm)

    def to_json(self) -> list[list[int] | None]:
        return [list(p) if p is not None else None for p in self.parts]

    @classmethod
    def from_json(cls, data: list[list[int] | None]) -> Signature:
        db, wal, shm = (tuple(p) if p is not None else None for p in data)
        return cls(db, wal, shm)  # type: ignore[arg-type]


class NotRegular(Exception):
    """A project file is a symlink, folder, FIFO...: the project is skipped, never followed."""


def _file_sig(path: str) -> FileSig:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(f"{path} is not a regular file (symlinks are never followed)")
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def signature(trackio_dir: Path, project: str) -> Signature:
    """The project's signature now; raises NotRegular for a planted symlink or the like."""
    base = os.path.join(trackio_dir, project + DB_EXT)
    return Signature(*(_file_sig(base + suffix) for suffix in SUFFIXES))


def find_projects(trackio_dir: Path) -> list[str]:
    """Project names with a `<name>.db` entry in `trackio_dir`, sorted; [] if it is missing.

    Only names are listed here (one directory read); whether each entry is a regular file
    is checked by `signature`, so a symlinked database is reported, not silently dropped.
    """
    try:
        names = os.listdir(trackio_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    projects = []
    for name in names:
        if not name.endswith(DB_EXT):
            continue
        stem = name[: -len(DB_EXT)]
        if PROJECT_RE.match(stem) and not stem.startswith(REGISTRY_PREFIX):
            projects.append(stem)
    return sorted(projects)
