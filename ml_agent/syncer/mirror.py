"""An uploader that publishes to a local folder: what `ml-agent dashboard` shows.

The dashboard never opens the volume itself (trackio would migrate and checkpoint the
agent's live database, and serve media through any link planted there): the sync loop
copies snapshots into a private mirror, and trackio's dashboard reads the mirror.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from ml_agent.syncer.snapshot import Snapshot


class MirrorUploader:
    """Installs each snapshot into `root` (a TRACKIO_DIR for trackio's dashboard)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def upload(self, snapshot: Snapshot, space_id: str, private: bool) -> None:
        # Through SQLite, into the same file: a dashboard reading it sees the new rows.
        src = sqlite3.connect(snapshot.db_path)
        dest = sqlite3.connect(self.root / snapshot.db_path.name, timeout=30)
        try:
            src.backup(dest)
        finally:
            dest.close()
            src.close()
        media = snapshot.root / "media" / snapshot.project
        if media.is_dir():  # the snapshot's own copy: regular files only, no links
            shutil.copytree(media, self.root / "media" / snapshot.project, dirs_exist_ok=True)
