"""Seeding a virtualenv from this machine's installed distributions."""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess

from ml_agent.backends.local import seed
from tests.local.helpers import tiny_venv


def _names(dists) -> set[str]:
    return {d.metadata["Name"].lower().replace("_", "-") for d in dists}


def test_closure_follows_installed_dependencies_and_respects_pins_and_markers():
    available = seed.installed()
    trackio = metadata.version("trackio")
    names = _names(seed.closure([f"trackio=={trackio}"], available))
    assert {"trackio", "huggingface-hub", "numpy", "httpx"} <= names
    assert "pytest" not in names and "ml-agent" not in names
    assert seed.closure(["trackio==0.0.1"], available) == []  # pinned elsewhere: pip's job
    assert seed.closure(["numpy; python_version < '3'"], available) == []
    assert seed.closure(["./local/path", "https://x.test/a.whl"], available) == []


def test_copied_distributions_import_from_the_venv_with_their_scripts(tmp_path):
    venv = tiny_venv(tmp_path / "venv")
    dists = seed.closure(["charset-normalizer"], seed.installed())
    assert _names(dists) == {"charset-normalizer"}
    assert seed.copy_into(venv, dists) > 5
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import charset_normalizer as c; print(c.__file__)"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert where.startswith(str(venv))
    script = venv / "bin" / "normalizer"
    assert script.read_text().startswith(f"#!{venv}/bin/python")
    out = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "Charset-Normalizer" in out.stdout + out.stderr
