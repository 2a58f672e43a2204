"""The sync loop shared by both backends: scan, snapshot what changed, upload, remember.

One `cycle()`: resolve the target Space; list the projects; fingerprint each (lstat of
the `.db`, `-wal`, `-shm`: an idle cycle opens no project file); for each project whose
fingerprint or Space differs from its last successful upload, take a private snapshot and
hand it to the uploader, unless the snapshot's digest equals the last upload's (files
touched, or renumbered by a network filesystem, with the same content). A failed project
is retried with exponential backoff and jitter while the others go on; its last good
upload stays recorded, so the next success catches up on everything. The volume is only
ever read.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ml_agent.syncer.scan import NotRegular, Signature, find_projects, signature
from ml_agent.syncer.snapshot import SnapshotBusy, SnapshotError, snapshot_project
from ml_agent.syncer.state import MemoryState, SyncState, Uploaded
from ml_agent.syncer.upload import Uploader

#: Consecutive cycles a project may be busy (a writer in the way) before a warning.
BUSY_WARN_AFTER = 20


@dataclass
class CycleReport:
    """What one cycle did (benchmarks and tests read it; the loop logs the notable parts)."""

    space_id: str | None = None
    projects: int = 0
    changed: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # failed earlier, backing off
    busy: list[str] = field(default_factory=list)  # a writer was in the way: next cycle
    same: list[str] = field(default_factory=list)  # files touched, content as uploaded


@dataclass
class _Retry:
    failures: int = 0
    next_try: float = 0.0


class Syncer:
    """Publishes the trackio projects under `trackio_dir` to the Space `resolve_space` names.

    Collaborators are passed in: `uploader` (what publishes a snapshot), `resolve_space`
    (called each cycle; None = nowhere to publish yet), `state` (what was uploaded),
    `clock`/`sleep` (monotonic seconds), `rng` (jitter), `log` (one line per call).
    """

    def __init__(
        self,
        trackio_dir: Path,
        uploader: Uploader,
        *,
        resolve_space: Callable[[], str | None],
        private: bool = True,
        state: SyncState | None = None,
        work_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        log: Callable[[str], None] = print,
        backoff_base_s: float = 5.0,
        backoff_max_s: float = 300.0,
    ) -> None:
        self.trackio_dir = Path(trackio_dir)
        self.uploader = uploader
        self.resolve_space = resolve_space
        self.private = private
        self.state: SyncState = state if state is not None else MemoryState()
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="ml-agent-syncer-"))
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.log = log
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._retry: dict[str, _Retry] = {}
        self._seen: dict[str, Signature] = {}
        self._warned: set[str] = set()
        self._busy: dict[str, int] = {}
        #: Clock time of the last cycle that saw a file change (run_forever's idle policy).
        self.last_change_at = clock()

    # -- one cycle -----------------------------------------------------------------------
    def cycle(self, *, final: bool = False) -> CycleReport:
        """Scan once and upload what changed; `final` ignores backoff (one more try each)."""
        report = CycleReport(space_id=self.resolve_space())
        projects = find_projects(self.trackio_dir)
        report.projects = len(projects)
        for gone in (self._retry.keys() | self._seen.keys()) - set(projects):
            # A deleted project has nothing left to publish (and must not keep us alive).
            self._retry.pop(gone, None)
            self._seen.pop(gone, None)
            self._busy.pop(gone, None)
        for project in projects:
            self._sync_project(project, report, final=final)
        return report

    def _sync_project(self, project: str, report: CycleReport, *, final: bool) -> None:
        try:
            sig = signature(self.trackio_dir, project)
        except NotRegular as exc:
            self._warn_once(f"skipping project {project!r}: {exc}")
            return
        if sig.db is None:
            return  # removed since the listing
        if self._seen.get(project) != sig:
            self._seen[project] = sig
            self.last_change_at = self.clock()
        space_id = report.space_id
        if space_id is None:
            return
        done = self.state.get(project)
        if done is not None and done.signature == sig and done.space_id == space_id:
            self._retry.pop(project, None)
            return
        retry = self._retry.get(project)
        if retry is not None and not final and self.clock() < retry.next_try:
            report.waiting.append(project)
            return
        report.changed.append(project)
        try:
            snap = snapshot_project(self.trackio_dir, project, self.work_dir / project)
            for warning in snap.warnings:
                self._warn_once(f"project {project!r}: {warning}")
            digest = snap.digest()
            if done is not None and done.space_id == space_id and done.digest == digest:
                # Files touched, content the same: remember the new look, skip the upload.
                self.state.put(project, Uploaded(sig, space_id, digest))
                self._retry.pop(project, None)
                report.same.append(project)
                return
            self.uploader.upload(snap, space_id, self.private)
        except SnapshotBusy as exc:
            # A writer in the way is normal: no backoff, but say so if it never settles.
            self._busy[project] = self._busy.get(project, 0) + 1
            if self._busy[project] == BUSY_WARN_AFTER:
                self.log(f"warning: project {project!r} has been busy for "
                         f"{BUSY_WARN_AFTER} cycles; still trying: {exc}")
            report.busy.append(project)
            return
        except Exception as exc:  # noqa: BLE001 - any failure is retried; the loop goes on
            self._failed(project, space_id, exc, report)
            return
        # The signature was taken before the snapshot: rows written meanwhile are in the
        # upload *and* change the files again, so at worst they are uploaded twice.
        self.state.put(project, Uploaded(sig, space_id, digest))
        self._retry.pop(project, None)
        self._busy.pop(project, None)
        report.uploaded.append(project)
        self.log(f"synced project {project!r} to Space {space_id}")

    def _failed(self, project: str, space_id: str, exc: Exception, report: CycleReport) -> None:
        retry = self._retry.setdefault(project, _Retry())
        retry.failures += 1
        delay = self.backoff_delay(retry.failures)
        retry.next_try = self.clock() + delay
        report.failed.append(project)
        what = "snapshot" if isinstance(exc, SnapshotError) else "upload"
        self.log(
            f"warning: {what} of project {project!r} to Space {space_id} failed "
            f"(attempt {retry.failures}); retrying in {delay:.0f} s: {exc}"
        )

    def backoff_delay(self, failures: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), capped, times uniform(0.5, 1)."""
        nominal = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures - 1, 30))
        return nominal * self.rng.uniform(0.5, 1.0)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.log(f"warning: {message}")

    # -- end of a run ----------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Projects that failed and still wait for a successful upload."""
        return sorted(self._retry)

    def final_sync(self, *, attempts: int = 3, busy_wait_s: float = 1.0) -> CycleReport:
        """The last sync of a run: every changed project now, ignoring backoff; failures
        retried after their backoff delay (busy ones after `busy_wait_s`), `attempts` times
        in all. Returns the last cycle's report."""
        report = self.cycle(final=True)
        for _ in range(attempts - 1):
            if not report.failed and not report.busy:
                break
            waits = [self._retry[p].next_try - self.clock() for p in report.failed]
            self.sleep(max([busy_wait_s if report.busy else 0.0, *waits]))
            report = self.cycle(final=True)
        for project in report.failed + report.busy:
            self.log(f"warning: project {project!r} was not published; its metrics remain "
                     f"on the trackio volume")
        return report

    def close(self) -> None:
        """Delete the private work folder (when the syncer made it)."""
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
