"""`ml-agent up` with no config runs the shipped local.yaml: the newcomer's first command."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_up_without_a_config_is_the_local_backend_and_asks_for_the_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env["ML_AGENT_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-m", "ml_agent", "up", "--task", "hi"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    # the local proxy's key is the first thing a newcomer is told about, with the way out
    assert "no Anthropic API key for the local proxy" in proc.stderr
    assert "export ANTHROPIC_API_KEY" in proc.stderr
    assert str(tmp_path / "home" / "secrets" / "anthropic-secret.env") in proc.stderr
