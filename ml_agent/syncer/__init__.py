"""The trackio syncer: publishes the agent's metrics from the trackio volume to an HF Space.

Safe by construction: reads the volume only, copies regular files only (never through a
link), uploads from its own consistent snapshot, publishes only inside the config's
namespace, privately unless the config says otherwise. See loop.py for one cycle.
"""

from ml_agent.syncer.loop import CycleReport, Syncer
from ml_agent.syncer.runner import SyncerThread, build_syncer, run_forever
from ml_agent.syncer.settings import SyncerSettings
from ml_agent.syncer.snapshot import Snapshot, SnapshotError
from ml_agent.syncer.state import JsonFileState, MemoryState, Uploaded
from ml_agent.syncer.target import SPACE_ID_FILE, SpaceResolver
from ml_agent.syncer.upload import TrackioUploader, Uploader, UploadError

__all__ = [
    "SPACE_ID_FILE",
    "CycleReport",
    "JsonFileState",
    "MemoryState",
    "Snapshot",
    "SnapshotError",
    "SpaceResolver",
    "Syncer",
    "SyncerSettings",
    "SyncerThread",
    "TrackioUploader",
    "UploadError",
    "Uploaded",
    "Uploader",
    "build_syncer",
    "run_forever",
]
