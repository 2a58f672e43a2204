"""Build hook: ship the repository files ml-agent needs at run time inside the wheel.

The agent (`agent/`), its workspace (`.claude/`), the shipped configs (`configs/`) and the
editor schema (`schema/`) live next to the package, not in it. A wheel (`pip install .`,
pre-commit's hook install) gets a copy under `ml_agent/_bundle/`, laid out like the repo so
the configs' `../agent/...` paths still resolve; `ml_agent.contracts` picks the bundle when
it exists, else the checkout. Editable installs copy nothing: they use the checkout itself.
Everything else is in pyproject.toml; MANIFEST.in puts the same files in the sdist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLE = Path("ml_agent", "_bundle")
#: Repo folders shipped whole (less the exclusions below), as the checkout has them.
BUNDLED = ("agent", ".claude", "configs", "schema")
#: Never shipped: byte code, and Claude Code's per-user settings.
EXCLUDED_NAMES = {"__pycache__", "settings.local.json"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


def bundle_files(root: Path = HERE) -> list[Path]:
    """The files to bundle, relative to `root` (the checkout or the unpacked sdist)."""
    files = []
    for folder in BUNDLED:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or EXCLUDED_NAMES & set(rel.parts):
                continue
            if path.suffix not in EXCLUDED_SUFFIXES:
                files.append(rel)
    return files


class BuildPyWithBundle(build_py):
    """build_py that also copies the bundled repo files into build_lib/ml_agent/_bundle."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout; a copy would shadow it
        target = Path(self.build_lib) / BUNDLE
        shutil.rmtree(target, ignore_errors=True)  # no stale files from an earlier build
        files = bundle_files()
        missing = {"agent/protocol.py", "agent/agent.py", "configs/local.yaml"} - {
            rel.as_posix() for rel in files
        }
        if missing:
            raise SystemExit(f"ml-agent build: missing {sorted(missing)} under {HERE}")
        for rel in files:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(HERE / rel), str(dest))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        target = Path(self.build_lib) / BUNDLE
        return outputs + [str(target / rel) for rel in bundle_files()]


setup(cmdclass={"build_py": BuildPyWithBundle})
