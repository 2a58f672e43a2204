"""Where a run's files are: its run folder and its trackio folder, on either backend."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ml_agent.contracts import RunRecord, ml_agent_home
from ml_agent.errors import VolumeGone
from ml_agent.runs.folders import LocalFolder, ModalFolder, RunFolder


def _launch(record: RunRecord, home: Path) -> dict:
    """The run's launch.json (ours, in the registry): for records older than `data_volume`."""
    from ml_agent.backends.local.registry import RunPaths

    try:
        return json.loads(RunPaths.of(record.run_id, home).launch.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def local_volume(record: RunRecord, name: str | None, key: str, home: Path) -> Path | None:
    """The host folder of one of a local run's volumes (by name, else by its launch file)."""
    from ml_agent.backends.local.volumes import volume_path

    if name:
        return volume_path(home, name)
    path = _launch(record, home).get("host", {}).get("volumes", {}).get(key)
    return Path(path) if path else None


class Locator:
    """Opens run folders, caching Modal volume handles (one lookup per volume, not per run)."""

    def __init__(self, home: Path | None = None,
                 data_volume_of: Callable[[RunRecord], str | None] | None = None) -> None:
        """`data_volume_of`: a Modal run's data volume name when its record has none (runs
        recorded before `RunRecord.data_volume`; the CLI reads it from the run's config)."""
        self.home = home or ml_agent_home()
        self.data_volume_of = data_volume_of or (lambda record: record.data_volume)
        self._modal: dict[str, ModalFolder | VolumeGone] = {}
        self._trackio: dict[str, Path | None] = {}
        self._tmp: Path | None = None
        self.notes: list[str] = []

    def close(self) -> None:
        """Remove the local copies of Modal trackio databases."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def folder(self, record: RunRecord) -> RunFolder:
        """The run folder (VolumeGone when its volume is unknown or gone)."""
        if record.backend == "local":
            volume = local_volume(record, record.data_volume, "data", self.home)
            if volume is None:
                raise VolumeGone(f"run {record.run_id}: its data volume is unknown")
            return LocalFolder(volume, record.run_id)
        name = self.data_volume_of(record)
        if not name:
            raise VolumeGone(
                f"run {record.run_id}: its data volume is unknown (recorded by an older "
                f"ml-agent, and its config {record.config} is gone or no longer valid)"
            )
        cached = self._modal.get(name)
        if cached is None:
            try:
                cached = ModalFolder.open(name, record.run_id)
            except VolumeGone as exc:
                cached = exc
            self._modal[name] = cached
        if isinstance(cached, VolumeGone):
            raise VolumeGone(
                f"the data volume of run {record.run_id} is gone (Modal volume {name!r})"
            )
        return ModalFolder(cached.volume, name, record.run_id)

    def trackio_dir(self, record: RunRecord) -> Path | None:
        """A folder on this machine holding the run's trackio databases: a local run's
        trackio volume, or a private copy of a Modal run's (None: none known)."""
        if record.backend == "modal":
            name = record.trackio_volume
            if not name:
                return None
            if name not in self._trackio:
                self._trackio[name] = self._copy_modal_trackio(name)
            return self._trackio[name]
        name = record.trackio_volume
        if name is None:
            plan = _launch(record, self.home).get("plan", {})
            key = (plan.get("syncer") or {}).get("volume")
            return local_volume(record, None, key, self.home) if key else None
        return local_volume(record, name, "", self.home)

    def _copy_modal_trackio(self, name: str) -> Path | None:
        """Copy the databases (`<project>.db` and its `-wal`) at the root of a Modal trackio
        volume into a private folder; the snapshot that reads them trusts them no more than
        the volume (links and oversized files are not copied)."""
        import modal
        from modal.exception import NotFoundError
        from modal.types import FileEntryType

        from ml_agent.syncer.snapshot import MAX_DB_BYTES

        volume = modal.Volume.from_name(name)
        try:
            entries = volume.listdir("/")
        except NotFoundError:
            self.notes.append(f"trackio volume {name!r} is gone; its curves are not plotted")
            return None
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ml-agent-trackio-"))
        folder = self._tmp / name
        folder.mkdir(mode=0o700)
        for entry in entries:
            base = entry.path.strip("/")
            if "/" in base or not base.endswith((".db", ".db-wal")):
                continue
            if entry.type != FileEntryType.FILE or entry.size > MAX_DB_BYTES:
                self.notes.append(f"{name}:{base} skipped (not a regular file, or over "
                                  f"{MAX_DB_BYTES} bytes)")
                continue
            total = 0
            with open(folder / base, "wb") as out:
                for chunk in volume.read_file(base):
                    total += len(chunk)
                    if total > MAX_DB_BYTES:
                        break
                    out.write(chunk)
        return folder
