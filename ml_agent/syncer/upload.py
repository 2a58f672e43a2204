"""Uploaders: the real one runs `trackio.sync` in a subprocess with TRACKIO_DIR = a snapshot.

trackio reads TRACKIO_DIR once, at import, and `trackio.sync` writes to the folder it
syncs from (it checkpoints the database and records the Space in it): running it in a
fresh interpreter pointed at the syncer's private snapshot keeps the volume untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Protocol

from ml_agent.syncer.snapshot import Snapshot


class UploadError(Exception):
    """One upload failed; the syncer retries it later with backoff."""


class Uploader(Protocol):
    def upload(self, snapshot: Snapshot, space_id: str, private: bool) -> None:
        """Publish `snapshot` (a TRACKIO_DIR-shaped folder) to `space_id`; raise on failure."""
        ...


# trackio 0.43: sync(project, space_id, private, force, sdk) creates the Space (and its
# bucket) when missing with the given privacy, uploads the database and media found under
# TRACKIO_DIR, and waits until the Space serves them. `private` is ignored for a Space that
# already exists, so an existing private Space is never made public. stdin is /dev/null:
# on a 401 trackio would otherwise prompt for a login.
PUSH_CODE = """\
import sys
import trackio
project, space_id, private = sys.argv[1], sys.argv[2], sys.argv[3] == "private"
trackio.sync(project=project, space_id=space_id, private=private, force=True, sdk="gradio")
"""


class TrackioUploader:
    """Pushes a snapshot with `trackio.sync` in a child interpreter (HF token from HF_TOKEN)."""

    def __init__(
        self,
        *,
        timeout_s: float = 1200,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.python = python
        self.env = env

    def upload(self, snapshot: Snapshot, space_id: str, private: bool) -> None:
        base = dict(os.environ if self.env is None else self.env)
        env = {k: v for k, v in base.items() if not k.startswith("TRACKIO_")}
        env["TRACKIO_DIR"] = str(snapshot.root)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [self.python, "-c", PUSH_CODE, snapshot.project, space_id,
                "private" if private else "public"]
        try:
            proc = subprocess.run(
                argv, env=env, cwd=snapshot.root, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, errors="replace", timeout=self.timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise UploadError(f"trackio.sync took longer than {self.timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip()[-1500:]
            for secret in (env.get("HF_TOKEN"), env.get("HUGGING_FACE_HUB_TOKEN")):
                if secret:
                    tail = tail.replace(secret, "<hf token>")
            raise UploadError(f"trackio.sync exited with {proc.returncode}: {tail}")
