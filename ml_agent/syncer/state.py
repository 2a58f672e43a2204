"""What the syncer has uploaded, per project: the signature and Space of the last success."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ml_agent.fileio import atomic_write_json
from ml_agent.syncer.scan import Signature


@dataclass(frozen=True)
class Uploaded:
    """The last successful upload of a project: its files' signature and its Space."""

    signature: Signature
    space_id: str
    digest: str = ""  # Snapshot.digest() of what was uploaded


class SyncState(Protocol):
    """Where the syncer remembers uploads (in memory, a JSON file, a modal.Dict...)."""

    def get(self, project: str) -> Uploaded | None: ...
    def put(self, project: str, record: Uploaded) -> None: ...


class MemoryState:
    """In-process state: a restarted syncer uploads every project once more."""

    def __init__(self) -> None:
        self._records: dict[str, Uploaded] = {}

    def get(self, project: str) -> Uploaded | None:
        return self._records.get(project)

    def put(self, project: str, record: Uploaded) -> None:
        self._records[project] = record


class JsonFileState(MemoryState):
    """State kept in a private JSON file (never on the volume), rewritten atomically."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        for project, rec in data.items():
            try:
                sig = Signature.from_json(rec["signature"])
                self._records[project] = Uploaded(
                    sig, str(rec["space_id"]), str(rec.get("digest", ""))
                )
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry only costs one more upload

    def put(self, project: str, record: Uploaded) -> None:
        super().put(project, record)
        data = {
            name: {
                "signature": rec.signature.to_json(),
                "space_id": rec.space_id,
                "digest": rec.digest,
            }
            for name, rec in self._records.items()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, data, mode=0o600, indent=None)
