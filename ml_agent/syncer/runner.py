"""Ways to run the loop: `SyncerThread` (local supervisor) and `run_forever` (Modal function)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from ml_agent.syncer.loop import Syncer
from ml_agent.syncer.settings import SyncerSettings
from ml_agent.syncer.state import JsonFileState, MemoryState, SyncState
from ml_agent.syncer.target import SpaceResolver
from ml_agent.syncer.upload import TrackioUploader, Uploader


def build_syncer(
    settings: SyncerSettings,
    *,
    uploader: Uploader | None = None,
    state: SyncState | None = None,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Syncer:
    """A Syncer wired from settings: trackio.sync uploader, space_id rules, state file."""
    trackio_dir = Path(settings.trackio_dir)
    if state is None:
        state = JsonFileState(Path(settings.state_path)) if settings.state_path else MemoryState()
    return Syncer(
        trackio_dir,
        uploader or TrackioUploader(timeout_s=settings.upload_timeout_s),
        resolve_space=SpaceResolver(
            trackio_dir, space_id=settings.space_id, namespace=settings.namespace, log=log
        ),
        private=settings.private,
        state=state,
        clock=clock,
        sleep=sleep,
        log=log,
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=settings.backoff_max_s,
    )


class SyncerThread:
    """The loop every `interval_s` in a daemon thread; `stop()` ends it with a final sync.

    A cycle that raises (a bug, a vanished folder) is logged and the next one runs.
    """

    def __init__(self, syncer: Syncer, interval_s: float,
                 log: Callable[[str], None] | None = None) -> None:
        self.syncer = syncer
        self.interval_s = interval_s
        self.log = log or syncer.log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ml-agent-syncer", daemon=True)

    def start(self) -> SyncerThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                self._guarded(self.syncer.cycle)
                if self._stop.wait(self.interval_s):
                    break
            self._guarded(self.syncer.final_sync)
        finally:
            self.syncer.close()

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - keep syncing; the next cycle catches up
            self.log(f"warning: sync cycle failed: {exc!r}")

    def stop(self, timeout: float | None = None) -> bool:
        """Run the final sync and stop; True when the thread ended within `timeout`."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def run_forever(
    settings: SyncerSettings,
    *,
    before_scan: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    uploader: Uploader | None = None,
    state: SyncState | None = None,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Sync every `settings.interval_s` until told to stop, then a final sync; returns why.

    Lifetime: stops when `should_stop()` says so (checked after every cycle, e.g. "no
    sandbox of the app is live"), after `settings.idle_stop_s` with no file change and no
    upload pending, or after `settings.max_runtime_s`. `before_scan` runs before every scan
    (on Modal: `volume.reload()`; the syncer holds no volume file open between cycles).
    """
    syncer = build_syncer(settings, uploader=uploader, state=state, log=log, clock=clock,
                          sleep=sleep)
    started = clock()
    try:
        while True:
            if before_scan is not None:
                before_scan()
            syncer.cycle()
            now = clock()
            if should_stop is not None and should_stop():
                reason = "asked to stop"
                break
            idle = now - syncer.last_change_at
            if settings.idle_stop_s and idle >= settings.idle_stop_s and not syncer.pending():
                reason = f"idle for {idle:.0f} s"
                break
            if settings.max_runtime_s and now - started >= settings.max_runtime_s:
                reason = f"ran {now - started:.0f} s (max_runtime_s)"
                break
            sleep(settings.interval_s)
        if before_scan is not None:
            before_scan()
        syncer.final_sync()
    finally:
        syncer.close()
    log(f"syncer stopped: {reason}")
    return reason
