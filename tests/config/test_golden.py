"""Golden files: the exact text a user sees for each broken config in testdata/.

Each `testdata/<case>.yaml` sits beside `<case>.expected`, the `ml-agent validate` output
for it (run from testdata/). After an intended change of wording, regenerate and review
the diff:  ML_AGENT_REGEN=1 python -m pytest tests/config/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ml_agent.config import check
from ml_agent.config.messages import render
from ml_agent.config.tree import project_root

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.stem for p in TESTDATA.glob("*.yaml"))
SECRET = "golden-DECOY-secret-e41f"
# the environment ${env:...} sees, the same everywhere
ENV = {"ML_AGENT_GOLDEN_SET": "set", "ML_AGENT_GOLDEN_SECRET": SECRET}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(TESTDATA)
    config, diags = check(f"{case}.yaml", env=ENV)
    # resolved local paths are absolute: keep the golden independent of the clone's place
    got = render(diags, "text").replace(str(TESTDATA.resolve()), "<testdata>")
    # the project tree is the clone (or, without .git, testdata/): the same name for both
    got = got.replace(project_root(str(TESTDATA.resolve())), "<project>")
    expected = TESTDATA / f"{case}.expected"
    if os.environ.get("ML_AGENT_REGEN"):
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")
    assert SECRET.casefold() not in got.casefold()
    assert "root:" not in got
    assert (config is None) == bool(diags)
    assert (case == "valid") == (not diags)


def test_every_expected_file_has_its_case() -> None:
    stale = {p.stem for p in TESTDATA.glob("*.expected")} - set(CASES)
    assert not stale, f"remove these .expected files or restore their cases: {sorted(stale)}"
