"""The sweep file docs/sweeps.md shows (sweeps/example.yaml) stays valid, and its dry run
says what the page says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_documented_sweep_dry_run_lists_four_runs_and_the_worst_case(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ml_agent", "sweep", "sweeps/example.yaml", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "ML_AGENT_HOME": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 run(s)" in proc.stdout
    assert "worst case of the whole sweep: $12.00" in proc.stdout
    page = (ROOT / "docs" / "sweeps.md").read_text()
    for line in proc.stdout.splitlines()[1:]:  # the first names the absolute base path
        assert line in page, line
