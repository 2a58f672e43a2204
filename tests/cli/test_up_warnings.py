"""`up` says the backend's warnings from its check before it launches, and also when the
launch fails (a key file others can read is worth knowing about most when `up` fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml_agent.backends.local import LocalBackend, image
from tests.local.helpers import AGENT, seeded_plan


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An ML_AGENT_HOME whose proxy key file its group and other users can read."""
    home = tmp_path / "home"
    secrets = home / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    key = secrets / "anthropic-secret.env"
    key.write_text("ANTHROPIC_API_KEY=sk-ant-test-key\n")
    key.chmod(0o644)
    yield home
    backend = LocalBackend(home)
    for record in backend.ps():  # nothing left running
        backend.stop(record.run_id)


def up(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODAL_", "ANTHROPIC_", "CLAUDE"))}
    env.update(ML_AGENT_HOME=str(home), COLUMNS="400")
    return subprocess.run([sys.executable, "-m", "ml_agent", "up", "--detach", *args], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def warning(home: Path) -> str:
    return f"warning: {home / 'secrets' / 'anthropic-secret.env'} holds secrets and is accessible"


def test_a_failed_up_still_shows_the_key_file_warning(home):
    other = "3.12" if sys.version_info[:2] == (3, 11) else "3.11"
    out = up(home, "--set", f"image.python='{other}'")  # this machine's Python is another
    assert out.returncode == 1
    assert "image.python is" in out.stderr
    assert out.stderr.count(warning(home)) == 1, out.stderr


def test_the_warnings_come_before_the_launch_once(home):
    plan = seeded_plan(home, AGENT)  # a no-pip image, its venv in the cache: no build
    assert image.cached_venv(plan, home)
    out = up(home, "--set", f"image.layers=[{{file: {{src: {home / 'test_agent.py'}, "
                            "dest: /agent/test_agent.py}}]",
             "--set", "agent.entrypoint=/agent/test_agent.py")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count(warning(home)) == 1, out.stderr
    assert out.stderr.index(warning(home)) < out.stderr.index("starting the sandbox")
